"""Clip-level augmentations: random parameters drawn once per clip and applied to all its frames.

A `ClipAugmentation` turns the T frames of a clip into T transforms at once (`get_clip_transforms`), so
a clip keeps one resize, one flip and one crop size; the crop window and (for pseudo-clips) the rotation
angle move smoothly over the clip, as in the original. Plain detectron2 augmentations in the same list
(brightness, contrast, saturation, detectron2's RandomRotation) draw their parameters per frame, as the
original's do. Randomness comes from numpy's global generator (detectron2's convention); the data
loader seeds it per clip.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import cv2
import numpy as np
from detectron2.config import CfgNode
from detectron2.data import transforms as T
from fvcore.transforms.transform import (
    CropTransform,
    HFlipTransform,
    NoOpTransform,
    Transform,
    TransformList,
    VFlipTransform,
)
from PIL import Image

__all__ = [
    "ClipAugmentation",
    "RandomApplyClip",
    "RandomCropClip",
    "RandomFlipClip",
    "RandomRotationClip",
    "ResizeShortestEdgeClip",
    "apply_clip_augmentations",
    "build_augmentation",
    "build_pseudo_augmentation",
    "warp_masks",
]


class ClipAugmentation(T.Augmentation):
    """An augmentation that maps all frames of a clip at once."""

    def get_clip_transforms(self, frames: Sequence[np.ndarray]) -> list[Transform]:
        """One transform per frame (frames: T arrays (H, W, C))."""
        raise NotImplementedError

    def get_transform(self, image: np.ndarray) -> Transform:
        return self.get_clip_transforms([image])[0]

    def apply_clip(self, frames: list[np.ndarray]) -> tuple[list[np.ndarray], list[Transform]]:
        tfms = self.get_clip_transforms(frames)
        return [t.apply_image(f) for t, f in zip(tfms, frames)], tfms


def apply_clip_augmentations(
    augmentations: Sequence[T.Augmentation], frames: list[np.ndarray]
) -> tuple[list[np.ndarray], list[TransformList]]:
    """Apply `augmentations` in order to the T frames of a clip.

    Returns:
        the augmented frames and, per frame, the `TransformList` that maps annotations of that frame.
    """
    per_frame: list[list[Transform]] = [[] for _ in frames]
    for aug in augmentations:
        if isinstance(aug, ClipAugmentation):
            frames, tfms = aug.apply_clip(frames)
        else:
            tfms = [aug.get_transform(f) for f in frames]
            frames = [t.apply_image(f) for t, f in zip(tfms, frames)]
        for acc, t in zip(per_frame, tfms):
            acc.append(t)
    return frames, [TransformList(t) for t in per_frame]


def warp_masks(masks: np.ndarray, tfms: TransformList) -> np.ndarray:
    """Apply a frame's transforms to all its instance masks at once.

    Args:
        masks: (H, W, N) uint8 binary masks, N >= 1.
    Returns:
        (H', W', N) uint8, equal to applying `tfms.apply_segmentation` to each mask (detectron2 resizes
        masks with PIL's NEAREST, which OpenCV's INTER_NEAREST_EXACT reproduces), in one pass per
        transform instead of one per mask.
    """
    for t in tfms.transforms:
        if isinstance(t, (CropTransform, HFlipTransform, VFlipTransform, NoOpTransform)):
            masks = t.apply_image(masks)  # slicing / flipping, any number of channels
        elif isinstance(t, T.ResizeTransform):
            # cv2 takes at most 512 channels and drops a trailing channel axis of size 1
            chunks = [masks[..., i : i + 512] for i in range(0, masks.shape[2], 512)]
            size = (t.new_w, t.new_h)
            resized = [cv2.resize(c, size, interpolation=cv2.INTER_NEAREST_EXACT) for c in chunks]
            masks = np.concatenate([r.reshape(t.new_h, t.new_w, -1) for r in resized], axis=2)
        else:
            warped = [
                t.apply_segmentation(np.ascontiguousarray(masks[..., i])) for i in range(masks.shape[2])
            ]
            masks = np.stack(warped, axis=2)
    return np.ascontiguousarray(masks)


class RandomApplyClip(ClipAugmentation):
    """With probability `prob` per clip, apply a list of augmentations (to every frame), else nothing."""

    def __init__(self, augmentations: Sequence[T.Augmentation], prob: float = 0.5):
        super().__init__()
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"RandomApplyClip: prob must be in [0, 1], got {prob}")
        self.augmentations = list(augmentations)
        self.prob = prob

    def apply_clip(self, frames: list[np.ndarray]) -> tuple[list[np.ndarray], list[Transform]]:
        if self._rand_range() < self.prob:
            return apply_clip_augmentations(self.augmentations, frames)
        return frames, [NoOpTransform() for _ in frames]

    def get_clip_transforms(self, frames: Sequence[np.ndarray]) -> list[Transform]:
        return self.apply_clip(list(frames))[1]


class ResizeShortestEdgeClip(ClipAugmentation):
    """Resize the shorter edge to a random size, capping the longer edge at `max_size`.

    `sample_style` "choice"/"range" draw the size per frame as detectron2 does; "choice_by_clip" and
    "range_by_clip" draw it once per clip.
    """

    def __init__(
        self,
        short_edge_length: int | Sequence[int],
        max_size: int = sys.maxsize,
        sample_style: str = "choice_by_clip",
        interp: int = Image.BILINEAR,
    ):
        super().__init__()
        if sample_style not in ("range", "choice", "range_by_clip", "choice_by_clip"):
            raise ValueError(
                f"MIN_SIZE_TRAIN_SAMPLING must be one of range, choice, range_by_clip, choice_by_clip; "
                f"got {sample_style!r}"
            )
        if isinstance(short_edge_length, int):
            short_edge_length = (short_edge_length, short_edge_length)
        self.is_range = sample_style.startswith("range")
        if self.is_range and len(short_edge_length) != 2:
            raise ValueError(f"sample style {sample_style!r} needs [min, max] sizes, got {short_edge_length}")
        self.short_edge_length = tuple(short_edge_length)
        self.by_clip = sample_style.endswith("_by_clip")
        self.max_size = max_size
        self.interp = interp

    def _draw_size(self) -> int:
        if self.is_range:
            return int(np.random.randint(self.short_edge_length[0], self.short_edge_length[1] + 1))
        return int(np.random.choice(self.short_edge_length))

    def get_clip_transforms(self, frames: Sequence[np.ndarray]) -> list[Transform]:
        size = self._draw_size()
        tfms = []
        for i, frame in enumerate(frames):
            if i > 0 and not self.by_clip:
                size = self._draw_size()
            h, w = frame.shape[:2]
            newh, neww = T.ResizeShortestEdge.get_output_shape(h, w, size, self.max_size)
            tfms.append(T.ResizeTransform(h, w, newh, neww, self.interp))
        return tfms


class RandomFlipClip(ClipAugmentation):
    """Flip horizontally (or vertically) with probability `prob`, per clip if `by_clip` else per frame."""

    def __init__(
        self, prob: float = 0.5, *, horizontal: bool = True, vertical: bool = False, by_clip: bool = True
    ):
        super().__init__()
        if horizontal == vertical:
            raise ValueError("RandomFlipClip: exactly one of horizontal and vertical must be True")
        self.prob = prob
        self.horizontal = horizontal
        self.by_clip = by_clip

    def get_clip_transforms(self, frames: Sequence[np.ndarray]) -> list[Transform]:
        do = self._rand_range() < self.prob
        tfms = []
        for i, frame in enumerate(frames):
            if i > 0 and not self.by_clip:
                do = self._rand_range() < self.prob
            h, w = frame.shape[:2]
            if not do:
                tfms.append(NoOpTransform())
            else:
                tfms.append(HFlipTransform(w) if self.horizontal else VFlipTransform(h))
        return tfms


class RandomCropClip(ClipAugmentation):
    """One crop size per clip; the crop window slides linearly between two random positions over the
    clip (at sorted random times, in a random direction), as the original's RandomCropClip.

    `crop_type`/`crop_size` as detectron2's RandomCrop: "relative", "relative_range", "absolute",
    "absolute_range". Frames must share one size (crop after a by-clip resize).
    """

    def __init__(self, crop_type: str, crop_size: Sequence[float]):
        super().__init__()
        if crop_type not in ("relative_range", "relative", "absolute", "absolute_range"):
            raise ValueError(
                "INPUT.CROP.TYPE must be relative_range, relative, absolute or absolute_range; "
                f"got {crop_type!r}"
            )
        # detectron2's RandomCrop computes crop sizes; reuse it rather than re-deriving the four rules
        self._size_rule = T.RandomCrop(crop_type, tuple(crop_size))

    def get_clip_transforms(self, frames: Sequence[np.ndarray]) -> list[Transform]:
        sizes = {f.shape[:2] for f in frames}
        if len(sizes) != 1:
            raise ValueError(
                f"RandomCropClip needs frames of one size (resize by clip first), got {sorted(sizes)}"
            )
        h, w = sizes.pop()
        crop_h, crop_w = self._size_rule.get_crop_size((h, w))
        y0, x0 = np.random.randint(h - crop_h + 1), np.random.randint(w - crop_w + 1)
        y1, x1 = np.random.randint(y0, h - crop_h + 1), np.random.randint(x0, w - crop_w + 1)
        frac = np.sort(np.random.rand(len(frames)))
        ys = np.round(y0 * frac + y1 * (1 - frac)).astype(int)
        xs = np.round(x0 * frac + x1 * (1 - frac)).astype(int)
        if self._rand_range() < 0.5:
            ys, xs = ys[::-1], xs[::-1]
        return [T.CropTransform(int(x), int(y), crop_w, crop_h) for x, y in zip(xs, ys)]


class RandomRotationClip(ClipAugmentation):
    """T angles drawn in `angle` = [min, max] degrees, sorted (randomly reversed) so the clip turns
    smoothly, around one random centre per clip (relative [[min_x, min_y], [max_x, max_y]])."""

    def __init__(
        self,
        angle: Sequence[float],
        center: Sequence[Sequence[float]] | None = None,
        expand: bool = False,
        interp: int | None = None,
    ):
        super().__init__()
        self.angle = tuple(angle)
        self.center = center
        self.expand = expand
        self.interp = interp

    def get_clip_transforms(self, frames: Sequence[np.ndarray]) -> list[Transform]:
        angles = np.sort(np.random.uniform(self.angle[0], self.angle[1], size=len(frames)))
        center = None
        if self.center is not None:
            (cx0, cy0), (cx1, cy1) = self.center
            center = (np.random.uniform(cx0, cx1), np.random.uniform(cy0, cy1))
        if self._rand_range() < 0.5:
            angles = angles[::-1]
        tfms = []
        for frame, angle in zip(frames, angles):
            h, w = frame.shape[:2]
            abs_center = None if center is None else (w * center[0], h * center[1])
            tfms.append(
                T.RotationTransform(
                    h, w, float(angle), expand=self.expand, center=abs_center, interp=self.interp
                )
            )
        return tfms


def _flip_augmentation(random_flip: str, per_clip: bool) -> list[T.Augmentation]:
    if random_flip == "none":
        return []
    if random_flip not in ("horizontal", "vertical", "flip_by_clip"):
        raise ValueError(
            f"INPUT.RANDOM_FLIP must be none, horizontal, vertical or flip_by_clip; got {random_flip!r}"
        )
    return [
        RandomFlipClip(
            horizontal=random_flip != "vertical", vertical=random_flip == "vertical", by_clip=per_clip
        )
    ]


def _photometric(augmentations: Sequence[str], key: str) -> list[T.Augmentation]:
    unknown = set(augmentations) - {"brightness", "contrast", "saturation", "rotation"}
    if unknown:
        raise ValueError(
            f"{key}: unknown augmentation(s) {sorted(unknown)}; known: brightness, contrast, "
            "saturation, rotation"
        )
    augs: list[T.Augmentation] = []
    if "brightness" in augmentations:
        augs.append(T.RandomBrightness(0.9, 1.1))
    if "contrast" in augmentations:
        augs.append(T.RandomContrast(0.9, 1.1))
    if "saturation" in augmentations:
        augs.append(T.RandomSaturation(0.9, 1.1))
    return augs


def _check_no_lsj(cfg: CfgNode) -> None:
    if cfg.INPUT.LSJ_AUG.ENABLED:
        raise ValueError(
            "INPUT.LSJ_AUG.ENABLED=True is not supported (no configuration of the original uses it)"
        )


def _resize_and_crop(
    min_size: Sequence[int], max_size: int, sample_style: str, crop: CfgNode
) -> list[T.Augmentation]:
    augs: list[T.Augmentation] = []
    if crop.ENABLED:
        # as the original: half of the clips are first resized to 400-600 and cropped
        augs.append(
            RandomApplyClip(
                [
                    ResizeShortestEdgeClip((400, 500, 600), 1333, sample_style),
                    RandomCropClip(crop.TYPE, crop.SIZE),
                ]
            )
        )
    augs.append(ResizeShortestEdgeClip(min_size, max_size, sample_style))
    return augs


def build_augmentation(cfg: CfgNode, is_train: bool) -> list[T.Augmentation]:
    """Augmentations of real video clips (and of COCO clips when COCO is the target dataset).

    Train: [50%: resize 400-600 + moving crop] if INPUT.CROP.ENABLED, resize (INPUT.MIN/MAX_SIZE_TRAIN,
    MIN_SIZE_TRAIN_SAMPLING), flip (INPUT.RANDOM_FLIP; "flip_by_clip" flips whole clips), then the
    INPUT.AUGMENTATIONS (per frame, as the original). Test: ResizeShortestEdge(MIN/MAX_SIZE_TEST).
    """
    if not is_train:
        return [T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, "choice")]
    _check_no_lsj(cfg)
    augs = _resize_and_crop(
        cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN, cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING, cfg.INPUT.CROP
    )
    augs += _flip_augmentation(cfg.INPUT.RANDOM_FLIP, per_clip=cfg.INPUT.RANDOM_FLIP == "flip_by_clip")
    augs += _photometric(cfg.INPUT.AUGMENTATIONS, "INPUT.AUGMENTATIONS")
    if "rotation" in cfg.INPUT.AUGMENTATIONS:
        augs.append(
            T.RandomRotation([-15, 15], expand=False, center=[(0.4, 0.4), (0.6, 0.6)], sample_style="range")
        )
    return augs


def build_pseudo_augmentation(cfg: CfgNode, is_train: bool) -> list[T.Augmentation]:
    """Augmentations turning one COCO image into a moving pseudo-clip (INPUT.PSEUDO.*): [50%: resize +
    moving crop], resize, a flip per clip, photometric per frame, and a smooth rotation over the clip."""
    if not is_train:
        return build_augmentation(cfg, is_train)
    _check_no_lsj(cfg)
    pseudo = cfg.INPUT.PSEUDO
    augs = _resize_and_crop(
        pseudo.MIN_SIZE_TRAIN, pseudo.MAX_SIZE_TRAIN, pseudo.MIN_SIZE_TRAIN_SAMPLING, pseudo.CROP
    )
    augs += _flip_augmentation(cfg.INPUT.RANDOM_FLIP, per_clip=True)
    augs += _photometric(pseudo.AUGMENTATIONS, "INPUT.PSEUDO.AUGMENTATIONS")
    if "rotation" in pseudo.AUGMENTATIONS:
        augs.append(RandomRotationClip([-15, 15], center=[(0.4, 0.4), (0.6, 0.6)], expand=False))
    return augs
