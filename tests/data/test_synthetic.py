"""The synthetic occluded-video generator."""

from __future__ import annotations

import json
import multiprocessing as mp
import os

import numpy as np
import pycocotools.mask as mask_util
import pytest
from conftest import TINY_COCO_IMAGES, TINY_SEED, TINY_SPLITS

from mdqe.data.synthetic import (
    SYNTHETIC_CATEGORIES,
    SplitSpec,
    ensure_synthetic_coco,
    ensure_synthetic_vis,
    render_video,
    split_video,
)


def test_rendering_is_a_function_of_the_seed():
    spec = SplitSpec(num_videos=1, min_length=4, max_length=6)
    a, b, c = render_video(5, spec), render_video(5, spec), render_video(6, spec)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.masks, b.masks)
    assert a.frames.shape != c.frames.shape or not np.array_equal(a.frames, c.frames)


def test_videos_vary_in_length_and_size_and_respect_the_spec():
    spec = SplitSpec(num_videos=12, min_length=5, max_length=12)
    videos = [split_video("train", i, 0, spec) for i in range(12)]
    assert len({v.frames.shape[0] for v in videos}) > 2 and len({v.frames.shape[1:3] for v in videos}) > 1
    for v in videos:
        assert 5 <= v.frames.shape[0] <= 12 and max(v.frames.shape[1:3]) <= 256
        assert v.frames.dtype == np.uint8 and v.masks.dtype == bool
        assert set(v.category_ids.tolist()) <= {c[0] for c in SYNTHETIC_CATEGORIES}
        # visible masks are disjoint: one owner per pixel
        assert v.masks.sum(0).max() <= 1


def test_shapes_enter_and_leave_the_view_and_occlude_each_other():
    spec = SplitSpec(num_videos=10)
    videos = [split_video("train", i, 0, spec) for i in range(10)]
    presence = [v.masks.any((2, 3)) for v in videos]  # (instances, T) per video
    partial = np.concatenate([p.any(1) & ~p.all(1) for p in presence])
    assert partial.mean() > 0.3  # many tracks are absent in part of their video
    assert np.mean([v.max_occlusion > 0.3 for v in videos]) > 0.5


def test_validation_videos_always_contain_occlusions(synthetic_root):
    with open(os.path.join(synthetic_root, "manifest.json")) as f:
        manifest = json.load(f)
    spec = TINY_SPLITS["valid"]
    assert len(manifest["videos"]["valid"]) == spec.num_videos
    for index, facts in enumerate(manifest["videos"]["valid"]):
        assert facts["max_occlusion"] >= spec.min_occlusion
        assert facts["seed"] == split_video("valid", index, TINY_SEED, spec).seed


def _ensure(root: str) -> str:
    return ensure_synthetic_vis(root, {"train": SplitSpec(num_videos=2, max_length=10)}, 2, 1)


def test_concurrent_first_use_generates_once_and_completely(tmp_path):
    root = str(tmp_path)
    with mp.get_context("fork").Pool(2) as pool:
        folders = pool.map(_ensure, [root, root])
    assert folders[0] == folders[1] == os.path.join(root, "synthetic_vis")
    assert sorted(os.listdir(root)) == [".synthetic_vis.lock", "synthetic_vis"]  # no leftover temp folder
    manifest_mtime = os.path.getmtime(os.path.join(folders[0], "manifest.json"))
    _ensure(root)  # already there: not rewritten
    assert os.path.getmtime(os.path.join(folders[0], "manifest.json")) == manifest_mtime
    with open(os.path.join(folders[0], "train.json")) as f:
        assert len(json.load(f)["videos"]) == 2


def test_coco_images_are_written_with_annotations(synthetic_root):
    with open(os.path.join(synthetic_root, "coco_train.json")) as f:
        data = json.load(f)
    assert len(data["images"]) == TINY_COCO_IMAGES and data["annotations"]
    assert all(os.path.isfile(os.path.join(synthetic_root, "coco", im["file_name"])) for im in data["images"])


def _read_json(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def test_the_image_pretraining_set_is_held_out_and_round_trips(tmp_path):
    folder = ensure_synthetic_coco(str(tmp_path), {"train": 6, "val": 3}, seed=2)
    manifest = _read_json(os.path.join(folder, "manifest.json"))
    seeds = {split: {f["seed"] for f in facts} for split, facts in manifest["images"].items()}
    assert len(seeds["train"]) == 6 and len(seeds["val"]) == 3 and not seeds["train"] & seeds["val"]
    for split, num in (("train", 6), ("val", 3)):
        data = _read_json(os.path.join(folder, f"{split}.json"))
        assert [im["id"] for im in data["images"]] == list(range(1, num + 1))
        first = [a for a in data["annotations"] if a["image_id"] == 1]
        video = split_video("coco" if split == "train" else "coco_val", 0, seed=2)
        visible = [m for m in video.masks[:, 0] if m.any()]
        assert len(first) == len(visible)
        assert all(
            np.array_equal(mask_util.decode(a["segmentation"]).astype(bool), m)
            for a, m in zip(first, visible)
        )
    with pytest.raises(ValueError, match="unknown synthetic_coco split"):
        ensure_synthetic_coco(str(tmp_path / "other"), {"test": 1})
