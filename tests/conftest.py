"""Shared pytest fixtures: the reference material and a CUDA guard for `gpu`-marked tests."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

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


@pytest.fixture(scope="session")
def gen_weights(reference_dir: Path) -> ModuleType:
    """The reference's deterministic weight generator (`read_layout`, `make_state_dict`)."""
    spec = importlib.util.spec_from_file_location("gen_weights", reference_dir / "gen_weights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def make_reference_model(reference_dir: Path, gen_weights: ModuleType) -> Callable[[dict], torch.nn.Module]:
    """`make_reference_model(fixture)`: MDQE built from a reference fixture's "config" and "opts", with the
    generated weights of its "seed" and "int_buffers" loaded strictly (train mode, on CPU)."""
    from detectron2.config import get_cfg

    from mdqe.config import add_mdqe_config
    from mdqe.modeling import MDQE

    def make(fixture: dict) -> torch.nn.Module:
        cfg = get_cfg()
        add_mdqe_config(cfg)
        cfg.merge_from_file(str(REPO_ROOT / fixture["config"]))
        cfg.merge_from_list(fixture["opts"])
        model = MDQE(cfg)
        layout = gen_weights.read_layout(reference_dir / f"state_dict_{Path(fixture['config']).stem}.tsv")
        weights = gen_weights.make_state_dict(layout, fixture["seed"], integers=fixture["int_buffers"])
        model.load_state_dict(weights)
        return model

    return make


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
