"""Clip augmentations draw their parameters once per clip."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import small_cfg
from detectron2.data import transforms as T

from mdqe.data.augmentation import (
    RandomApplyClip,
    RandomCropClip,
    RandomRotationClip,
    ResizeShortestEdgeClip,
    apply_clip_augmentations,
    build_augmentation,
    build_pseudo_augmentation,
)
from mdqe.data.build import _seeded_global_rngs


def _frames(num: int, height: int = 60, width: int = 80) -> list[np.ndarray]:
    return [np.full((height, width, 3), i, np.uint8) for i in range(num)]


@pytest.mark.parametrize(
    ("crop_type", "size"), [("relative_range", (0.5, 0.5)), ("absolute_range", (20, 40))]
)
def test_crop_has_one_size_per_clip_and_slides_monotonically(crop_type, size):
    for seed in range(20):
        with _seeded_global_rngs(seed):
            tfms = RandomCropClip(crop_type, size).get_clip_transforms(_frames(5))
        assert len({(t.w, t.h) for t in tfms}) == 1
        for coord in ([t.x0 for t in tfms], [t.y0 for t in tfms]):
            assert coord == sorted(coord) or coord == sorted(coord, reverse=True)
        assert all(t.x0 >= 0 and t.x0 + t.w <= 80 and t.y0 >= 0 and t.y0 + t.h <= 60 for t in tfms)


def test_resize_by_clip_gives_one_size_and_choice_may_not():
    sizes_by_clip, sizes_per_frame = set(), set()
    for seed in range(10):
        with _seeded_global_rngs(seed):
            by_clip, _ = apply_clip_augmentations([ResizeShortestEdgeClip((20, 30, 40), 100)], _frames(4))
            per_frame, _ = apply_clip_augmentations(
                [ResizeShortestEdgeClip((20, 30, 40), 100, "choice")], _frames(4)
            )
        assert len({f.shape for f in by_clip}) == 1
        sizes_by_clip.add(by_clip[0].shape)
        sizes_per_frame.add(len({f.shape for f in per_frame}))
    assert len(sizes_by_clip) > 1 and max(sizes_per_frame) > 1


def test_rotation_angles_are_monotonic_over_the_clip():
    for seed in range(10):
        with _seeded_global_rngs(seed):
            tfms = RandomRotationClip([-15, 15], center=[(0.4, 0.4), (0.6, 0.6)]).get_clip_transforms(
                _frames(5)
            )
        angles = [t.angle for t in tfms]
        assert angles == sorted(angles) or angles == sorted(angles, reverse=True)
        assert all(-15 <= a <= 15 for a in angles)
        assert len({(t.center[0], t.center[1]) for t in tfms}) == 1


def test_random_apply_applies_to_the_whole_clip_or_not_at_all():
    outcomes = set()
    for seed in range(16):
        with _seeded_global_rngs(seed):
            frames, _ = apply_clip_augmentations(
                [RandomApplyClip([ResizeShortestEdgeClip(30, 100)])], _frames(3)
            )
        shapes = {f.shape[:2] for f in frames}
        assert len(shapes) == 1
        outcomes |= shapes
    assert outcomes == {(60, 80), (30, 40)}


def test_builders_follow_the_config():
    cfg = small_cfg(INPUT__CROP__ENABLED=True, INPUT__AUGMENTATIONS=["brightness", "rotation"])
    kinds = [type(a).__name__ for a in build_augmentation(cfg, is_train=True)]
    assert kinds == [
        "RandomApplyClip",
        "ResizeShortestEdgeClip",
        "RandomFlipClip",
        "RandomBrightness",
        "RandomRotation",
    ]
    pseudo = [type(a).__name__ for a in build_pseudo_augmentation(cfg, is_train=True)]
    assert pseudo == ["ResizeShortestEdgeClip", "RandomFlipClip", "RandomRotationClip"]
    (test_aug,) = build_augmentation(cfg, is_train=False)
    assert isinstance(test_aug, T.ResizeShortestEdge)


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("INPUT__RANDOM_FLIP", "diagonal", "INPUT.RANDOM_FLIP"),
        ("INPUT__AUGMENTATIONS", ["blur"], "INPUT.AUGMENTATIONS"),
        ("INPUT__MIN_SIZE_TRAIN_SAMPLING", "uniform", "MIN_SIZE_TRAIN_SAMPLING"),
        ("INPUT__LSJ_AUG__ENABLED", True, "LSJ_AUG"),
    ],
)
def test_bad_augmentation_config_names_the_key(key, value, match):
    with pytest.raises(ValueError, match=match):
        build_augmentation(small_cfg(**{key: value}), is_train=True)
