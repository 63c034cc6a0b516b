"""Label assignment of MDQE.

- `HungarianMatcher`: despite the (original) name, a one-to-many *dynamic-k* assignment (as in IDOL /
  OTA) of clip-level queries to GT instance tracks, run independently on every decoder output. The plain
  one-to-one Hungarian assignment is only the fallback when predicted boxes are NaN.
- `ClipPeakMatcher`: dense per-pixel targets on the stride-8 grid for the query-initialisation losses.

Everything is a pure function of tensors; the two modules only hold hyper-parameters (no state).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from detectron2.config import CfgNode, configurable
from scipy.optimize import linear_sum_assignment
from torch import nn

from .box_ops import box_xyxy_to_cxcywh, video_generalized_box_iou
from .build import MATCHER_REGISTRY
from .layers import pixel_centers

__all__ = [
    "ClipPeakMatcher",
    "HungarianMatcher",
    "batch_mask_costs",
    "center_prior",
    "clip_peak_targets",
    "dynamic_k_matching",
    "match_clip",
]

# Cost given to NaN/inf entries of the cost matrix.
_INVALID_COST = 1000.0
# Extra cost per frame in which a query's box centre is outside every GT box and centre region.
_OUTSIDE_PRIOR_COST = 100.0
# Added to the cost of already-matched queries when an unmatched GT must take a query.
_MATCHED_QUERY_PENALTY = 1e5


def batch_mask_costs(pred_masks: torch.Tensor, tgt_masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairwise mask costs between predictions and (soft) targets.

    Args:
        pred_masks: (Q, ...) mask logits, e.g. (Q, T, H, W).
        tgt_masks: (N, ...) targets in [0, 1] of the same trailing shape.

    Returns:
        bce: (Q, N) binary cross-entropy averaged over pixels;
        dice: (Q, N) 1 - (2 sum(p y) + 1) / (sum p + sum y + 1), p = sigmoid(logit).
    """
    pred = pred_masks.flatten(1).float()
    tgt = tgt_masks.flatten(1).float()
    # sum BCE(x, 1) y + BCE(x, 0) (1 - y) = sum BCE(x, 0) - sum x y, since BCE(x, 0) - BCE(x, 1) = x.
    bce = (F.softplus(pred).sum(-1)[:, None] - pred @ tgt.T) / pred.shape[1]
    prob = pred.sigmoid()
    dice = 1 - (2 * (prob @ tgt.T) + 1) / (prob.sum(-1)[:, None] + tgt.sum(-1)[None] + 1)
    return bce, dice


def center_prior(pred_boxes: torch.Tensor, gt_boxes: torch.Tensor, radius: float = 2.5 / 32) -> torch.Tensor:
    """Which predicted box centres lie inside a GT box or near a GT centre, per frame.

    Args:
        pred_boxes: (Q, T, 4) xyxy, normalised.
        gt_boxes: (N, T, 4) xyxy, normalised (zeros for absent frames).
        radius: half-size of the square centre region around each GT centre (normalised).

    Returns:
        (Q, T) bool: True where the query's centre is strictly inside some GT box of that frame or
        strictly within `radius` of some GT centre (in both axes).
    """
    centre = box_xyxy_to_cxcywh(pred_boxes)[..., None, :, :2]  # (Q, 1, T, 2)
    gt_centre = box_xyxy_to_cxcywh(gt_boxes)[..., :2]  # (N, T, 2)
    in_box = ((centre > gt_boxes[..., :2]) & (centre < gt_boxes[..., 2:])).all(dim=-1)  # (Q, N, T)
    in_centre = ((centre > gt_centre - radius) & (centre < gt_centre + radius)).all(dim=-1)
    return in_box.any(dim=1) | in_centre.any(dim=1)


def _keep_cheapest_gt(matching: torch.Tensor, cost: torch.Tensor) -> torch.Tensor:
    """Queries claimed by several GTs keep only their overall cheapest GT.

    The argmin runs over all GTs, as in the original (not only over the claiming ones).
    """
    multi = matching.sum(dim=1) > 1
    if multi.any():
        matching[multi] = F.one_hot(cost[multi].argmin(dim=1), cost.shape[1]).bool()
    return matching


