"""Install detectron2 v0.6 (Python sources) from the pinned `pb1-detectron2==0.6` sdist.

detectron2 is not published on PyPI under its own name. `pb1-detectron2==0.6` carries the Python
sources of detectron2's tag v0.6 but not its C++ sources (`detectron2/layers/csrc`), so its setup.py
cannot build. MDQE needs none of detectron2's compiled ops, so this script copies the pure-Python
package into site-packages (or --target) and adds a `detectron2._C` module that raises a clear error if
one of the compiled ops (deformable conv, rotated boxes, the fast COCO evaluator) is ever called.

The sdist is fetched by `pip download` with its sha256 pinned (`--require-hashes`), so pip's configured
index, mirror, proxy and certificates apply; the digest is checked again before extracting. pip prepares
the sdist's metadata with the running interpreter (`--no-build-isolation`: detectron2's setup.py imports
torch), so torch must be installed first, as tools/install.sh does.

    python tools/install_detectron2.py                      # into this interpreter's site-packages
    python tools/install_detectron2.py --download-only DIR  # fetch the verified sdist into DIR
    python tools/install_detectron2.py --sdist FILE --target DIR   # offline, from a fetched sdist

Without --target, does nothing when an importable detectron2 is already installed (e.g. an official
build), unless --force.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
from pathlib import Path

REQUIREMENT = "pb1-detectron2==0.6"
SDIST_NAME = "pb1-detectron2-0.6.tar.gz"
SDIST_SHA256 = "5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29"
MARKER = "INSTALLED_BY_MDQE"

C_SHIM = '''"""Placeholder for detectron2's compiled ops, written by MDQE's tools/install_detectron2.py.

This detectron2 was installed from Python sources only. MDQE uses none of detectron2's compiled
ops; any use of one ends here with an explanation.
"""


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    raise ImportError(
        f"detectron2._C.{name} is not available: this detectron2 was installed without its C++ ops "
        "by tools/install_detectron2.py. Install an official detectron2 build (see INSTALL.md) to use "
        "deformable convolutions, rotated boxes or the fast COCO evaluator."
    )
'''


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_sdist(path: Path) -> Path:
    """Raise SystemExit unless `path` is the pinned sdist (by sha256); returns `path`."""
    if not path.is_file():
        raise SystemExit(f"error: detectron2 sdist {path} does not exist")
    digest = _sha256(path)
    if digest != SDIST_SHA256:
        raise SystemExit(f"error: {path} has sha256 {digest}, expected {SDIST_SHA256}; refusing to use it")
    return path


def download_sdist(dest: Path) -> Path:
    """`pip download` the pinned sdist into `dest` (hash-checked by pip and here); returns its path."""
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        requirements = Path(tmp) / "requirements.txt"
        requirements.write_text(f"{REQUIREMENT} --hash=sha256:{SDIST_SHA256}\n")
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
        cmd += ["--no-build-isolation", "--require-hashes", "-r", str(requirements), "-d", str(dest)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(
            f"error: `{' '.join(cmd)}` failed (exit {proc.returncode}):\n"
            f"{proc.stdout[-2000:]}{proc.stderr[-3000:]}"
        )
    return verify_sdist(dest / SDIST_NAME)


def install(site_packages: Path, sdist: Path | None = None) -> Path:
    """Install the detectron2 package into `site_packages` from `sdist` (downloaded when None),
    replacing one already there; returns the package directory."""
    target = site_packages / "detectron2"
    with tempfile.TemporaryDirectory() as tmp:
        archive = verify_sdist(sdist) if sdist is not None else download_sdist(Path(tmp) / "download")
        with tarfile.open(archive) as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(Path(tmp) / "src", filter="data")
            else:  # Python < 3.10.12 / 3.11.4: no extraction filters; the archive is hash-pinned
                tar.extractall(Path(tmp) / "src")
        source = Path(tmp) / "src" / "pb1-detectron2-0.6" / "detectron2"
        if target.exists():
            shutil.rmtree(target)
        site_packages.mkdir(parents=True, exist_ok=True)
        shutil.copytree(source, target)
    (target / "_C.py").write_text(C_SHIM)
    (target / MARKER).write_text(f"{REQUIREMENT} ({SDIST_NAME})\nsha256={SDIST_SHA256}\n")
    print(f"installed detectron2 0.6 (Python sources) into {target}")
    return target


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--force", action="store_true", help="reinstall even if detectron2 imports")
    parser.add_argument(
        "--target", type=Path, help="install into this folder (default: this interpreter's site-packages)"
    )
    parser.add_argument("--sdist", type=Path, help=f"install from this {SDIST_NAME} instead of downloading")
    parser.add_argument("--download-only", type=Path, metavar="DIR", help="only fetch the verified sdist")
    args = parser.parse_args()
    if args.download_only is not None:
        print(f"downloaded {download_sdist(args.download_only)}")
        return
    found = importlib.util.find_spec("detectron2")
    if args.target is None and not args.force and found is not None:
        print(f"detectron2 already importable from {found.origin}; skipping")
        return
    install(args.target or Path(sysconfig.get_paths()["purelib"]), sdist=args.sdist)


if __name__ == "__main__":
    main()
