"""A tiny synthetic video dataset and the tiny MDQE config, shared by the engine tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from detectron2.config import CfgNode, get_cfg
from detectron2.data import DatasetCatalog

from mdqe.config import add_mdqe_config
from mdqe.data import register_ytvis_instances
from mdqe.data.datasets.categories import instances_meta
from mdqe.data.synthetic import SYNTHETIC_CATEGORIES, SplitSpec, write_synthetic_vis

TINY_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "synthetic" / "tiny.yaml"
TRAIN_NAME = "engine_tests_synthetic_train"


def register_two_videos(name: str, root: Path, size: int) -> str:
    """Write (once) and register as `name` a 2-video synthetic set: 8 frames of size x size, 2-3
    shapes each (the same scenes at every size)."""
    if name not in DatasetCatalog.list():
        spec = SplitSpec(
            num_videos=2, min_length=8, max_length=8, frame_sizes=((size, size),), max_instances=3
        )
        write_synthetic_vis(str(root), {"train": spec}, num_coco_images=0, seed=11)
        meta = instances_meta(SYNTHETIC_CATEGORIES)
        register_ytvis_instances(name, meta, str(root / "train.json"), str(root / "train" / "JPEGImages"))
    return name


@pytest.fixture(scope="session")
def tiny_video_dataset(tmp_path_factory) -> str:
    """Name of a registered 2-video synthetic dataset (8 frames of 64 x 64, 2-3 shapes each)."""
    return register_two_videos(TRAIN_NAME, tmp_path_factory.mktemp("engine_synthetic"), 64)


@pytest.fixture(scope="session")
def tiny_cfg(tiny_video_dataset) -> Callable[..., CfgNode]:
    """`tiny_cfg(output_dir, *opts)`: configs/synthetic/tiny.yaml training on `tiny_video_dataset`
    without evaluation, writing to `output_dir`, plus `opts` (a detectron2 override list)."""

    def make(output_dir, *opts) -> CfgNode:
        cfg = get_cfg()
        add_mdqe_config(cfg)
        cfg.merge_from_file(str(TINY_CONFIG))
        cfg.DATASETS.TRAIN = (tiny_video_dataset,)
        cfg.DATASETS.TEST = ()
        cfg.OUTPUT_DIR = str(output_dir)
        cfg.merge_from_list([str(o) for o in opts])
        return cfg

    return make
