"""Steps of the GPU check about the machine and the build: the environment, building mdqe._C with the
CUDA kernel, and `pytest -m gpu`.

`env_step` runs with MDQE_LIGHT_IMPORT=1 and imports only torch, numpy and Pillow (and nothing of mdqe that
needs detectron2), so that the environment is reported even when mdqe does not import.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from .op_shapes import op_shapes
from .repo import REPO, commit_description
from .steps import Rows, StepContext

__all__ = ["build_step", "env_step", "tests_step"]


def _driver_version() -> str:
    smi = shutil.which("nvidia-smi")
    if not smi:
        return "n/a"
    proc = subprocess.run(
        [smi, "--query-gpu=driver_version", "--format=csv,noheader"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    lines = proc.stdout.strip().splitlines()
    return lines[0] if proc.returncode == 0 and lines else "n/a"


def _nvcc_version() -> str:
    nvcc = shutil.which("nvcc") or (Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "bin" / "nvcc")
    if not Path(nvcc).exists():
        return "not found"
    out = subprocess.run([str(nvcc), "--version"], capture_output=True, text=True, timeout=30).stdout
    match = re.search(r"release ([\d.]+)", out)
    return match.group(1) if match else "unknown"


def env_step(ctx: StepContext) -> Iterator[Rows]:
    """The GPU, driver, CUDA, torch, Triton, Python and library versions, the commit, and the op's
    shapes (`op_shapes`)."""
    import numpy
    import PIL
    import torch

    gpu = "none (CPU dry run)" if ctx.dry_run else "none"
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        major, minor = torch.cuda.get_device_capability(0)
        gpu = f"{props.name}, {props.total_memory / 2**30:.0f} GiB, sm_{major}{minor}"
        gpu += f", {props.multi_processor_count} SMs"
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = "not installed"
    yield [
        ("GPU", gpu),
        ("GPU driver", _driver_version()),
        ("CUDA (torch) / nvcc", f"{torch.version.cuda or 'none'} / {_nvcc_version()}"),
        ("torch / triton", f"{torch.__version__} / {triton_version}"),
        ("Python / numpy / Pillow", f"{platform.python_version()} / {numpy.__version__} / {PIL.__version__}"),
        ("commit", commit_description() or "unknown"),
        ("ms_deform_attn shapes", " / ".join(shape.describe() for shape in op_shapes(ctx.dry_run))),
    ]


def _cuda_build_env(arch: str) -> dict[str, str]:
    """The build's environment: the CUDA kernel forced, for `arch` only, with nvcc found where torch
    looks (CUDA_HOME, PATH) or under /usr/local/cuda*."""
    env = {
        **os.environ,
        "FORCE_CUDA": "1",
        "TORCH_CUDA_ARCH_LIST": arch,
        "MAX_JOBS": str(os.cpu_count() or 4),
    }
    if "CUDA_HOME" not in env and shutil.which("nvcc") is None:
        found = sorted(Path("/usr/local").glob("cuda*/bin/nvcc"))
        if found:
            env["CUDA_HOME"] = str(found[-1].parents[1])
            env["PATH"] = f"{found[-1].parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def build_step(ctx: StepContext) -> Iterator[Rows]:
    """Build mdqe._C in place with the CUDA kernel for the GPU present (TORCH_CUDA_ARCH_LIST from its
    compute capability). The dry run reports the existing build."""
    import torch

    if ctx.dry_run:
        from mdqe.layers import msda_op

        built = "not built" if msda_op.EXTENSION is None else str(msda_op.extension_has_cuda())
        yield [
            ("build mdqe._C (CUDA)", "skipped (dry run: uses the existing build)"),
            ("mdqe._C has CUDA", built),
        ]
        return
    major, minor = torch.cuda.get_device_capability(0)
    start = time.perf_counter()
    cmd = [sys.executable, "setup.py", "build_ext", "--inplace"]
    proc = subprocess.run(
        cmd, cwd=REPO, env=_cuda_build_env(f"{major}.{minor}"), capture_output=True, text=True
    )
    seconds = time.perf_counter() - start
    sys.stderr.write(proc.stdout[-20000:] + proc.stderr[-20000:])
    if proc.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` failed (exit {proc.returncode}) after {seconds:.0f} s")
    check = "import mdqe._C as C; print(C.with_cuda())"
    with_cuda = subprocess.run([sys.executable, "-c", check], cwd=REPO, capture_output=True, text=True)
    yield [
        ("build mdqe._C (CUDA)", f"ok in {seconds:.0f} s (TORCH_CUDA_ARCH_LIST={major}.{minor})"),
        ("mdqe._C has CUDA", with_cuda.stdout.strip() or f"import failed: {with_cuda.stderr.strip()[-300:]}"),
    ]


def gpu_test_files() -> list[str]:
    """The test files (relative to the checkout) that mark tests `gpu` (decorator, pytestmark or
    parametrize marks): collecting only those spares importing every test module."""
    tests = REPO / "tests"
    return sorted(str(p.relative_to(REPO)) for p in tests.rglob("test_*.py") if "mark.gpu" in p.read_text())


def tests_step(ctx: StepContext) -> Iterator[Rows]:
    """`pytest -m gpu`; the dry run only collects them (without CUDA every gpu test is skipped)."""
    files = gpu_test_files()
    if not files:
        raise RuntimeError("no test file under tests/ marks a test `gpu`")
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "mdqe.utils.compat",
        "-p",
        "no:cacheprovider",
        "-q",
        "-m",
        "gpu",
    ]
    cmd += ["--collect-only"] if ctx.dry_run else []
    start = time.perf_counter()
    proc = subprocess.run([*cmd, *files], cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    sys.stderr.write(proc.stdout[-20000:] + proc.stderr[-5000:])
    lines = [line for line in proc.stdout.strip().splitlines() if line.strip()]
    summary = lines[-1].strip("= ") if lines else f"no output (exit {proc.returncode})"
    if ctx.dry_run:
        summary = f"dry run, collected only: {summary}"
    # exit 5: nothing collected, which only the dry run's deselection may explain
    if proc.returncode not in (0, 5) or (not ctx.dry_run and proc.returncode == 5):
        raise RuntimeError(f"pytest exit {proc.returncode}: {summary}")
    yield [("pytest -m gpu", f"{summary} ({seconds:.0f} s)")]
