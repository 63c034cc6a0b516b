"""Deriving the training json files the original expects from the official ones.

- `restrict_coco_to_categories`: COCO instances restricted to classes that have a counterpart in a video
  dataset (the coco2ytvis2019/coco2ytvis2021/coco2ovis json files). Category ids stay COCO's; the
  pseudo-clip mapper maps them onto the video dataset's classes.
- `split_train_sub`: the original's split of an official train.json into train_sub.json (about 90%,
  registered as *_train) and valid_sub.json (registered as *_dev), by a per-category quota.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["restrict_coco_to_categories", "split_train_sub"]


def restrict_coco_to_categories(coco: dict, coco_to_target: Mapping[int, int]) -> dict:
    """A copy of a COCO instances json keeping only annotations whose category_id is a key of
    `coco_to_target` (images and categories are kept as they are)."""
    out = {k: v for k, v in coco.items() if k != "annotations"}
    out["annotations"] = [a for a in coco["annotations"] if a["category_id"] in coco_to_target]
    return out


def split_train_sub(dataset: dict, valid_fraction: float = 0.1, is_ovis: bool = False) -> tuple[dict, dict]:
    """Split a YouTube-VIS train json into (train_sub, valid_sub) exactly as the original.

    Annotations are visited in file order. A video not yet assigned goes to valid_sub when its first
    annotation's category has so far at most `quota` annotations in valid_sub and that annotation spans
    at most 100 frames; otherwise to train_sub. quota = 2 * int(#videos * valid_fraction) // #categories
    (doubled for OVIS). Videos without annotations go to train_sub.
    """
    categories = dataset["categories"]
    quota = 2 * int(len(dataset["videos"]) * valid_fraction) // len(categories)
    if is_ovis:
        quota *= 2
    # the original indexes its counters by category_id - 1 (ids are 1..K in all three datasets)
    valid_counts = [0] * len(categories)
    assignment: dict = {}
    train_sub = {**{k: v for k, v in dataset.items() if k not in ("videos", "annotations")}, "videos": [],
                 "annotations": []}  # fmt: skip
    valid_sub = {**{k: v for k, v in dataset.items() if k not in ("videos", "annotations")}, "videos": [],
                 "annotations": []}  # fmt: skip
    for ann in dataset["annotations"]:
        vid, cat = ann["video_id"], ann["category_id"] - 1
        if vid not in assignment:
            to_valid = valid_counts[cat] <= quota and len(ann["segmentations"]) <= 100
            assignment[vid] = valid_sub if to_valid else train_sub
        assignment[vid]["annotations"].append(ann)
        if assignment[vid] is valid_sub:
            valid_counts[cat] += 1
    for video in dataset["videos"]:
        assignment.get(video["id"], train_sub)["videos"].append(video)
    return train_sub, valid_sub
