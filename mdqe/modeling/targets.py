"""Training targets of MDQE: per-clip instance tracks built from the mapper's per-frame `Instances`."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from detectron2.structures import BitMasks, Instances

__all__ = ["prepare_targets"]


def _describe_clip(clip: dict[str, Any], index: int) -> str:
    if "video_id" in clip:
        return f"clip {index} (video_id {clip['video_id']})"
    if clip.get("file_names"):
        return f"clip {index} (first frame {clip['file_names'][0]})"
    return f"clip {index}"


def _mask_tensor(instances: Instances) -> torch.Tensor:
    masks = instances.gt_masks
    return masks.tensor if isinstance(masks, BitMasks) else masks


def _checked_frames(clip: dict[str, Any], clip_idx: int, num_frames: int) -> list[Instances]:
    """The clip's per-frame instances, after checking there are `num_frames` of the same length."""
    frames = clip["instances"]
    if len(frames) != num_frames:
        raise ValueError(
            f"{_describe_clip(clip, clip_idx)} has {len(frames)} frames of instances, "
            f"expected {num_frames} (INPUT.SAMPLING_FRAME_NUM)"
        )
    if any(len(f) != len(frames[0]) for f in frames):
        raise ValueError(
            f"{_describe_clip(clip, clip_idx)}: frames list different numbers of instances "
            f"{[len(f) for f in frames]}; every frame must list all instances of the clip"
        )
    return frames


def prepare_targets(
    batched_inputs: list[dict[str, Any]],
    padded_hw: tuple[int, int],
    num_frames: int,
    num_classes: int,
    match_stride: int = 4,
    device: torch.device | str | None = None,
) -> list[dict[str, torch.Tensor]]:
    """Turn the mapper's per-frame instances into per-clip instance tracks.

    Each frame's `Instances` lists the same N instances of its clip in the same order (the union of
    annotations over the sampled frames); `gt_ids == -1` marks an instance absent from that frame.
    An instance is kept if it is present in some frame and its class is < `num_classes`.

    Args:
        batched_inputs: B dicts with "instances": `num_frames` detectron2 `Instances` of image size
            (h, w) <= padded_hw, with gt_ids (N,), gt_classes (N,), gt_masks (BitMasks or bool tensor
            (N, h, w)) and gt_boxes (Boxes (N, 4) xyxy in pixels).
        padded_hw: (Hp, Wp) of the padded network input.
        num_frames: T, frames per clip.
        num_classes: K; instances whose class is never set below K are dropped.
        match_stride: downsampling of `match_masks` (MATCH_STRIDE).
        device: where the targets live (default: where the instances are).

    Returns:
        One dict per clip:
            labels: (N,) int64 contiguous class (taken from the frames where it is not -1; the last wins);
            ids: (N, T) int64 annotation id, -1 where absent;
            masks: (N, T, Hp, Wp) float32 GT masks, zero-padded;
            match_masks: (N, T, ceil(Hp/s), ceil(Wp/s)) float32, bilinear (soft) downsample of `masks`;
            boxes: (N, T, 4) float32 xyxy normalised by (Wp, Hp), clamped to [0, 1]; 0 where the box is
                empty.
    """
    h_pad, w_pad = padded_hw
    match_hw = (math.ceil(h_pad / match_stride), math.ceil(w_pad / match_stride))
    targets = []
    for clip_idx, clip in enumerate(batched_inputs):
        frames = _checked_frames(clip, clip_idx, num_frames)
        num_inst = len(frames[0])
        dev = torch.device(device) if device is not None else frames[0].gt_classes.device

        labels = torch.full((num_inst,), num_classes, dtype=torch.int64, device=dev)
        masks = torch.zeros((num_inst, num_frames, h_pad, w_pad), dtype=torch.float32, device=dev)
        boxes = torch.zeros((num_inst, num_frames, 4), dtype=torch.float32, device=dev)
        ids = []
        for t, inst in enumerate(frames):
            inst = inst.to(dev)
            h, w = inst.image_size
            classes = inst.gt_classes.long()
            has_class = classes != -1
            labels[has_class] = classes[has_class]
            ids.append(inst.gt_ids.long())
            masks[:, t, :h, :w] = _mask_tensor(inst).to(torch.float32)
            frame_boxes = inst.gt_boxes.tensor.to(torch.float32)
            nonempty = ((frame_boxes[:, 2:] - frame_boxes[:, :2]) > 0).all(dim=-1)
            boxes[nonempty, t] = frame_boxes[nonempty]
        ids = torch.stack(ids, dim=1)  # (N, T)

        keep = (ids != -1).any(dim=1) & (labels < num_classes)
        masks = masks[keep]
        boxes = boxes[keep] / boxes.new_tensor([w_pad, h_pad, w_pad, h_pad])
        targets.append(
            {
                "labels": labels[keep],
                "ids": ids[keep],
                "masks": masks,
                "match_masks": F.interpolate(masks, size=match_hw, mode="bilinear", align_corners=False),
                "boxes": boxes.clamp(min=0, max=1),
            }
        )
    return targets
