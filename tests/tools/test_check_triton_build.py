"""tools/check_triton_build.py: compiles the Triton kernels for a GPU target on this machine without a GPU,
and refuses to run under Triton's interpreter. CI runs the full check (sm_80 and sm_90, every dtype and head
dim) in .ci/run; this test runs one target."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "check_triton_build.py"


def _run(*args: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"} | env
    return subprocess.run(
        [sys.executable, str(TOOL), *args], capture_output=True, text=True, timeout=300, cwd=ROOT, env=environ
    )


def test_compiles_forward_and_backward_for_sm90_to_cubin():
    result = _run("--archs", "90", "--dtypes", "bfloat16", "--head-dims", "24")
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| sm_90 |")]
    assert [row.split(" | ")[1] for row in rows] == ["forward", "backward"]
    assert all(int(row.split(" | ")[5]) > 10_000 for row in rows)  # cubin bytes
    assert "5 problem sizes bind to one kernel" in result.stdout


def test_refuses_to_run_under_the_interpreter():
    result = _run("--archs", "90", TRITON_INTERPRET="1")
    assert result.returncode == 2
    assert result.stdout.strip() == (
        "check_triton_build: unset TRITON_INTERPRET: the kernels must be compiled, not interpreted"
    )


def test_unknown_dtype_is_one_clear_line():
    result = _run("--dtypes", "float8")
    assert result.returncode == 2
    assert "unknown dtype(s) ['float8']" in result.stdout
