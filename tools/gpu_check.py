#!/usr/bin/env python
"""GPU check: build the CUDA op, run the GPU tests and measure MDQE on one GPU, in minutes.

Three modes (tools/gpu_check.sh wraps them):

    python tools/gpu_check.py --prepare             # here, with network: fill .gpu_bundle/
    python tools/gpu_check.py OUTPUT_DIR            # on the GPU machine, offline
    python tools/gpu_check.py --dry-run OUTPUT_DIR  # on CPU, tiny sizes, no build: proves the wiring

--prepare gathers what a bare GPU machine with its own torch lacks (detectron2 and its pure-Python
dependencies, pycocotools) as cp312 manylinux x86_64 wheels plus detectron2's pinned sdist into a
git-ignored folder that travels with the working tree; it also records the commit.

The run installs those offline into a temporary target (only the distributions the machine lacks), builds
`mdqe._C` in place with the CUDA kernel for the GPU present (TORCH_CUDA_ARCH_LIST from its compute
capability), runs `pytest -m gpu`, times the deformable-attention op against the grid_sample reference,
times whole-video inference of R50_ovis_360 (60 frames 360x640) and swinl_ovis (60 frames 480x854) in
float32 and with AMP, and training iterations of R50_ovis_360 (2 clips of 4 frames), with peak GPU
memory. Weights are the models' own deterministic initialisation (torch.manual_seed(0)): speed and memory
do not depend on trained weights, except through how many queries pass the score threshold.
Every step runs in its own process with its own timeout, inside an overall budget; a failing step is
reported and the next one runs. The result is one Markdown table, printed and written to
OUTPUT_DIR/gpu_check.md, with OUTPUT_DIR/gpu_check.json (the same figures) and OUTPUT_DIR/gpu_check.log
(every step's output): three files, whatever the number of steps.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_BUNDLE = REPO / ".gpu_bundle"
TARGET_PYTHON = "3.12"
TARGET_PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
)
# What the bundle must provide (requirements.txt's pins, else the versions installed here), resolved with
# their own requirements for the target: detectron2 v0.6's install_requires and MDQE's requirements.txt
# minus GPU_PROVIDED. Left out of detectron2's list: tensorboard (on the GPU machine, and used only by
# detectron2's TensorboardXWriter), black (imported only inside LazyConfig.format), future and pydot
# (imported nowhere in its Python sources: caffe2 export). tabulate, cloudpickle and portalocker are on
# that machine's image too; they are a few kB, and installed only where missing.
BUNDLED = (
    "pycocotools",
    "fvcore",
    "iopath",
    "yacs",
    "omegaconf",
    "hydra-core",
    "termcolor",
    "tabulate",
    "cloudpickle",
    "portalocker",
    "tqdm",
    "pyyaml",
    "antlr4-python3-runtime",
)
# The modules whose absence calls for the bundle.
BUNDLED_MODULES = ("detectron2", "pycocotools", "fvcore", "iopath", "yacs", "omegaconf", "hydra", "termcolor")
# Published as sdists only, and pure Python: built into wheels here.
PURE_SDISTS = ("fvcore", "antlr4-python3-runtime")
# On the GPU machine already (its image; KINDS.md beside the device tool), and too large to carry.
GPU_PROVIDED = (
    "torch",
    "triton",
    "numpy",
    "scipy",
    "opencv-python-headless",
    "pillow",
    "matplotlib",
    "contourpy",
    "cycler",
    "fonttools",
    "kiwisolver",
    "pyparsing",
    "python-dateutil",
    "six",
    "packaging",
    "pytest",
    "typing-extensions",
    "setuptools",
)
STEP_SECONDS = {
    "env": 60,
    "install": 120,
    "build": 300,
    "tests": 180,
    "op": 90,
    "inference": 180,
    "training": 120,
}
BUDGET_SECONDS = 540


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pinned(names: tuple[str, ...]) -> list[str]:
    """`name==version` for each name: requirements.txt's pin, else the version installed here (the one the
    tests ran with), else the bare name."""
    from importlib import metadata

    pins = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s#;]+)", line.strip())
        if match:
            pins[_canonical(match.group(1))] = match.group(2)
    specs = []
    for name in names:
        version = pins.get(name)
        if version is None:
            try:
                version = metadata.version(name)
            except metadata.PackageNotFoundError:
                specs.append(name)
                continue
        specs.append(f"{name}=={version}")
    return specs


# ---------------------------------------------------------------------------------------------------
# --prepare (here, with a package index)
# ---------------------------------------------------------------------------------------------------


def _pip(*args: str) -> None:
    cmd = [sys.executable, "-m", "pip", *args]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def _wheel_requirements(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        text = zf.read(name).decode()
    return [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Requires-Dist:")]


def check_bundle_closure(wheels: list[Path], python_version: str) -> list[str]:
    """Requirements of the bundled wheels that neither the bundle nor GPU_PROVIDED satisfy (empty: closed).

    Markers are evaluated for CPython `python_version` on Linux x86_64, without extras.
    """
    from packaging.requirements import Requirement
    from packaging.utils import parse_wheel_filename

    versions = {}
    for wheel in wheels:
        name, version, _, _ = parse_wheel_filename(wheel.name)
        versions[_canonical(name)] = version
    env = {
        "python_version": python_version,
        "python_full_version": f"{python_version}.0",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": "x86_64",
        "os_name": "posix",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "extra": "",
    }
    problems = []
    for wheel in wheels:
        for line in _wheel_requirements(wheel):
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate(env):
                continue
            name = _canonical(req.name)
            if name in versions:
                if not req.specifier.contains(versions[name], prereleases=True):
                    problems.append(f"{wheel.name} needs {req}, bundle has {versions[name]}")
            elif name not in GPU_PROVIDED:
                problems.append(f"{wheel.name} needs {req}: neither bundled nor on the GPU machine")
    return problems


def prepare(bundle: Path, python_version: str) -> None:
    """Fill `bundle` with the wheels (for CPython `python_version`, manylinux x86_64), the detectron2 sdist
    and the commit; fails if the bundle's requirements are not closed over it plus GPU_PROVIDED."""
    if bundle.exists():
        shutil.rmtree(bundle)
    wheels = bundle / "wheels"
    wheels.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as tmp:
        # Pure-Python sdists: built here (the result is platform independent, checked below).
        _pip(
            "wheel",
            "--no-deps",
            "--no-binary",
            ",".join(PURE_SDISTS),
            "-w",
            str(wheels),
            *_pinned(PURE_SDISTS),
        )
        for built in wheels.glob("*.whl"):
            if not built.name.endswith("-none-any.whl"):
                sys.exit(
                    f"error: {built.name} is not a pure-Python wheel; it cannot travel to the GPU machine"
                )
        platform_args = [f"--platform={p}" for p in TARGET_PLATFORMS]
        _pip(
            "download",
            "--only-binary=:all:",
            f"--python-version={python_version}",
            "--implementation=cp",
            *platform_args,
            "--find-links",
            str(wheels),
            "-d",
            tmp,
            *_pinned(BUNDLED),
        )
        for wheel in Path(tmp).glob("*.whl"):
            name = _canonical(wheel.name.split("-")[0])
            if name not in GPU_PROVIDED and not (wheels / wheel.name).exists():
                shutil.copy(wheel, wheels / wheel.name)
    subprocess.run(
        [sys.executable, str(REPO / "tools" / "install_detectron2.py"), "--download-only", str(bundle)],
        check=True,
    )
    problems = check_bundle_closure(sorted(wheels.glob("*.whl")), python_version)
    if problems:
        sys.exit("error: the bundle is not closed:\n  " + "\n  ".join(problems))
    commit = _git("rev-parse", "HEAD")
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
    (bundle / "COMMIT").write_text(f"{commit}{' (with uncommitted changes)' if dirty else ''}\n")
    (bundle / "PYTHON").write_text(python_version + "\n")
    size = sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file())
    names = sorted(p.name for p in wheels.glob("*.whl"))
    print(f"prepared {bundle} ({size / 2**20:.1f} MiB): {len(names)} wheels + detectron2 sdist")
    for name in names:
        print("  ", name)


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


