"""Inputs of the model tests: random frames and a training clip with two moving rectangles."""

from __future__ import annotations

import torch
from detectron2.structures import BitMasks, Instances

HEIGHT, WIDTH = 64, 96


def random_frames(num: int, seed: int = 0) -> list[torch.Tensor]:
    """num (3, HEIGHT, WIDTH) uint8 frames of uniform noise."""
    g = torch.Generator().manual_seed(seed)
    return list(torch.randint(0, 256, (num, 3, HEIGHT, WIDTH), dtype=torch.uint8, generator=g))


def training_clip(num_frames: int) -> dict:
    """A mapper-style training clip: classes 0 and 2, the first rectangle moving down, the second
    shrinking from the left."""
    instances = []
    for t in range(num_frames):
        masks = torch.zeros(2, HEIGHT, WIDTH, dtype=torch.bool)
        masks[0, 10 + t : 30 + t, 10:40] = True
        masks[1, 30:60, 50 + 2 * t : 90] = True
        inst = Instances((HEIGHT, WIDTH))
        inst.gt_classes = torch.tensor([0, 2])
        inst.gt_ids = torch.tensor([0, 1])
        inst.gt_masks = BitMasks(masks)
        inst.gt_boxes = inst.gt_masks.get_bounding_boxes()
        instances.append(inst)
    return {
        "image": random_frames(num_frames, seed=1),
        "instances": instances,
        "height": HEIGHT,
        "width": WIDTH,
    }
