"""Image instance segmentation (COCO evaluation) from the heads of a pseudo-clip, as the original.

The test mapper repeats an image to a clip of T copies, decoded as one clip; the masks of the centre
frame are kept. Scores are rescored by mask quality and decayed by box overlap with better instances.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from detectron2.structures import BitMasks, Instances, pairwise_iou

from .clip import mask_quality_scores
from .masks import aligned_bilinear
from .types import ClipHeads

__all__ = ["image_scores", "infer_image"]


def image_scores(cls_probs: torch.Tensor, mask_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Class scores of image instances, best first.

    Each query's class probabilities are multiplied by its mask quality (mean probability inside the
    mask, `mask_quality_scores`); the queries are sorted by their best score; then each one's scores are
    multiplied by 1 - (its highest box IoU with a better query), boxes taken from the masks (logits > 0).

    Args:
        cls_probs: (n, K) class probabilities; mask_logits: (n, h, w) mask logits.

    Returns:
        scores (n, K) and mask_logits (n, h, w), in the sorted order.
    """
    scores = cls_probs * mask_quality_scores(mask_logits)[:, None]
    if len(scores) == 0:
        return scores, mask_logits
    order = scores.max(-1).values.sort(descending=True).indices
    scores, mask_logits = scores[order], mask_logits[order]
    boxes = BitMasks(mask_logits > 0).get_bounding_boxes()
    # two empty masks give 0/0: no penalty (their scores are 0 anyway)
    iou = pairwise_iou(boxes, boxes).nan_to_num(0.0)
    return scores * (1 - torch.triu(iou, diagonal=1).max(0).values)[:, None], mask_logits


def infer_image(
    heads: ClipHeads,
    mask_feats: torch.Tensor,
    image_size: tuple[int, int],
    output_size: tuple[int, int],
    match_stride: int,
    score_thresh: float,
    multi_cls_on: bool = True,
) -> Instances:
    """Instances of one image from the heads of its pseudo-clip.

    Queries whose best probability reaches min(the highest one, `score_thresh`) are kept; their masks are
    upsampled by `match_stride` (aligned bilinear) and cropped to `image_size`; `image_scores` rescores
    them. With `multi_cls_on` every (query, class) scored above `score_thresh` is an instance, else each
    query is one instance with its best class.

    Args:
        heads: the clip's heads (Q queries, K classes).
        mask_feats: (M, Hf, Wf) mask features of the kept (centre) frame.
        image_size: (h, w) of the network input; output_size: (H, W) of the output.

    Returns:
        Instances of `output_size` with scores, pred_classes, pred_masks (n, H, W) bool and pred_boxes
        (boxes of the masks).
    """
    best = heads.cls_probs.max(-1).values
    keep = torch.nonzero(best >= torch.clamp(best.max(), max=score_thresh)).flatten()
    masks = torch.einsum("qm,mhw->qhw", heads.mask_coeff[keep], mask_feats)
    masks = aligned_bilinear(masks[:, None], match_stride)[:, 0, : image_size[0], : image_size[1]]
    cls, masks = image_scores(heads.cls_probs[keep], masks)
    if multi_cls_on:
        index, labels = torch.nonzero(cls > score_thresh, as_tuple=True)
        scores, masks = cls[index, labels], masks[index]
    else:
        scores, labels = cls.max(-1)
    masks = F.interpolate(masks[:, None].float(), size=output_size, mode="bilinear", align_corners=False)
    masks = masks[:, 0] > 0
    result = Instances(tuple(output_size))
    result.scores = scores
    result.pred_classes = labels
    result.pred_masks = masks
    result.pred_boxes = BitMasks(masks).get_bounding_boxes()
    return result