# ---------------------------------------------------------------------------------------------------
# Steps: each runs in its own process (`--step NAME`) and returns rows (label, value)
# ---------------------------------------------------------------------------------------------------

Rows = list[tuple[str, str]]
# The rows of each step, in table order; a step that fails or is skipped still shows all of its rows.
ROWS: dict[str, tuple[str, ...]] = {
    "env": (
        "GPU",
        "GPU driver",
        "CUDA (torch) / nvcc",
        "torch",
        "Python / numpy / Pillow",
        "commit",
    ),
    "install": ("offline install of the bundle",),
    "build": ("build mdqe._C (CUDA)", "mdqe._C has CUDA"),
    "tests": ("pytest -m gpu",),
    "op": tuple(
        f"ms_deform_attn {mode} {dtype}: {what}"
        for dtype in ("fp32", "fp16")
        for mode in ("forward", "forward+backward")
        for what in ("kernel ms", "grid_sample ms", "speed-up", "max abs diff vs reference")
    ),
    "inference": tuple(
        f"inference {model} {prec}: {what}"
        for model in ("R50_ovis_360", "swinl_ovis")
        for prec in ("fp32", "AMP")
        for what in ("FPS", "peak memory")
    ),
    "training": tuple(
        f"training R50_ovis_360 {prec}: {what}"
        for prec in ("fp32", "AMP")
        for what in ("s/iteration", "peak memory")
    ),
}


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