def dynamic_k_matching(
    cost: torch.Tensor, ious: torch.Tensor, n_candidate_k: int = 10
) -> tuple[torch.Tensor, torch.Tensor]:
    """One-to-many dynamic-k assignment (IDOL / OTA).

    Each GT j takes its k_j cheapest queries, k_j = max(2, int(sum of its top-`n_candidate_k` IoUs
    clamped at 0)); a query claimed by several GTs keeps its cheapest GT; then, while some GT has no
    query and some query is free, matched queries are penalised and every unmatched GT takes its
    cheapest query (conflicts resolved again).

    Args:
        cost: (Q, N) assignment cost (lower is better).
        ious: (Q, N) IoU-like quality of each pair, used only to size k.
        n_candidate_k: number of top IoUs summed for k (capped at Q).

    Returns:
        query_idx: (M,) int64 matched queries, ascending; gt_idx: (M,) int64 their GT.
    """
    num_queries, num_gt = cost.shape
    if num_gt == 0:
        empty = torch.zeros(0, dtype=torch.int64, device=cost.device)
        return empty, empty.clone()
    cost = cost.clone()
    topk_ious = ious.clamp(min=0).topk(min(n_candidate_k, num_queries), dim=0).values
    dynamic_ks = topk_ious.sum(dim=0).int().clamp(min=2, max=num_queries)  # (N,)
    k_max = int(dynamic_ks.max())
    candidates = cost.topk(k_max, dim=0, largest=False).indices  # (k_max, N), cheapest first
    take = torch.arange(k_max, device=cost.device)[:, None] < dynamic_ks[None]
    matching = torch.zeros_like(cost, dtype=torch.bool).scatter_(0, candidates, take)
    matching = _keep_cheapest_gt(matching, cost)

    while (~matching.any(dim=0)).any() and (~matching.any(dim=1)).any():
        cost[matching.any(dim=1)] += _MATCHED_QUERY_PENALTY
        unmatched_gt = (~matching.any(dim=0)).nonzero().squeeze(1)
        matching[cost[:, unmatched_gt].argmin(dim=0), unmatched_gt] = True
        matching = _keep_cheapest_gt(matching, cost)

    query_idx = matching.any(dim=1).nonzero().squeeze(1)
    gt_idx = matching[query_idx].to(torch.uint8).argmax(dim=1)
    return query_idx, gt_idx


