"""Install detectron2 v0.6 (Python sources) from the pinned `pb1-detectron2==0.6` sdist.

detectron2 is not published on PyPI under its own name. `pb1-detectron2==0.6` carries the Python
sources of detectron2's tag v0.6 but not its C++ sources (`detectron2/layers/csrc`), so its setup.py
cannot build. MDQE needs none of detectron2's compiled ops, so this script copies the pure-Python
package into site-packages and adds a `detectron2._C` module that raises a clear error if one of the
compiled ops (deformable conv, rotated boxes, the fast COCO evaluator) is ever called.

Does nothing when an importable detectron2 is already installed (e.g. an official build).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import io
import shutil
import sys
import sysconfig
import tarfile
import tempfile
import urllib.request
from pathlib import Path

SDIST_URL = (
    "https://files.pythonhosted.org/packages/60/26/"
    "48f5bbb7ee492696a21da23303daeecdfe3942c498a70d34108acf63b2bd/pb1-detectron2-0.6.tar.gz"
)
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


def _download(url: str, sha256: str) -> bytes:
    with urllib.request.urlopen(url, timeout=120) as resp:
        data = resp.read()
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise SystemExit(f"error: {url} has sha256 {digest}, expected {sha256}; refusing to install it")
    return data


def install(site_packages: Path, force: bool = False) -> Path:
    """Install the detectron2 package into `site_packages`; returns the package directory."""
    target = site_packages / "detectron2"
    if not force and importlib.util.find_spec("detectron2") is not None:
        print(f"detectron2 already importable from {importlib.util.find_spec('detectron2').origin}; skipping")
        return target
    archive = _download(SDIST_URL, SDIST_SHA256)
    with tempfile.TemporaryDirectory() as tmp, tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(tmp, filter="data")
        source = Path(tmp) / "pb1-detectron2-0.6" / "detectron2"
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(source, target)
    (target / "_C.py").write_text(C_SHIM)
    (target / MARKER).write_text(f"{SDIST_URL}\nsha256={SDIST_SHA256}\n")
    print(f"installed detectron2 0.6 (Python sources) into {target}")
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="reinstall even if detectron2 imports")
    args = parser.parse_args()
    install(Path(sysconfig.get_paths()["purelib"]), force=args.force)
    sys.exit(0)


if __name__ == "__main__":
    main()
