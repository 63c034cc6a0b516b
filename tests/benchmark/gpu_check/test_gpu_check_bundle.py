"""mdqe.benchmark.gpu_check.bundle: the checks that find what the offline bundle lacks."""

from __future__ import annotations

import zipfile
from pathlib import Path

from mdqe.benchmark.gpu_check import bundle


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
    wheels = [
        _fake_wheel(tmp_path, "alpha", "1.0", ["beta>=2", "numpy", "gamma; python_version < '3.8'"]),
        _fake_wheel(tmp_path, "beta", "1.5", ["delta", "epsilon; extra == 'dev'"]),
    ]
    problems = bundle.check_bundle_closure(wheels, "3.12")
    assert len(problems) == 2, problems
    assert "needs beta>=2, bundle has 1.5" in problems[0]
    assert "needs delta: neither bundled nor on the GPU machine" in problems[1]
    assert bundle.check_bundle_closure(wheels[1:2], "3.12") == [problems[1]]


def test_a_bundle_for_another_python_is_not_installed(tmp_path):
    (tmp_path / "wheels").mkdir()
    assert "no prepared bundle" in bundle.bundle_fits_this_python(tmp_path)
    (tmp_path / "pb1-detectron2-0.6.tar.gz").write_bytes(b"")
    _fake_wheel(tmp_path / "wheels", "alpha", "1.0", [])
    assert bundle.bundle_fits_this_python(tmp_path) == ""
    _fake_wheel(tmp_path / "wheels", "beta", "1.0", [], tag="cp27-cp27mu-manylinux1_x86_64")
    assert "does not install on this Python" in bundle.bundle_fits_this_python(tmp_path)


def test_unmet_requirements_of_an_installed_target(tmp_path):
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
    problems = bundle.unmet_requirements(tmp_path)
    assert len(problems) == 2, problems
    assert problems[0].startswith("alpha needs pytest<1, found ")
    assert problems[1] == "alpha needs no-such-distribution-here, found none"