class _Peak:
    """Total peak memory of the enclosed block (weights included): torch's CUDA allocator peak, or on CPU
    the process's peak RSS (the benchmarks' mdqe.utils.memory.PeakRSS)."""

    def __init__(self, cuda: bool):
        self.cuda = cuda
        self.value = ""

    def __enter__(self) -> _Peak:
        import torch

        from mdqe.utils.memory import PeakRSS

        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        else:
            self.rss = PeakRSS().__enter__()
        return self

    def __exit__(self, *exc) -> None:
        import torch

        if self.cuda:
            torch.cuda.synchronize()
            self.value = f"{torch.cuda.max_memory_allocated() / 2**30:.2f} GiB"
        else:
            self.rss.__exit__(*exc)
            self.value = "n/a" if self.rss.peak_kib is None else f"{self.rss.peak_kib / 2**20:.2f} GiB RSS"


def _benchmark_module():
    """tools/benchmarks/benchmark.py (its synthetic video frames and training clips), loaded by path."""
    spec = importlib.util.spec_from_file_location(
        "mdqe_benchmark", REPO / "tools" / "benchmarks" / "benchmark.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def step_env(dry_run: bool, bundle: Path) -> Rows:
    import numpy
    import PIL
    import torch

    cuda = torch.cuda.is_available()
    gpu, driver = "none (CPU dry run)" if dry_run else "none", "n/a"
    if cuda:
        props = torch.cuda.get_device_properties(0)
        cap = torch.cuda.get_device_capability(0)
        gpu = f"{props.name}, {props.total_memory / 2**30:.0f} GiB, sm_{cap[0]}{cap[1]}"
        gpu += f", {props.multi_processor_count} SMs"
    smi = shutil.which("nvidia-smi")
    if smi:
        proc = subprocess.run(
            [smi, "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        driver = (
            proc.stdout.strip().splitlines()[0] if proc.returncode == 0 and proc.stdout.strip() else "n/a"
        )
    nvcc = shutil.which("nvcc") or (Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "bin" / "nvcc")
    nvcc_version = "not found"
    if Path(nvcc).exists():
        out = subprocess.run([str(nvcc), "--version"], capture_output=True, text=True, timeout=30).stdout
        match = re.search(r"release ([\d.]+)", out)
        nvcc_version = match.group(1) if match else "unknown"
    commit = _git("rev-parse", "HEAD")
    if commit:
        commit += (
            " (with uncommitted changes)" if _git("status", "--porcelain", "--untracked-files=no") else ""
        )
    elif (bundle / "COMMIT").exists():
        commit = (bundle / "COMMIT").read_text().strip() + " (recorded by --prepare)"
    return [
        ("GPU", gpu),
        ("GPU driver", driver),
        ("CUDA (torch) / nvcc", f"{torch.version.cuda} / {nvcc_version}"),
        ("torch", torch.__version__),
        ("Python / numpy / Pillow", f"{platform.python_version()} / {numpy.__version__} / {PIL.__version__}"),
        ("commit", commit or "unknown"),
    ]


def step_build(dry_run: bool, bundle: Path) -> Rows:
    import torch

    if dry_run:
        from mdqe.layers.ms_deform_attn import _C

        return [
            ("build mdqe._C (CUDA)", "skipped (dry run: uses the existing build)"),
            ("mdqe._C has CUDA", "not built" if _C is None else str(bool(_C.with_cuda()))),
        ]
    major, minor = torch.cuda.get_device_capability(0)
    env = {**os.environ, "FORCE_CUDA": "1", "TORCH_CUDA_ARCH_LIST": f"{major}.{minor}", "MAX_JOBS": "16"}
    if "CUDA_HOME" not in env and shutil.which("nvcc") is None:  # torch looks only there and on PATH
        found = sorted(Path("/usr/local").glob("cuda*/bin/nvcc"))
        if found:
            env["CUDA_HOME"] = str(found[-1].parents[1])
            env["PATH"] = f"{found[-1].parent}{os.pathsep}{env.get('PATH', '')}"
    start = time.perf_counter()
    cmd = [sys.executable, "setup.py", "build_ext", "--inplace"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    sys.stderr.write(proc.stdout[-20000:] + proc.stderr[-20000:])
    if proc.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` failed (exit {proc.returncode}) after {seconds:.0f} s")
    check = "import mdqe._C as C; print(C.with_cuda())"
    with_cuda = subprocess.run([sys.executable, "-c", check], cwd=REPO, capture_output=True, text=True)
    return [
        ("build mdqe._C (CUDA)", f"ok in {seconds:.0f} s (TORCH_CUDA_ARCH_LIST={major}.{minor})"),
        ("mdqe._C has CUDA", with_cuda.stdout.strip() or f"import failed: {with_cuda.stderr.strip()[-300:]}"),
    ]


def step_tests(dry_run: bool, bundle: Path) -> Rows:
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
    if dry_run:  # without CUDA every gpu test is skipped: collecting them proves they are found
        cmd.append("--collect-only")
    # Only the files that mark tests `gpu` (decorator, pytestmark or parametrize marks): collecting the
    # whole suite would import every test module.
    files = sorted(
        str(p.relative_to(REPO)) for p in (REPO / "tests").rglob("test_*.py") if "mark.gpu" in p.read_text()
    )
    if not files:
        raise RuntimeError("no test file under tests/ marks a test `gpu`")
    cmd += files
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    sys.stderr.write(proc.stdout[-20000:] + proc.stderr[-5000:])
    lines = [line for line in proc.stdout.strip().splitlines() if line.strip()]
    summary = lines[-1].strip("= ") if lines else f"no output (exit {proc.returncode})"
    if dry_run:
        summary = f"dry run, collected only: {summary}"
    if proc.returncode not in (0, 5) or (not dry_run and proc.returncode == 5):
        raise RuntimeError(f"pytest exit {proc.returncode}: {summary}")
    return [("pytest -m gpu", f"{summary} ({seconds:.0f} s)")]


def _op_inputs(levels, frames, heads, channels, points, dtype, device):
    import torch

    gen = torch.Generator().manual_seed(0)
    shapes = torch.tensor(levels, dtype=torch.int64)
    sizes = shapes.prod(1)
    starts = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    s, d = int(sizes.sum()), channels // heads
    value = torch.randn(frames, s, heads, d, generator=gen)
    locations = torch.rand(frames, s, heads, len(levels), points, 2, generator=gen) * 1.2 - 0.1
    weights = torch.randn(frames, s, heads, len(levels) * points, generator=gen).softmax(-1)
    weights = weights.view(frames, s, heads, len(levels), points)
    to = dict(device=device)
    return (
        value.to(dtype=dtype, **to),
        shapes.to(**to),
        starts.to(**to),
        locations.to(dtype=dtype, **to),
        weights.to(dtype=dtype, **to),
    )


def _median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 2) -> float:
    """Median wall time of `repeats` calls of `fn` after `warmup` calls, synchronising the GPU."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync()
        start = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def _time_op(inputs: tuple, grad, repeats: int) -> dict[tuple[str, str], float]:
    """Median seconds of (mode, implementation) for mode forward / forward+backward and implementation
    kernel / grid_sample, on `inputs` (value, spatial_shapes, level_start_index, locations, weights)."""
    import torch

    from mdqe.layers.ms_deform_attn import ms_deform_attn, ms_deform_attn_pytorch

    value, shapes, starts, locations, weights = inputs
    variants = {
        "kernel": lambda: ms_deform_attn(value, shapes, starts, locations, weights),
        "grid_sample": lambda: ms_deform_attn_pytorch(value, shapes, locations, weights),
    }
    seconds = {}
    for impl, run in variants.items():
        with torch.no_grad():
            seconds["forward", impl] = _median_seconds(run, repeats)
    for t in (value, locations, weights):
        t.requires_grad_(True)
    for impl, run in variants.items():
        seconds["forward+backward", impl] = _median_seconds(
            lambda run=run: torch.autograd.grad(run(), (value, locations, weights), grad), repeats
        )
    for t in (value, locations, weights):
        t.requires_grad_(False)
    return seconds


def step_op(dry_run: bool, bundle: Path) -> Rows:
    """ms_deform_attn at the R50 OVIS 360p encoder shape (4 frames, 360x640 padded to 384x640: levels
    48x80 ... 6x10, 8 heads, 4 points, 256 channels, one query per token): kernel vs grid_sample."""
    import torch

    from mdqe.layers.ms_deform_attn import _C, ms_deform_attn, ms_deform_attn_pytorch

    if _C is None:
        raise RuntimeError("mdqe._C is not built: the kernel cannot be timed")
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    levels = ((6, 10), (3, 5)) if dry_run else ((48, 80), (24, 40), (12, 20), (6, 10))
    frames, repeats = (1, 3) if dry_run else (4, 20)
    rows: Rows = []
    for name, dtype in (("fp32", torch.float32), ("fp16", torch.float16)):
        if not cuda and dtype == torch.float16:  # the CPU kernel is float32/float64 only
            rows += [(label, "skipped (CUDA only)") for label in ROWS["op"] if f" {name}:" in label]
            continue
        inputs = _op_inputs(levels, frames, 8, 256, 4, dtype, device)
        value, shapes, _, locations, weights = inputs
        with torch.no_grad():
            diff = (ms_deform_attn(*inputs) - ms_deform_attn_pytorch(value, shapes, locations, weights)).abs()
        grad = torch.randn(frames, locations.shape[1], 256, device=device, dtype=dtype)
        seconds = _time_op(inputs, grad, repeats)
        for mode in ("forward", "forward+backward"):
            kernel, reference = seconds[mode, "kernel"], seconds[mode, "grid_sample"]
            prefix = f"ms_deform_attn {mode} {name}: "
            rows += [
                (prefix + "kernel ms", f"{kernel * 1e3:.3f}"),
                (prefix + "grid_sample ms", f"{reference * 1e3:.3f}"),
                (prefix + "speed-up", f"{reference / kernel:.1f}x"),
                (
                    prefix + "max abs diff vs reference",
                    f"{diff.max().item():.2e}" if mode == "forward" else "-",
                ),
            ]
    return rows


# The dry run keeps each config's structure and input pipeline but shrinks the transformer and Swin-L's
# widths and depths and freezes the ResNet (whose weight gradients dominate a CPU training iteration),
# so that it takes CPU seconds.
DRY_RUN_OPTS = (
    *("MODEL.MDQE.ENC_LAYERS", 1, "MODEL.MDQE.DEC_LAYERS", 1, "MODEL.MDQE.NUM_OBJECT_QUERIES", 16),
    *("MODEL.BACKBONE.FREEZE_AT", 5),
)
DRY_RUN_SWIN_OPTS = ("MODEL.SWIN.EMBED_DIM", 48, "MODEL.SWIN.DEPTHS", [2, 2, 2, 2])


def _build_model(config: str, cuda: bool, dry_run: bool):
    """The MDQE of configs/`config`.yaml with its own initialisation (seed 0), on the GPU if there is one."""
    import torch
    from detectron2.config import get_cfg

    from mdqe.config import add_mdqe_config
    from mdqe.modeling import MDQE

    cfg = get_cfg()
    add_mdqe_config(cfg)
    cfg.merge_from_file(str(REPO / "configs" / f"{config}.yaml"))
    cfg.MODEL.DEVICE = "cuda" if cuda else "cpu"
    cfg.MODEL.WEIGHTS = ""
    if dry_run:
        cfg.merge_from_list(list(DRY_RUN_OPTS) + (list(DRY_RUN_SWIN_OPTS) if "swin" in config else []))
    torch.manual_seed(0)
    return cfg, MDQE(cfg).to(cfg.MODEL.DEVICE)


def _autocast(cuda: bool, enabled: bool):
    import torch

    return torch.autocast(
        "cuda" if cuda else "cpu", dtype=torch.float16 if cuda else torch.bfloat16, enabled=enabled
    )


def _op_note(cuda: bool) -> str:
    """'' when the model's deformable attention runs on mdqe._C for this device, else a warning."""
    from mdqe.layers.ms_deform_attn import _C

    if _C is None or (cuda and not _C.with_cuda()):
        return "; WARNING: deformable attention on the grid_sample fallback (mdqe._C without this device)"
    return ""


def step_inference(dry_run: bool, bundle: Path) -> Rows:
    """Whole-video inference: R50_ovis_360 on 60 frames 360x640, swinl_ovis on 60 frames 480x854."""
    import torch

    cuda = torch.cuda.is_available()
    frames = _benchmark_module().synthetic_frames
    runs = (("R50_ovis_360", 360, 640), ("swinl_ovis", 480, 854))
    num_frames = 4 if dry_run else 60
    rows: Rows = []
    for config, height, width in runs:
        if dry_run:
            height, width = 32, 64
        _, model = _build_model(config, cuda, dry_run)
        model.eval()
        video = {"image": frames(num_frames, height, width), "height": height, "width": width}
        for prec, amp in (("fp32", False), ("AMP", True)):
            with torch.no_grad(), _autocast(cuda, amp):
                if not dry_run:  # warm-up: cuDNN autotuning, allocator growth, lazy initialisation
                    model([{"image": frames(4, height, width, seed=1), "height": height, "width": width}])
                with _Peak(cuda) as peak:
                    start = time.perf_counter()
                    out = model([video])
                    _sync()
                    seconds = time.perf_counter() - start
            prefix = f"inference {config} {prec}: "
            size = (
                f"{num_frames} frames {height}x{width}, {len(out['pred_scores'])} instances{_op_note(cuda)}"
            )
            rows += [
                (prefix + "FPS", f"{num_frames / seconds:.1f} ({size})"),
                (prefix + "peak memory", peak.value),
            ]
        del model
        if cuda:
            torch.cuda.empty_cache()
    return rows


def _time_training(
    model, batch: list[dict], cuda: bool, amp: bool, lr: float, iters: int, warmup: int
) -> tuple[float, str]:
    """Median seconds of `iters` training iterations (forward, backward, AdamW step; a grad scaler with
    AMP on CUDA) after `warmup` ones, and the peak memory over all of them."""
    import torch

    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    scaler = torch.amp.GradScaler("cuda", enabled=amp and cuda)

    def iteration() -> None:
        with _autocast(cuda, amp):
            losses = model(batch)
        scaler.scale(sum(losses.values())).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    with _Peak(cuda) as peak:
        seconds = _median_seconds(iteration, iters, warmup)
    return seconds, peak.value


def step_training(dry_run: bool, bundle: Path) -> Rows:
    """Training iterations of R50_ovis_360 at the original's per-GPU batch: 2 clips of 4 frames (IMS_PER_BATCH
    16 on 8 GPUs), 384x640 (a 0.8 crop of a clip resized to 480x800), AdamW step included."""
    import torch

    cuda = torch.cuda.is_available()
    cfg, model = _build_model("R50_ovis_360", cuda, dry_run)
    model.train()
    height, width = (32, 64) if dry_run else (384, 640)
    num_frames, num_classes = cfg.INPUT.SAMPLING_FRAME_NUM, cfg.MODEL.MDQE.NUM_CLASSES
    clip = _benchmark_module().synthetic_clip(num_frames, height, width, num_classes)
    batch = [clip, clip]
    rows: Rows = []
    for prec, amp in (("fp32", False), ("AMP", True)):
        iters, warmup = (1, 0) if dry_run else (5, 2)
        seconds, peak = _time_training(model, batch, cuda, amp, cfg.SOLVER.BASE_LR, iters, warmup)
        prefix = f"training R50_ovis_360 {prec}: "
        size = f"2 clips x {num_frames} frames {height}x{width}{_op_note(cuda)}"
        rows += [(prefix + "s/iteration", f"{seconds:.3f} ({size})"), (prefix + "peak memory", peak)]
    return rows


# In the order they run: the measurements before the tests, so that a slow build leaves the figures
# BENCHMARKS.md needs inside the budget (the table keeps ROWS's order).
STEPS: dict[str, Callable[[bool, Path], Rows]] = {
    "env": step_env,
    "build": step_build,
    "op": step_op,
    "inference": step_inference,
    "training": step_training,
    "tests": step_tests,
}


# ---------------------------------------------------------------------------------------------------
# Orchestration
# ---------------------------------------------------------------------------------------------------


def bundle_fits_this_python(bundle: Path) -> str:
    """'' if every wheel of `bundle` installs on this interpreter, else why not."""
    from packaging.tags import sys_tags
    from packaging.utils import parse_wheel_filename

    wheels = sorted((bundle / "wheels").glob("*.whl"))
    if not wheels or not (bundle / "pb1-detectron2-0.6.tar.gz").exists():
        return f"no prepared bundle at {bundle} (run tools/gpu_check.sh --prepare)"
    supported = set(sys_tags())
    for wheel in wheels:
        if not set(parse_wheel_filename(wheel.name)[3]) & supported:
            return f"{wheel.name} does not install on this Python {platform.python_version()}"
    return ""


def unmet_requirements(site: Path) -> list[str]:
    """Requirements of the distributions installed in `site` that the environment (`site` first, then
    sys.path) does not meet, markers evaluated for this interpreter without extras."""
    from importlib import metadata

    from packaging.requirements import Requirement

    search = [str(site), *sys.path]
    versions = {}
    for dist in metadata.distributions(path=search):
        versions.setdefault(_canonical(dist.metadata["Name"]), dist.version)
    problems = []
    for dist in metadata.distributions(path=[str(site)]):
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            found = versions.get(_canonical(req.name))
            if found is None or not req.specifier.contains(found, prereleases=True):
                problems.append(f"{dist.metadata['Name']} needs {req}, found {found or 'none'}")
    return problems


def install_bundle(bundle: Path, site: Path, timeout: float) -> Rows:
    """pip-install (offline, --no-deps) the bundle's wheels of distributions this interpreter lacks into
    `site`, and detectron2 from the bundle's sdist; then check every requirement of what was installed."""
    from importlib import metadata

    from packaging.utils import parse_wheel_filename

    wheels = sorted((bundle / "wheels").glob("*.whl"))
    needed = []
    for wheel in wheels:
        name = parse_wheel_filename(wheel.name)[0]
        try:
            metadata.version(name)
        except metadata.PackageNotFoundError:
            needed.append(wheel)
    start = time.perf_counter()
    if needed:
        cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile"]
        cmd += ["--no-cache-dir", "--target", str(site), *map(str, needed)]
        subprocess.run(cmd, check=True, timeout=timeout)
    cmd = [sys.executable, str(REPO / "tools" / "install_detectron2.py"), "--target", str(site)]
    cmd += ["--sdist", str(bundle / "pb1-detectron2-0.6.tar.gz")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"installing detectron2 from the bundle failed: {proc.stderr.strip()[-1500:]}")
    check = (
        f"import sys; sys.path.insert(0, {str(site)!r}); import detectron2, fvcore, pycocotools.mask, mdqe"
    )
    proc = subprocess.run(
        [sys.executable, "-c", check], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )
    if proc.returncode != 0:
        raise RuntimeError(f"imports fail after the offline install: {proc.stderr.strip()[-1500:]}")
    names = ", ".join(parse_wheel_filename(w.name)[0] for w in needed) or "none"
    seconds = time.perf_counter() - start
    unmet = unmet_requirements(site)
    status = "requirements met" if not unmet else f"WARNING, unmet: {'; '.join(unmet)}"
    return [("offline install of the bundle", f"ok in {seconds:.0f} s: detectron2 0.6 + {names}; {status}")]


def _run_step(
    name: str, args: argparse.Namespace, env: dict, work: Path, deadline: float
) -> tuple[Rows, str]:
    """Run step `name` in a subprocess (its rows to work/step_NAME.json, its output to work/step_NAME.log);
    returns its rows and '' or the reason it failed."""
    out_json, log = work / f"step_{name}.json", work / f"step_{name}.log"
    timeout = min(STEP_SECONDS[name], deadline - time.monotonic())
    if timeout < 10:
        return [], "not run: out of the overall time budget"
    cmd = [sys.executable, __file__, "--step", name, "--bundle", str(args.bundle), str(work)]
    cmd += ["--dry-run"] if args.dry_run else []
    start = time.monotonic()
    with log.open("w") as f:
        try:
            proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=timeout)
        except subprocess.TimeoutExpired:
            return [], f"timed out after {timeout:.0f} s (gpu_check.log)"
    seconds = time.monotonic() - start
    if proc.returncode != 0 or not out_json.exists():
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
        last = lines[-1][:300] if lines else ""
        return [], f"failed (exit {proc.returncode}) after {seconds:.0f} s: {last} (gpu_check.log)"
    return [tuple(row) for row in json.loads(out_json.read_text())], ""


def render_table(results: dict[str, tuple[Rows, str]], dry_run: bool) -> str:
    """Markdown table with every row of ROWS; failed or skipped steps say why in each of their rows."""
    title = "GPU check (dry run: CPU, tiny sizes; no figure is a GPU figure)" if dry_run else "GPU check"
    lines = [f"### {title}", "", "| step | item | value |", "| --- | --- | --- |"]
    for step, labels in ROWS.items():
        rows, error = results.get(step, ([], "not run"))
        values = dict(rows)
        for label in labels:
            value = values.get(label, f"FAILED: {error}" if error else "missing")
            value = " ".join(value.split()).replace("|", "/")  # one table cell: no newlines, no pipes
            lines.append(f"| {step} | {label} | {value} |")
    return "\n".join(lines) + "\n"


def _install(args: argparse.Namespace, site: Path) -> tuple[tuple[Rows, str], bool]:
    """The install step's result, and whether `site` now holds packages the steps need."""
    label = "offline install of the bundle"
    lacking = [m for m in BUNDLED_MODULES if importlib.util.find_spec(m) is None]
    why_not = bundle_fits_this_python(args.bundle)
    if not lacking:
        return ([(label, "not needed: all already importable")], ""), False
    if why_not:
        if args.dry_run:
            return ([(label, f"skipped (dry run): {why_not}")], ""), False
        return ([], f"{', '.join(lacking)} missing and {why_not}"), False
    try:
        return (install_bundle(args.bundle, site, STEP_SECONDS["install"]), ""), True
    except (subprocess.SubprocessError, RuntimeError) as e:
        return ([], f"failed: ...{str(e)[-400:]}"), True


def run_all(args: argparse.Namespace) -> int:
    """Every step in order, within the budget; writes OUTPUT/gpu_check.md, .json and .log (three files)."""
    args.output.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + args.budget
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    results: dict[str, tuple[Rows, str]] = {}
    with tempfile.TemporaryDirectory(prefix="mdqe-gpu-check-") as tmp:
        site, work = Path(tmp) / "site", Path(tmp) / "work"
        work.mkdir()
        results["install"], installed = _install(args, site)
        if installed:
            env["PYTHONPATH"] = os.pathsep.join(
                filter(None, [str(site), str(REPO), os.environ.get("PYTHONPATH")])
            )
        for name in STEPS:
            print(f"gpu_check: step {name} ...", flush=True)
            results[name] = _run_step(name, args, env, work, deadline)
            if results[name][1]:
                print(f"gpu_check: step {name} {results[name][1]}", flush=True)
        with (args.output / "gpu_check.log").open("w") as log:
            for name in STEPS:
                step_log = work / f"step_{name}.log"
                if step_log.exists():
                    log.write(f"===== step {name} =====\n{step_log.read_text(errors='replace')}\n")
    table = render_table(results, args.dry_run)
    (args.output / "gpu_check.md").write_text(table)
    summary = {k: {"rows": v[0], "error": v[1]} for k, v in results.items()}
    (args.output / "gpu_check.json").write_text(json.dumps(summary, indent=1))
    print(table)
    return 1 if any(error for _, error in results.values()) else 0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("output", nargs="?", type=Path, help="folder for gpu_check.md, .json and .log")
    parser.add_argument(
        "--prepare", action="store_true", help="gather the offline bundle (needs pip's index)"
    )
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes, no build")
    parser.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE)
    parser.add_argument("--python-version", default=TARGET_PYTHON, help="--prepare: Python of the wheels")
    parser.add_argument("--budget", type=float, default=BUDGET_SECONDS, help="seconds for all steps")
    parser.add_argument("--step", choices=list(STEPS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.prepare:
        prepare(args.bundle.resolve(), args.python_version)
        return
    if args.output is None:
        parser.error("OUTPUT_DIR is required (except with --prepare)")
    args.output = args.output.resolve()
    args.bundle = args.bundle.resolve()
    if args.step is not None:
        sys.path.insert(0, str(REPO))
        if args.step != "env":  # the environment is reported even when mdqe does not import
            import mdqe  # noqa: F401  (the Pillow shim before detectron2.data; the registrations)

        rows = STEPS[args.step](args.dry_run, args.bundle)
        (args.output / f"step_{args.step}.json").write_text(json.dumps(rows))
        return
    sys.exit(run_all(args))


if __name__ == "__main__":
    main()
