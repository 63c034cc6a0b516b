"""Registration of the datasets MDQE trains and evaluates on, under the original names.

Paths are relative to `$DETECTRON2_DATASETS` (default "datasets"), read when this module is imported.
The "train" splits point at `train_sub.json` (90% of the official train set; `*_dev` is the held-out
10%), as in the original; see datasets/README.md for how to produce them.
"""

from __future__ import annotations

import os

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.builtin_meta import _get_builtin_metadata
from detectron2.data.datasets.coco import load_coco_json

from ..synthetic import SYNTHETIC_CATEGORIES, ensure_synthetic_coco, ensure_synthetic_vis
from .categories import (
    COCO_TO_OVIS,
    COCO_TO_YTVIS_2019,
    COCO_TO_YTVIS_2021,
    OVIS_CATEGORIES,
    YTVIS_2019_CATEGORIES,
    YTVIS_2021_CATEGORIES,
    YTVIS_2022_CATEGORIES,
    instances_meta,
)
from .ytvis import load_ytvis_json, register_json_dataset, register_ytvis_instances

__all__ = ["register_all_mdqe_datasets", "register_coco_video_instances"]


def _ytvis_splits(prefix: str, folder: str) -> dict[str, tuple[str, str]]:
    return {
        f"{prefix}_train": (f"{folder}/train/JPEGImages", f"{folder}/train_sub.json"),
        f"{prefix}_val": (f"{folder}/valid/JPEGImages", f"{folder}/valid.json"),
        f"{prefix}_test": (f"{folder}/test/JPEGImages", f"{folder}/test.json"),
        f"{prefix}_dev": (f"{folder}/train/JPEGImages", f"{folder}/valid_sub.json"),
    }


# name -> (image root, json file, category table)
_PREDEFINED_VIDEO_SPLITS = {
    **{k: (*v, YTVIS_2019_CATEGORIES) for k, v in _ytvis_splits("ytvis_2019", "ytvis_2019").items()},
    **{k: (*v, YTVIS_2021_CATEGORIES) for k, v in _ytvis_splits("ytvis_2021", "ytvis_2021").items()},
    **{k: (*v, YTVIS_2022_CATEGORIES) for k, v in _ytvis_splits("ytvis_2022", "ytvis_2022").items()},
    **{k: (*v, OVIS_CATEGORIES) for k, v in _ytvis_splits("ytvis_ovis", "ovis").items()},
}
# YouTube-VIS 2022: the challenge scores valid.json's results against its short- and long-video ground truth
_YTVIS_2022_GT = {"ytvis_2022_val": ("ytvis_2022/gt_short.json", "ytvis_2022/gt_long.json")}

# COCO images whose annotations are restricted to classes with a counterpart in a video dataset
# (tools/convert_coco_to_ytvis_categories.py writes the json files), with the COCO -> video category map
_PREDEFINED_COCO_VIDEO_SPLITS = {
    f"coco2{target}_{split}": (f"coco/{split}2017", f"coco/annotations/coco2{target}_{split}.json", table)
    for target, table in (
        ("ytvis2019", COCO_TO_YTVIS_2019),
        ("ytvis2021", COCO_TO_YTVIS_2021),
        ("ovis", COCO_TO_OVIS),
    )
    for split in ("train", "val")
}

SYNTHETIC_VIS_SPLITS = {
    "synthetic_vis_train": ("synthetic_vis/train/JPEGImages", "synthetic_vis/train.json"),
    "synthetic_vis_val": ("synthetic_vis/valid/JPEGImages", "synthetic_vis/valid.json"),
}
# the image pre-training set (configs/synthetic/R18_synthetic_pretrain.yaml), generated separately
SYNTHETIC_COCO_SPLITS = {
    "synthetic_coco_train": ("synthetic_coco/train", "synthetic_coco/train.json"),
    "synthetic_coco_val": ("synthetic_coco/val", "synthetic_coco/val.json"),
}


def register_coco_video_instances(
    name: str, metadata: dict, json_file: str, image_root: str, category_map: dict[int, int] | None = None
) -> None:
    """Register a COCO-format image dataset (`evaluator_type` "coco") whose missing files give a
    one-line `DatasetNotFoundError`; its samples become pseudo-clips in video training.

    `category_map` (COCO category id -> category id of the target video dataset, metadata
    `video_category_map`) maps its classes when it is an auxiliary source of a video training set.
    """
    if category_map is not None:
        metadata = {**metadata, "video_category_map": dict(category_map)}
    register_json_dataset(name, load_coco_json, metadata, json_file, image_root, "coco")


def _register_synthetic(root: str) -> None:
    """Register the synthetic splits; the dataset is generated under `root` on first load."""
    meta = instances_meta(SYNTHETIC_CATEGORIES)
    splits = [
        (name, paths, load_ytvis_json, "ytvis", ensure_synthetic_vis)
        for name, paths in SYNTHETIC_VIS_SPLITS.items()
    ]
    splits += [
        (name, paths, load_coco_json, "coco", ensure_synthetic_coco)
        for name, paths in SYNTHETIC_COCO_SPLITS.items()
    ]
    for name, (image_root, json_file), load_json, evaluator_type, ensure in splits:
        image_root, json_file = os.path.join(root, image_root), os.path.join(root, json_file)

        def load(name=name, image_root=image_root, json_file=json_file, load_json=load_json, ensure=ensure):
            ensure(root, accept_existing=True)
            return load_json(json_file, image_root, name)

        DatasetCatalog.register(name, load)
        MetadataCatalog.get(name).set(
            json_file=json_file, image_root=image_root, evaluator_type=evaluator_type, **meta
        )


def register_all_mdqe_datasets(root: str) -> None:
    """Register every predefined dataset with paths under `root`."""
    for name, (image_root, json_file, categories) in _PREDEFINED_VIDEO_SPLITS.items():
        register_ytvis_instances(
            name, instances_meta(categories), os.path.join(root, json_file), os.path.join(root, image_root)
        )
    for name, files in _YTVIS_2022_GT.items():
        MetadataCatalog.get(name).set(ytvis_2022_gt=tuple(os.path.join(root, f) for f in files))
    coco_meta = _get_builtin_metadata("coco")
    for name, (image_root, json_file, table) in _PREDEFINED_COCO_VIDEO_SPLITS.items():
        register_coco_video_instances(
            name, coco_meta, os.path.join(root, json_file), os.path.join(root, image_root), table
        )
    _register_synthetic(root)


register_all_mdqe_datasets(os.getenv("DETECTRON2_DATASETS", "datasets"))
