"""tools/gpu_check.py: the dry run produces the whole table; the bundle checks find what is missing."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tools" / "gpu_check.py"

# Every figure issue 15 asks for, independently of the script's own row list.
EXPECTED_ROWS = [
    "GPU",
    "GPU driver",
    "CUDA (torch) / nvcc",
    "torch",
    "Python / numpy / Pillow",
    "commit",
    "offline install of the bundle",
    "build mdqe._C (CUDA)",
    "mdqe._C has CUDA",
    "pytest -m gpu",
    *(
        f"ms_deform_attn {mode} {dtype}: {what}"
        for dtype in ("fp32", "fp16")
        for mode in ("forward", "forward+backward")
        for what in ("kernel ms", "grid_sample ms", "speed-up", "max abs diff vs reference")
    ),
    *(
        f"inference {model} {prec}: {what}"
        for model in ("R50_ovis_360", "swinl_ovis")
        for prec in ("fp32", "AMP")
        for what in ("FPS", "peak memory")
    ),
    *(
        f"training R50_ovis_360 {prec}: {what}"
        for prec in ("fp32", "AMP")
        for what in ("s/iteration", "peak memory")
    ),
]


def _load_gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cells(table: str) -> dict[str, str]:
    """item -> value of the table's rows `| step | item | value |`."""
    cells = {}
    for line in table.splitlines():
        match = re.match(r"^\| (\w+) \| ([^|]+) \| ([^|]*) \|$", line)
        if match and match.group(1) != "step" and not line.startswith("| ---"):
            assert match.group(2) not in cells, f"row {match.group(2)!r} appears twice"
            cells[match.group(2)] = match.group(3)
    return cells


@pytest.mark.slow
def test_dry_run_writes_the_table_with_every_row_and_figure(tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, str(SCRIPT), "--dry-run", str(out), "--bundle", str(tmp_path / "no_bundle")]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = (out / "gpu_check.md").read_text()
    assert table in proc.stdout
    cells = _cells(table)
    assert list(cells) == EXPECTED_ROWS
    number = r"^\d+(\.\d+)?"
    for key, value in cells.items():
        assert "FAILED" not in value and value != "missing", f"{key}: {value}"
        if key.startswith("ms_deform_attn") and " fp32: " in key:
            assert re.match(number, value) or value == "-", f"{key}: {value}"
        if key.startswith("ms_deform_attn") and " fp16: " in key:
            assert value == "skipped (CUDA only)", f"{key}: {value}"
        if key.endswith((": FPS", ": s/iteration")):
            assert re.match(number, value), f"{key}: {value}"
        if key.endswith(": peak memory"):
            assert re.match(r"^\d+\.\d\d GiB", value), f"{key}: {value}"
    assert float(cells["ms_deform_attn forward fp32: max abs diff vs reference"]) < 1e-4
    assert cells["build mdqe._C (CUDA)"].startswith("skipped (dry run")
    assert re.search(r"collected only: \d+/\d+ tests collected", cells["pytest -m gpu"])


def test_a_failed_step_says_why_in_each_of_its_rows():
    gpu_check = _load_gpu_check()
    results = {"env": ([("GPU", "X")], ""), "training": ([], "timed out after 120 s")}
    cells = _cells(gpu_check.render_table(results, dry_run=False))
    assert cells["GPU"] == "X"
    training = [v for k, v in cells.items() if k.startswith("training ")]
    assert len(training) == 4 and all(v == "FAILED: timed out after 120 s" for v in training)
    assert cells["torch"] == "missing" and cells["pytest -m gpu"] == "FAILED: not run"


def _fake_wheel(
    folder: Path, name: str, version: str, requires: list[str], tag: str = "py3-none-any"
) -> Path:
    path = folder / f"{name}-{version}-{tag}.whl"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    metadata += "".join(f"Requires-Dist: {r}\n" for r in requires)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{name}-{version}.dist-info/METADATA", metadata)
    return path


def test_bundle_closure_reports_missing_and_conflicting_requirements(tmp_path):
    gpu_check = _load_gpu_check()
    wheels = [
        _fake_wheel(tmp_path, "alpha", "1.0", ["beta>=2", "numpy", "gamma; python_version < '3.8'"]),
        _fake_wheel(tmp_path, "beta", "1.5", ["delta", "epsilon; extra == 'dev'"]),
    ]
    problems = gpu_check.check_bundle_closure(wheels, "3.12")
    assert len(problems) == 2, problems
    assert "needs beta>=2, bundle has 1.5" in problems[0]
    assert "needs delta: neither bundled nor on the GPU machine" in problems[1]
    assert gpu_check.check_bundle_closure(wheels[1:2], "3.12") == [problems[1]]


def test_a_bundle_for_another_python_is_not_installed(tmp_path):
    gpu_check = _load_gpu_check()
    (tmp_path / "wheels").mkdir()
    assert "no prepared bundle" in gpu_check.bundle_fits_this_python(tmp_path)
    (tmp_path / "pb1-detectron2-0.6.tar.gz").write_bytes(b"")
    _fake_wheel(tmp_path / "wheels", "alpha", "1.0", [])
    assert gpu_check.bundle_fits_this_python(tmp_path) == ""
    _fake_wheel(tmp_path / "wheels", "beta", "1.0", [], tag="cp27-cp27mu-manylinux1_x86_64")
    assert "does not install on this Python" in gpu_check.bundle_fits_this_python(tmp_path)


def test_unmet_requirements_of_an_installed_target(tmp_path):
    gpu_check = _load_gpu_check()
    info = tmp_path / "alpha-1.0.dist-info"
    info.mkdir()
    requires = ["pytest>=1", "pytest<1", "no-such-distribution-here", "gamma; python_version < '3'"]
    lines = [
        "Metadata-Version: 2.1",
        "Name: alpha",
        "Version: 1.0",
        *(f"Requires-Dist: {r}" for r in requires),
    ]
    (info / "METADATA").write_text("\n".join(lines) + "\n")
    problems = gpu_check.unmet_requirements(tmp_path)
    assert len(problems) == 2, problems
    assert problems[0].startswith("alpha needs pytest<1, found ")
    assert problems[1] == "alpha needs no-such-distribution-here, found none"
