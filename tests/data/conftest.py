"""Fixtures for the data tests: a tiny synthetic dataset on disk, registered under test-only names."""

from __future__ import annotations

import os

import pytest
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog

from mdqe import add_mdqe_config
from mdqe.data.datasets.builtin import register_coco_video_instances
from mdqe.data.datasets.categories import instances_meta
from mdqe.data.datasets.ytvis import register_ytvis_instances
from mdqe.data.synthetic import SYNTHETIC_CATEGORIES, SplitSpec, ensure_synthetic_vis

TINY_SPLITS = {
    "train": SplitSpec(num_videos=5, min_length=3, max_length=9),
    "valid": SplitSpec(num_videos=3, min_length=4, max_length=8, min_occlusion=0.4),
}
TINY_COCO_IMAGES = 6
TINY_SEED = 7


def _register(name: str, register, *args) -> None:
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    register(name, *args)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> str:
    """A tiny synthetic dataset (5 train videos, 3 valid, 6 COCO images) registered as
    test_synth_train / test_synth_val / test_synth_coco."""
    return make_tiny_synthetic(str(tmp_path_factory.mktemp("datasets")))


def make_tiny_synthetic(root: str) -> str:
    """Write (once) and register the tiny synthetic dataset under `root`; returns its folder."""
    folder = ensure_synthetic_vis(root, TINY_SPLITS, TINY_COCO_IMAGES, TINY_SEED)
    meta = instances_meta(SYNTHETIC_CATEGORIES)
    for name, split in (("test_synth_train", "train"), ("test_synth_val", "valid")):
        _register(
            name,
            register_ytvis_instances,
            meta,
            os.path.join(folder, f"{split}.json"),
            os.path.join(folder, split, "JPEGImages"),
        )
    _register(
        "test_synth_coco",
        register_coco_video_instances,
        meta,
        os.path.join(folder, "coco_train.json"),
        os.path.join(folder, "coco"),
    )
    return folder


def small_cfg(**overrides):
    """A CPU-sized training cfg on the tiny synthetic set; `overrides` as KEY__SUB=value."""
    cfg = get_cfg()
    add_mdqe_config(cfg)
    cfg.DATASETS.TRAIN = ("test_synth_train",)
    cfg.INPUT.SAMPLING_FRAME_NUM = 3
    cfg.INPUT.MIN_SIZE_TRAIN = (96, 128)
    cfg.INPUT.MAX_SIZE_TRAIN = 256
    cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING = "choice_by_clip"
    cfg.INPUT.RANDOM_FLIP = "flip_by_clip"
    cfg.INPUT.MIN_SIZE_TEST = 96
    cfg.INPUT.PSEUDO.MIN_SIZE_TRAIN = (96, 128)
    cfg.INPUT.PSEUDO.MAX_SIZE_TRAIN = 256
    cfg.SOLVER.IMS_PER_BATCH = 4
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.SEED = 3
    for key, value in overrides.items():
        node = cfg
        *parents, leaf = key.split("__")
        for p in parents:
            node = getattr(node, p)
        setattr(node, leaf, value)
    return cfg
