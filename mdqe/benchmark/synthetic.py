"""Synthetic inputs of the benchmarks: video frames of smooth random texture and a training clip."""

from __future__ import annotations

import torch
from detectron2.structures import BitMasks, Instances

__all__ = ["synthetic_clip", "synthetic_frames"]


def synthetic_frames(num: int, height: int, width: int, seed: int = 0) -> list[torch.Tensor]:
    """`num` (3, height, width) uint8 frames of smooth random texture (bilinearly upsampled noise)."""
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(num, 3, max(height // 16, 1), max(width // 16, 1), generator=g) * 255
    frames = torch.nn.functional.interpolate(
        small, size=(height, width), mode="bilinear", align_corners=False
    )
    return list(frames.to(torch.uint8))


def synthetic_clip(num_frames: int, height: int, width: int, num_classes: int) -> dict:
    """A training clip with three moving rectangles: {"image": T (3, H, W) uint8 frames, "instances": T
    Instances with gt_classes, gt_ids, gt_masks and gt_boxes}."""
    instances = []
    for t in range(num_frames):
        masks = torch.zeros(3, height, width, dtype=torch.bool)
        for n in range(3):
            y0 = (height // 5) * (n + 1) - height // 10 + t
            x0 = (width // 5) * (n + 1) - width // 10 + 2 * t
            masks[n, y0 : y0 + height // 4, x0 : x0 + width // 4] = True
        inst = Instances((height, width))
        inst.gt_classes = torch.arange(3) % num_classes
        inst.gt_ids = torch.arange(3)
        inst.gt_masks = BitMasks(masks)
        inst.gt_boxes = inst.gt_masks.get_bounding_boxes()
        instances.append(inst)
    return {"image": synthetic_frames(num_frames, height, width, seed=1), "instances": instances}
