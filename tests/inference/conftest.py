"""Reference fixtures of the inference tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


def _load(path: Path) -> dict:
    if not path.is_file():  # a regression in what the tests compare against: fail, never skip
        raise FileNotFoundError(f"reference fixture not found: {path} (see tests/fixtures/README.md)")
    return torch.load(path, weights_only=False)


@pytest.fixture(scope="session")
def postproc(reference_dir: Path) -> dict:
    """fixtures/postproc_seed1.pt: the original's post-processing on designed decoder outputs."""
    return _load(reference_dir / "fixtures" / "postproc_seed1.pt")


@pytest.fixture(scope="session")
def r50_ovis(reference_dir: Path) -> dict:
    """fixtures/r50_ovis_seed1.pt: the original model on a 7-frame video."""
    return _load(reference_dir / "fixtures" / "r50_ovis_seed1.pt")


@pytest.fixture(scope="session")
def r50_ovis_long(reference_dir: Path) -> dict:
    """fixtures/r50_ovis_seed1_long.pt: the original model on a 12-frame video."""
    return _load(reference_dir / "fixtures" / "r50_ovis_seed1_long.pt")


@pytest.fixture(autouse=True)
def _one_thread():
    """These tests run many tiny ops, which more intra-op threads only slow down on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