def match_clip(
    pred_logits: torch.Tensor,
    pred_boxes: torch.Tensor,
    pred_masks: torch.Tensor,
    target: dict[str, torch.Tensor],
    cost_class: float = 1.0,
    cost_box: float = 2.0,
    cost_dice: float = 4.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Assign the queries of one clip to its GT instance tracks.

    Cost = cost_class * (-p[label]) + cost_box * (L1 over all T*4 coordinates + 1 - clip GIoU)
    + cost_dice * (BCE + dice), plus 100 per frame in which the query's box centre fails the centre
    prior; then `dynamic_k_matching`. With NaN boxes, a one-to-one Hungarian assignment on the class
    and mask costs instead.

    Args:
        pred_logits: (Q, K) class logits.
        pred_boxes: (Q, T, 4) xyxy normalised.
        pred_masks: (Q, T, h, w) mask logits at the resolution of target["match_masks"].
        target: a `prepare_targets` dict (labels (N,), boxes (N, T, 4), match_masks (N, T, h, w)).

    Returns:
        query_idx: (M,) int64; gt_idx: (M,) int64 indices into the target's instances.
    """
    labels = target["labels"]
    device = pred_logits.device
    if labels.numel() == 0:
        empty = torch.zeros(0, dtype=torch.int64, device=device)
        return empty, empty.clone()

    class_cost = -pred_logits.float().sigmoid()[:, labels]  # (Q, N)
    bce, dice = batch_mask_costs(pred_masks, target["match_masks"])
    mask_cost = bce + dice

    if torch.isnan(pred_boxes).any():
        cost = cost_class * class_cost + cost_dice * mask_cost
        cost = torch.nan_to_num(cost, nan=_INVALID_COST, posinf=_INVALID_COST, neginf=_INVALID_COST)
        rows, cols = linear_sum_assignment(cost.cpu().numpy())
        return (
            torch.as_tensor(rows, dtype=torch.int64, device=device),
            torch.as_tensor(cols, dtype=torch.int64, device=device),
        )

    gt_boxes = target["boxes"].to(pred_boxes)
    valid = ((gt_boxes[..., 2:] - gt_boxes[..., :2]) > 0).all(dim=-1)  # (N, T)
    giou = video_generalized_box_iou(pred_boxes, gt_boxes, valid)  # (Q, N)
    box_cost = torch.cdist(pred_boxes.flatten(1), gt_boxes.flatten(1), p=1) + (1 - giou)
    cost = cost_class * class_cost + cost_box * box_cost + cost_dice * mask_cost
    cost = torch.nan_to_num(cost, nan=_INVALID_COST, posinf=_INVALID_COST, neginf=_INVALID_COST)
    outside_frames = (~center_prior(pred_boxes, gt_boxes)).sum(dim=-1)  # (Q,)
    cost = cost + _OUTSIDE_PRIOR_COST * outside_frames[:, None]
    return dynamic_k_matching(cost, giou)


@MATCHER_REGISTRY.register()
class HungarianMatcher(nn.Module):
    """One-to-many dynamic-k matcher of MDQE (named after the original's class); see `match_clip`."""

    @configurable
    def __init__(self, cost_class: float = 1.0, cost_box: float = 2.0, cost_dice: float = 4.0):
        """
        Args:
            cost_class: weight of the class cost (1 in MDQE).
            cost_box: weight of the box cost (MODEL.MDQE.BOX_WEIGHT).
            cost_dice: weight of the mask cost, BCE + dice (MODEL.MDQE.DICE_WEIGHT).
        """
        super().__init__()
        if cost_class == 0 and cost_dice == 0:
            raise ValueError("HungarianMatcher: cost_class and cost_dice cannot both be 0")
        self.cost_class = cost_class
        self.cost_box = cost_box
        self.cost_dice = cost_dice

    @classmethod
    def from_config(cls, cfg: CfgNode) -> dict[str, float]:
        mdqe = cfg.MODEL.MDQE
        return {"cost_class": 1.0, "cost_box": mdqe.BOX_WEIGHT, "cost_dice": mdqe.DICE_WEIGHT}

    @torch.no_grad()
    def forward(
        self,
        pred_logits: torch.Tensor,
        pred_boxes: torch.Tensor,
        pred_masks: torch.Tensor,
        targets: list[dict[str, torch.Tensor]],
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """
        Args:
            pred_logits: (B, Q, K) class logits of one decoder output.
            pred_boxes: (B, Q, T, 4) xyxy normalised.
            pred_masks: (B, Q, T, h, w) mask logits.
            targets: B `prepare_targets` dicts.

        Returns:
            B pairs (query_idx (M_b,), gt_idx (M_b,)), int64.
        """
        with torch.autocast(device_type=pred_masks.device.type, enabled=False):
            return [
                match_clip(logits, boxes, masks, target, self.cost_class, self.cost_box, self.cost_dice)
                for logits, boxes, masks, target in zip(pred_logits, pred_boxes, pred_masks, targets)
            ]


def clip_peak_targets(
    target: dict[str, torch.Tensor], grid_hw: tuple[int, int], num_classes: int, mask_on: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pixel targets of one clip on an (H, W) grid, for the query-initialisation losses.

    Instances (with a non-empty box in some frame) are visited from the smallest to the largest mean box
    area. In each frame where instance n is present, its positive pixels are those inside its mask
    (bilinearly downsampled to the grid, > 0.5), or the single pixel closest to its box centre if none
    (without masks: pixels within normalised distance d < 0.5). Positive pixels get the instance's
    class and id and a centre-closeness weight 1 - 2 clamp(d, 0, 0.5), with
    d = sum_xy ((centre - pixel) / max(box wh, 0.05))^2; their distance is then set to 1e9 for every
    instance, so a larger instance visited later still takes over overlapping mask pixels, with weight 0.

    Args:
        target: a `prepare_targets` dict (labels (N,), ids (N, T), boxes (N, T, 4), masks (N, T, Hp, Wp)).
        grid_hw: (H, W) of the grid (stride-8 encoder level).
        num_classes: K.
        mask_on: use masks for the positives (MODEL.MASK_ON).

    Returns:
        labels: (T, H*W) int64 class, -1 for background;
        dist: (T, H*W, K) float32 weight at the pixel's class, 0 elsewhere;
        ids: (T, H*W) int64 annotation id, -1 for background.
    """
    ids = target["ids"]
    device = ids.device
    num_frames = ids.shape[1]
    num_pixels = grid_hw[0] * grid_hw[1]
    out_labels = torch.full((num_frames, num_pixels), -1, dtype=torch.int64, device=device)
    out_dist = torch.zeros((num_frames, num_pixels, num_classes), dtype=torch.float32, device=device)
    out_ids = torch.full((num_frames, num_pixels), -1, dtype=torch.int64, device=device)

    boxes = box_xyxy_to_cxcywh(target["boxes"])  # (N, T, 4)
    order = boxes[..., 2:].prod(dim=-1).mean(dim=-1).argsort(stable=True)
    valid = (boxes[..., 2:] > 0).all(dim=-1).any(dim=-1) & (target["labels"] >= 0)
    order = order[valid[order]]
    if order.numel() == 0:
        return out_labels, out_dist, out_ids

    boxes, labels, ids = boxes[order], target["labels"][order], ids[order]
    ref = pixel_centers(*grid_hw, device=device)  # (P, 2)
    offsets = (boxes[..., None, :2] - ref) / boxes[..., None, 2:].clamp(min=0.05)  # (n, T, P, 2)
    dist = (offsets**2).sum(dim=-1)  # (n, T, P)
    if mask_on:
        masks = F.interpolate(target["masks"][order].float(), grid_hw, mode="bilinear", align_corners=False)
        inside = masks.flatten(2) > 0.5  # (n, T, P)

    # Sequential over instances: each one changes `dist` for the next ones.
    for n in range(len(order)):
        d = dist[n]  # (T, P)
        positives = inside[n] if mask_on else d < 0.5
        nearest = F.one_hot(d.argmin(dim=-1), num_pixels).bool()
        positives = torch.where(positives.any(dim=-1, keepdim=True), positives, nearest)
        positives &= (ids[n] != -1)[:, None]
        label = labels[n]
        out_labels.masked_fill_(positives, label)
        out_ids = torch.where(positives, ids[n][:, None], out_ids)
        out_dist[..., label] = torch.where(positives, 1 - 2 * d.clamp(min=0, max=0.5), out_dist[..., label])
        dist.masked_fill_(positives[None], 1e9)
    return out_labels, out_dist, out_ids


class ClipPeakMatcher(nn.Module):
    """Per-pixel query-initialisation targets of a batch of clips (see `clip_peak_targets`)."""

    def __init__(self, num_classes: int, mask_on: bool = True):
        super().__init__()
        self.num_classes = num_classes
        self.mask_on = mask_on

    @torch.no_grad()
    def forward(
        self, targets: list[dict[str, torch.Tensor]], grid_hw: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """
        Args:
            targets: B `prepare_targets` dicts.
            grid_hw: (H, W) of the grid.

        Returns:
            labels (B, T, H*W) int64, dist (B, T, H*W, K) float32, ids (B, T, H*W) int64.
        """
        per_clip = [clip_peak_targets(t, grid_hw, self.num_classes, self.mask_on) for t in targets]
        labels, dist, ids = zip(*per_clip)
        return torch.stack(labels), torch.stack(dist), torch.stack(ids)
