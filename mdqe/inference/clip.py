"""Per-clip post-processing of MDQE's decoder outputs (digest §5.2).

From the Q queries of one clip, keep the confident ones, drop near-duplicate queries (by embedding)
and near-duplicate masks (soft mask IoU, with a score penalty), and weight the class scores by the
mask quality.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .types import ClipHeads

__all__ = [
    "ClipInstances",
    "mask_quality_scores",
    "mask_suppression",
    "postprocess_clip",
    "select_queries",
]

# Queries whose normalised embeddings have a cosine similarity at least this high with a
# higher-scored candidate are duplicates.
_QUERY_DUPLICATE_SIMILARITY = 0.99
# A mask whose soft IoU with a higher-scored mask reaches this value is suppressed.
_MASK_SUPPRESSION_IOU = 0.5


@dataclass
class ClipInstances:
    """Instances kept from one clip, sorted by score (descending).

    Attributes:
        candidate_idx: (n0,) query indices kept by the score threshold and the query dedup, before the
            mask-based steps (the original's `valid_idx`).
        scores: (n,) mask-aware score of the best class.
        labels: (n,) contiguous class of the best class.
        cls_probs: (n, K) mask-aware class scores.
        mask_logits: (n, T, Hf, Wf) mask logits at stride `match_stride` of the padded input.
        query_embeds: (n, C) query embeddings.
    """

    candidate_idx: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor
    cls_probs: torch.Tensor
    mask_logits: torch.Tensor
    query_embeds: torch.Tensor

    def __len__(self) -> int:
        return self.scores.shape[0]

    def to(self, device: torch.device) -> ClipInstances:
        """The instances on `device`, with float32 mask logits and embeddings (as the tracker keeps them)."""
        return ClipInstances(
            candidate_idx=self.candidate_idx.to(device),
            scores=self.scores.to(device),
            labels=self.labels.to(device),
            cls_probs=self.cls_probs.to(device),
            mask_logits=self.mask_logits.to(device, torch.float32),
            query_embeds=self.query_embeds.to(device, torch.float32),
        )


def select_queries(
    cls_probs: torch.Tensor, query_embed: torch.Tensor, score_thresh: float, max_num: int
) -> torch.Tensor:
    """Confident, non-duplicate queries, best first.

    Keeps the queries whose best class score is >= min(score_thresh, top score) (so at least one
    survives), drops every query whose embedding has cosine similarity >= 0.99 with any
    higher-scored kept-by-threshold query (dropped ones included), then keeps at most `max_num`.

    Args:
        cls_probs: (Q, K) class probabilities.
        query_embed: (Q, C) query embeddings.

    Returns:
        (n,) int64 query indices, sorted by best class score (descending).
    """
    sorted_scores, order = cls_probs.max(dim=-1).values.sort(descending=True)
    threshold = min(score_thresh, float(sorted_scores[0]))
    keep = order[sorted_scores >= threshold]
    if keep.numel() > 1:
        embeds = F.normalize(query_embed[keep], dim=-1)
        similarity = torch.triu(embeds @ embeds.t(), diagonal=1)
        keep = keep[similarity.max(dim=0).values < _QUERY_DUPLICATE_SIMILARITY][:max_num]
    return keep


def mask_suppression(mask_logits: torch.Tensor) -> torch.Tensor:
    """Highest soft IoU of each mask with any higher-ranked mask ("mask NMS" of the original).

    Computed on every other frame when the clip has >= 5 frames, at half resolution (nearest):
    sIoU[i, j] = sum(soft_i * hard_j) / (sum(soft_i) + sum(hard_j) - sum(soft_i * hard_j) + 1), with
    soft = sigmoid(logits) and hard = soft > 0.5.

    Args:
        mask_logits: (n, T, Hf, Wf) mask logits, ordered by rank (best first).

    Returns:
        (n,) max over higher-ranked masks i < j of sIoU[i, j] (0 for the first mask).
    """
    if mask_logits.shape[1] >= 5:
        mask_logits = mask_logits[:, ::2]
    soft = F.interpolate(mask_logits, scale_factor=0.5, mode="nearest").flatten(1).sigmoid()
    hard = soft.gt(0.5).float()
    intersection = soft @ hard.t()
    union = soft.sum(-1)[:, None] + hard.sum(-1)[None] - intersection
    siou = intersection / (union + 1)
    return torch.triu(siou, diagonal=1).max(dim=0).values


def mask_quality_scores(mask_logits: torch.Tensor) -> torch.Tensor:
    """Mean foreground probability of each mask over the whole clip.

    Args:
        mask_logits: (n, T, Hf, Wf) mask logits.

    Returns:
        (n,) mean of sigmoid(logits) over the pixels where it exceeds 0.5 (0 for empty masks).
    """
    soft = mask_logits.sigmoid().flatten(1)
    hard = soft.gt(0.5).float()
    return (soft * hard).sum(1) / (hard.sum(1) + 1e-6)


def postprocess_clip(
    heads: ClipHeads, mask_feats: torch.Tensor, score_thresh: float, max_candidates: int
) -> ClipInstances:
    """The original's `inference_clip`: instances of one clip, best first.

    Args:
        heads: decoder outputs of the clip (Q queries, K classes).
        mask_feats: (M, T, Hf, Wf) mask features of the clip's frames.
        score_thresh: APPLY_CLS_THRES.
        max_candidates: cap after the query dedup (10 x TEST.DETECTIONS_PER_IMAGE).

    Returns:
        The kept instances; the top max(#(score > score_thresh), 1) by mask-aware score.
    """
    candidate_idx = select_queries(heads.cls_probs, heads.query_embed, score_thresh, max_candidates)
    cls_probs = heads.cls_probs[candidate_idx]
    query_embeds = heads.query_embed[candidate_idx]
    mask_logits = torch.einsum("qm,mthw->qthw", heads.mask_coeff[candidate_idx], mask_feats)

    nonblank = mask_logits.gt(0.0).flatten(1).any(dim=1)
    cls_probs, mask_logits, query_embeds = cls_probs[nonblank], mask_logits[nonblank], query_embeds[nonblank]
    if cls_probs.shape[0] > 0:
        max_iou = mask_suppression(mask_logits)
        cls_probs = cls_probs * (1 - max_iou[:, None])
        keep = max_iou < _MASK_SUPPRESSION_IOU
        cls_probs, mask_logits, query_embeds = cls_probs[keep], mask_logits[keep], query_embeds[keep]

    cls_probs = cls_probs * mask_quality_scores(mask_logits)[:, None]
    scores, labels = cls_probs.max(dim=-1)
    order = scores.sort(descending=True).indices
    order = order[: max(int((scores > score_thresh).sum()), 1)]
    return ClipInstances(
        candidate_idx=candidate_idx,
        scores=scores[order],
        labels=labels[order],
        cls_probs=cls_probs[order],
        mask_logits=mask_logits[order],
        query_embeds=query_embeds[order],
    )
