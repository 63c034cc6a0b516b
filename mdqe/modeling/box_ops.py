"""Box overlap measures used by MDQE's matcher and criterion.

Boxes are (x0, y0, x1, y1) unless a name says cxcywh, usually normalised to [0, 1]; this module holds the
model's only conversions between the two. The IoU/GIoU variants here differ from torchvision's in two ways
the original relies on: unions and enclosing areas are clamped to >= 1e-3 before dividing, and the GIoU of
a pair of boxes that do not intersect is defined as 0 (not the negative value of the formula).
"""

from __future__ import annotations

import torch

__all__ = [
    "box_area",
    "box_cxcywh_to_xyxy",
    "box_xyxy_to_cxcywh",
    "circumscribed_boxes",
    "matched_boxlist_giou",
    "video_box_iou",
    "video_generalized_box_iou",
]

_MIN_AREA = 1e-3


def box_cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """boxes: (..., 4) (cx, cy, w, h) -> (..., 4) (x0, y0, x1, y1)."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)


def box_xyxy_to_cxcywh(boxes: torch.Tensor) -> torch.Tensor:
    """boxes: (..., 4) (x0, y0, x1, y1) -> (..., 4) (cx, cy, w, h)."""
    x0, y0, x1, y1 = boxes.unbind(-1)
    return torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], dim=-1)


def circumscribed_boxes(boxes: torch.Tensor) -> torch.Tensor:
    """The box enclosing an instance's per-frame boxes, each clamped to the image.

    Args:
        boxes: (B, Q, T, 4) normalised (cx, cy, w, h).

    Returns:
        (B, Q, 4) normalised (cx, cy, w, h).
    """
    xyxy = box_cxcywh_to_xyxy(boxes).clamp(min=0, max=1)
    enclosing = torch.cat([xyxy[..., :2].min(dim=-2).values, xyxy[..., 2:].max(dim=-2).values], dim=-1)
    return box_xyxy_to_cxcywh(enclosing)


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """boxes: (..., 4) xyxy -> (...) area (negative for inverted boxes, as in the original)."""
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def video_box_iou(
    boxes1: torch.Tensor, boxes2: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-frame IoU of every pair of box tracks.

    Args:
        boxes1: (N, T, 4) xyxy.
        boxes2: (M, T, 4) xyxy.

    Returns:
        iou, inter, union: each (N, M, T); union is clamped to >= 1e-3.
    """
    area1 = box_area(boxes1)[:, None]  # (N, 1, T)
    area2 = box_area(boxes2)[None]  # (1, M, T)
    lt = torch.max(boxes1[:, None, :, :2], boxes2[None, :, :, :2])
    rb = torch.min(boxes1[:, None, :, 2:], boxes2[None, :, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = (area1 + area2 - inter).clamp(min=_MIN_AREA)
    return inter / union, inter, union


def video_generalized_box_iou(
    boxes1: torch.Tensor, boxes2: torch.Tensor, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Clip-level GIoU of every pair of box tracks: the mean of per-frame GIoUs.

    Args:
        boxes1: (N, T, 4) xyxy, e.g. predictions.
        boxes2: (M, T, 4) xyxy, e.g. ground truth.
        valid: (M, T) bool, frames where `boxes2` exists; the mean runs over those frames only (a track
            with no valid frame gets 0). None: mean over all T frames.

    Returns:
        (N, M) GIoU in [-1, 1]; a frame where the two boxes do not intersect contributes 0.
    """
    iou, inter, union = video_box_iou(boxes1, boxes2)
    lt = torch.min(boxes1[:, None, :, :2], boxes2[None, :, :, :2])
    rb = torch.max(boxes1[:, None, :, 2:], boxes2[None, :, :, 2:])
    wh = (rb - lt).clamp(min=0)
    enclosing = wh[..., 0] * wh[..., 1]
    giou = iou - (enclosing - union) / enclosing.clamp(min=_MIN_AREA)
    giou = torch.where(inter > 0, giou, torch.zeros_like(giou))  # (N, M, T)
    if valid is None:
        return giou.mean(dim=-1)
    giou = torch.where(valid[None], giou, torch.zeros_like(giou))
    return giou.sum(dim=-1) / valid.to(giou.dtype).sum(dim=-1).clamp(min=1)[None]


def matched_boxlist_giou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """GIoU of matched pairs of boxes.

    Args:
        boxes1, boxes2: (N, 4) xyxy, pairwise matched.

    Returns:
        (N,) GIoU; 0 for pairs that do not intersect.
    """
    lt = torch.max(boxes1[:, :2], boxes2[:, :2])
    rb = torch.min(boxes1[:, 2:], boxes2[:, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[:, 0] * wh[:, 1]
    union = box_area(boxes1) + box_area(boxes2) - inter
    lt_enc = torch.min(boxes1[:, :2], boxes2[:, :2])
    rb_enc = torch.max(boxes1[:, 2:], boxes2[:, 2:])
    wh_enc = (rb_enc - lt_enc).clamp(min=0)
    enclosing = wh_enc[:, 0] * wh_enc[:, 1]
    giou = inter / union.clamp(min=_MIN_AREA) - (enclosing - union) / enclosing.clamp(min=_MIN_AREA)
    return torch.where(inter > 0, giou, torch.zeros_like(giou))
