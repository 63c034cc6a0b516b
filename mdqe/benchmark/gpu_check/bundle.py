"""The offline bundle: what a bare GPU machine with its own torch lacks, gathered here and installed there.

`prepare` (here, with pip's index) fills a git-ignored folder that travels with the working tree: CPython
manylinux x86_64 wheels of detectron2's pure-Python dependencies and pycocotools, detectron2's pinned
sdist, and the commit. `install_bundle` (there, offline) installs into a temporary target only the
distributions that machine lacks, then detectron2 from the sdist (tools/install_detectron2.py).
"""

from __future__ import annotations

import logging
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from .repo import REPO, commit_description

__all__ = [
    "BUNDLED_MODULES",
    "DEFAULT_BUNDLE",
    "GPU_PROVIDED",
    "TARGET_PYTHON",
    "BundleError",
    "bundle_fits_this_python",
    "check_bundle_closure",
    "install_bundle",
    "prepare",
    "unmet_requirements",
]

logger = logging.getLogger(__name__)

DEFAULT_BUNDLE = REPO / ".gpu_bundle"
DETECTRON2_SDIST = "pb1-detectron2-0.6.tar.gz"
INSTALL_DETECTRON2 = REPO / "tools" / "install_detectron2.py"
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


class BundleError(RuntimeError):
    """The bundle cannot be prepared or installed (the message says which file or requirement)."""


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


def _pip(*args: str) -> None:
    cmd = [sys.executable, "-m", "pip", *args]
    logger.info("+ %s", " ".join(cmd))
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


def prepare(bundle: Path, python_version: str) -> list[str]:
    """Fill `bundle` with the wheels (for CPython `python_version`, manylinux x86_64), the detectron2 sdist
    and the commit; returns the wheels' names. Raises BundleError if a built wheel is not pure Python or
    the bundle's requirements are not closed over it plus GPU_PROVIDED."""
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
                raise BundleError(
                    f"{built.name} is not a pure-Python wheel; it cannot travel to the GPU machine"
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
    subprocess.run([sys.executable, str(INSTALL_DETECTRON2), "--download-only", str(bundle)], check=True)
    problems = check_bundle_closure(sorted(wheels.glob("*.whl")), python_version)
    if problems:
        raise BundleError("the bundle is not closed:\n  " + "\n  ".join(problems))
    (bundle / "COMMIT").write_text(commit_description() + "\n")
    (bundle / "PYTHON").write_text(python_version + "\n")
    return sorted(p.name for p in wheels.glob("*.whl"))


def bundle_fits_this_python(bundle: Path) -> str:
    """'' if every wheel of `bundle` installs on this interpreter, else why not."""
    from packaging.tags import sys_tags
    from packaging.utils import parse_wheel_filename

    wheels = sorted((bundle / "wheels").glob("*.whl"))
    if not wheels or not (bundle / DETECTRON2_SDIST).exists():
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


def install_bundle(bundle: Path, site: Path, timeout: float, env: dict[str, str]) -> str:
    """pip-install (offline, --no-deps) the bundle's wheels of distributions this interpreter lacks into
    `site`, and detectron2 from the bundle's sdist; then check that detectron2, fvcore, pycocotools and
    mdqe import (in a process with environment `env`) and every requirement of what was installed.

    Returns the install row's value; raises BundleError or subprocess.SubprocessError.
    """
    from importlib import metadata

    from packaging.utils import parse_wheel_filename

    needed = []
    for wheel in sorted((bundle / "wheels").glob("*.whl")):
        try:
            metadata.version(parse_wheel_filename(wheel.name)[0])
        except metadata.PackageNotFoundError:
            needed.append(wheel)
    start = time.perf_counter()
    if needed:
        cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile"]
        cmd += ["--no-cache-dir", "--target", str(site), *map(str, needed)]
        subprocess.run(cmd, check=True, timeout=timeout)
    cmd = [
        sys.executable,
        str(INSTALL_DETECTRON2),
        "--target",
        str(site),
        "--sdist",
        str(bundle / DETECTRON2_SDIST),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise BundleError(f"installing detectron2 from the bundle failed: {proc.stderr.strip()[-1500:]}")
    check = (
        f"import sys; sys.path.insert(0, {str(site)!r}); import detectron2, fvcore, pycocotools.mask, mdqe"
    )
    proc = subprocess.run(
        [sys.executable, "-c", check], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )
    if proc.returncode != 0:
        raise BundleError(f"imports fail after the offline install: {proc.stderr.strip()[-1500:]}")
    names = ", ".join(parse_wheel_filename(w.name)[0] for w in needed) or "none"
    seconds = time.perf_counter() - start
    unmet = unmet_requirements(site)
    status = "requirements met" if not unmet else f"WARNING, unmet: {'; '.join(unmet)}"
    return f"ok in {seconds:.0f} s: detectron2 0.6 + {names}; {status}"
