"""Shared pytest fixtures: the reference material (stored in tests/fixtures/) and a CUDA guard for
`gpu`-marked tests. Without a CUDA device the Triton kernels run in Triton's interpreter on CPU tensors."""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
import torch

# Read by Triton when a kernel module is imported, so it is set before any test runs. With a GPU the
# kernels are compiled and run on CUDA tensors instead.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES_DIR = REPO_ROOT / "tests" / "fixtures"


def materialise_reference(fixtures_dir: Path, out: Path) -> Path:
    """Lay out the stored reference facts of `fixtures_dir` as the reference folder they were made from:
    `out/state_dict_*.tsv`, `out/gen_weights.py` and `out/fixtures/*.pt` (from reference_fixtures.tar.xz)."""
    archive = fixtures_dir / "reference_fixtures.tar.xz"
    layouts = sorted(fixtures_dir.glob("state_dict_*.tsv"))
    if not archive.is_file() or not layouts or not (fixtures_dir / "gen_weights.py").is_file():
        raise FileNotFoundError(f"the reference fixtures are missing from {fixtures_dir} (see its README.md)")
    for path in [*layouts, fixtures_dir / "gen_weights.py"]:
        shutil.copyfile(path, out / path.name)
    with tarfile.open(archive, "r:xz") as members:
        members.extractall(out / "fixtures", filter="data")
    return out


@pytest.fixture(scope="session")
def reference_dir(tmp_path_factory) -> Path:
    """A folder with the reference facts of the original code: state-dict layouts (`state_dict_*.tsv`),
    `gen_weights.py` and `fixtures/*.pt`, made from tests/fixtures/ (see its README.md); or the full
    reference folder at $MDQE_REFERENCE. Missing material fails the tests instead of skipping them."""
    override = os.environ.get("MDQE_REFERENCE")
    if override:
        if not Path(override).is_dir():
            pytest.fail(f"MDQE_REFERENCE={override} is not a folder")
        return Path(override)
    return materialise_reference(FIXTURES_DIR, tmp_path_factory.mktemp("reference"))


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


@pytest.fixture(autouse=True)
def _restore_logging():
    """Undo what a test's in-process tool run did to logging. detectron2's `setup_logger` (called by
    tools/demo.py and tools/export_onnx.py) binds a handler to the sys.stdout of the test that ran it and
    stops propagation; once pytest closes that stream, every later test's warning from an `mdqe.*` logger
    printed "--- Logging error ---" to the next test's stderr (CI: tests/fuzz/test_fuzz_results.py after
    tests/deploy)."""
    manager = logging.Logger.manager
    before = {
        name: (list(logger.handlers), logger.propagate, logger.level)
        for name, logger in manager.loggerDict.items()
        if isinstance(logger, logging.Logger)
    }
    yield
    changed = False
    for name, logger in list(manager.loggerDict.items()):  # not the root: pytest's own handlers are there
        if not isinstance(logger, logging.Logger):
            continue
        # a logger made during the test keeps its level (libraries set theirs on import)
        handlers, propagate, level = before.get(name, ([], True, logger.level))
        if logger.handlers != handlers or logger.propagate != propagate or logger.level != level:
            logger.handlers[:] = handlers
            logger.propagate, logger.level = propagate, level
            changed = True
    if changed:
        from detectron2.utils.logger import setup_logger

        setup_logger.cache_clear()  # its cache would otherwise return a logger without its handlers


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
