"""Shared pytest fixtures: the reference material and a CUDA guard for `gpu`-marked tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]


def _reference_dir() -> Path:
    return Path(os.environ.get("MDQE_REFERENCE", REPO_ROOT.parent / "shared" / "reference"))


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """`../shared/reference` (or $MDQE_REFERENCE): state-dict layouts, gen_weights.py and fixtures."""
    path = _reference_dir()
    if not path.is_dir():
        pytest.skip(f"reference material not found at {path} (set MDQE_REFERENCE)")
    return path


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
