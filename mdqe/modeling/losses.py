"""The loss functions of MDQE's criterion, pure functions of tensors (`SetCriterion` weighs and sums them).

- masks: BCE and dice, and their inter-instance repulsion forms (`interinst_*`) that also push a mask
  off the nearby instances;
- classes: the sigmoid focal loss of the queries, and the distance-weighted focal loss of the
  query-initialisation class map on its most uncertain points (`query_init_class_loss`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .box_ops import video_box_iou

__all__ = [
    "dice_loss",
    "get_uncertain_point_indices_on_grid",
    "interinst_dice_loss",
    "interinst_sigmoid_ce_loss",
    "interinst_union_masks",
    "query_init_class_loss",
    "sigmoid_ce_loss",
    "sigmoid_focal_loss",
    "weighted_sigmoid_focal_loss",
]


# ----------------------------------------------------------------------------------------- mask losses
def sigmoid_ce_loss(inputs: torch.Tensor, targets: torch.Tensor, num_masks: float) -> torch.Tensor:
    """Mean-over-pixels BCE, summed over masks / num_masks.

    Args:
        inputs: (N, ...) mask logits; targets: (N, ...) soft targets in [0, 1].
    """
    loss = F.binary_cross_entropy_with_logits(inputs.flatten(1), targets.flatten(1), reduction="none")
    return loss.mean(dim=1).sum() / max(num_masks, 1)


def dice_loss(inputs: torch.Tensor, targets: torch.Tensor, num_masks: float) -> torch.Tensor:
    """1 - (2 sum(p y) + 1) / (sum p + sum y + 1) per mask, summed / num_masks.

    Args:
        inputs: (N, ...) mask logits; targets: (N, ...) soft targets in [0, 1].
    """
    prob = inputs.float().sigmoid().flatten(1)
    targets = targets.flatten(1).float()
    loss = 1 - (2 * (prob * targets).sum(1) + 1) / (prob.sum(1) + targets.sum(1) + 1)
    return loss.sum() / max(num_masks, 1)


def interinst_sigmoid_ce_loss(
    inputs: torch.Tensor, targets: torch.Tensor, union_masks: torch.Tensor, num_masks: float
) -> torch.Tensor:
    """BCE weighted 2 on the pixels of the target and of its nearby instances, 1 elsewhere.

    Args:
        inputs: (N, ...) mask logits; targets: (N, ...) soft targets.
        union_masks: (N, ...) 0/1 union of the target's and its neighbours' masks (`interinst_union_masks`).

    Returns:
        sum over masks of (sum w * BCE / sum w), / num_masks.
    """
    weights = union_masks.flatten(1) + 1
    loss = F.binary_cross_entropy_with_logits(inputs.flatten(1), targets.flatten(1), reduction="none")
    loss = (loss * weights).sum(1) / weights.sum(1).clamp(min=1)
    return loss.sum() / max(num_masks, 1)


def interinst_dice_loss(
    inputs: torch.Tensor, targets: torch.Tensor, union_masks: torch.Tensor, num_masks: float
) -> torch.Tensor:
    """Dice loss that also rewards background probability on nearby non-target instances.

    With p = sigmoid(z), y the target and y_o = union & (y < 0.5) the neighbours' pixels:
    1 - (2 sum(p y) + sum(sigmoid(-z) y_o) + 1) / (sum p + sum y + sum y_o + 1), summed / num_masks.

    Args:
        inputs: (N, ...) mask logits; targets: (N, ...) soft targets; union_masks: (N, ...) 0/1.
    """
    others = ((union_masks > 0.5) & ((1 - targets) > 0.5)).flatten(1).float()
    logits = inputs.float().flatten(1)
    fg, bg = logits.sigmoid(), (-logits).sigmoid()
    targets = targets.flatten(1).float()
    numerator = 2 * (fg * targets).sum(1) + (bg * others).sum(1)
    denominator = fg.sum(1) + targets.sum(1) + others.sum(1)
    loss = 1 - (numerator + 1) / (denominator + 1)
    return loss.sum() / max(num_masks, 1)


@torch.no_grad()
def interinst_union_masks(
    tgt_masks: torch.Tensor, tgt_boxes: torch.Tensor, clip_idx: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """Union of the masks of each matched target and of the targets near it.

    Two targets are near if they belong to the same clip and their boxes, widened to at least 0.05 in
    width and height about the centre, have an IoU > `iou_threshold` in some frame. A target is always
    near itself; duplicate matches of one GT are separate targets.

    Args:
        tgt_masks: (N, T, h, w) soft masks of the matched targets.
        tgt_boxes: (N, T, 4) their xyxy normalised boxes (zeros where absent).
        clip_idx: (N,) clip of each target.

    Returns:
        (N, T, h, w) float 0/1: union over near targets j of (mask_j > 0.5).
    """
    centre = 0.5 * (tgt_boxes[..., :2] + tgt_boxes[..., 2:])
    half = 0.5 * (tgt_boxes[..., 2:] - tgt_boxes[..., :2]).clamp(min=0.05)
    widened = torch.cat([centre - half, centre + half], dim=-1)
    iou = video_box_iou(widened, widened)[0]  # (N, N, T)
    near = (iou.amax(dim=-1) * (clip_idx[:, None] == clip_idx[None])) > iou_threshold  # (N, N)
    binary = (tgt_masks > 0.5).flatten(1).float()
    return ((near.float() @ binary) > 0).float().view_as(tgt_masks)


# ------------------------------------------------------------------------------------ class losses
def sigmoid_focal_loss(
    inputs: torch.Tensor,
    targets: torch.Tensor,
    no_obj_weight: float = 0.1,
    alpha: float = 0.25,
    gamma: float = 2.0,
) -> torch.Tensor:
    """Focal loss summed over classes, weighted-averaged over predictions.

    Args:
        inputs: (N, K) logits; targets: (N, K) one-hot (all zeros for unmatched predictions).
        no_obj_weight: weight of predictions without any positive class (others weigh 1).

    Returns:
        sum_n w_n sum_k FL(n, k) / max(sum_n w_n, 1).
    """
    inputs = inputs.float()
    prob = inputs.sigmoid()
    ce = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    loss = alpha_t * ce * (1 - p_t) ** gamma
    is_obj = (targets > 0).any(dim=-1).float()
    weight = is_obj + no_obj_weight * (targets == 0).all(dim=-1).float()
    return (loss.sum(dim=-1) * weight).sum() / weight.sum().clamp(min=1)


def weighted_sigmoid_focal_loss(
    inputs: torch.Tensor,
    targets: torch.Tensor,
    dist_weight: torch.Tensor,
    num_boxes: torch.Tensor,
    alpha: float = 2.0,
    gamma: float = 2.0,
) -> torch.Tensor:
    """Focal loss with a per-point closeness weight (query-initialisation class map).

    Per point and class: BCE * p_t^alpha * g_t^gamma, with p_t = 1 - p on positives and p on negatives,
    g_t = dist on positives and 1 - dist on negatives.

    Args:
        inputs: (R, P, K) logits; targets: (R, P, K) one-hot; dist_weight: (R, P, K) in [0, 1].
        num_boxes: (R,) normaliser per map (number of positive points, >= 1).

    Returns:
        mean over R of (sum over points and classes / num_boxes).
    """
    inputs = inputs.float()
    prob = inputs.sigmoid()
    ce = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    p_t = (1 - prob) * targets + prob * (1 - targets)
    g_t = dist_weight * targets + (1 - dist_weight) * (1 - targets)
    loss = ce * p_t**alpha * g_t**gamma
    return (loss.sum(dim=(-2, -1)) / num_boxes).mean()


def get_uncertain_point_indices_on_grid(uncertainty_map: torch.Tensor, num_points: int) -> torch.Tensor:
    """Indices of the most uncertain grid points (PointRend's `get_uncertain_point_coords_on_grid`).

    Args:
        uncertainty_map: (R, 1, H, W) uncertainty, higher = more uncertain.
        num_points: points per map; capped at H*W.

    Returns:
        (R, min(num_points, H*W)) int64 flat indices into H*W, most uncertain first.
    """
    num_maps, _, height, width = uncertainty_map.shape
    num_points = min(height * width, num_points)
    return uncertainty_map.view(num_maps, height * width).topk(num_points, dim=1).indices


def query_init_class_loss(
    logits: torch.Tensor, labels: torch.Tensor, dist: torch.Tensor, num_points: int = 12544
) -> torch.Tensor:
    """Distance-weighted focal loss of the query-initialisation class map on its most uncertain points.

    Uncertainty per point: sum_k [K (1 - p_k) y_k + p_k (1 - y_k)].

    Args:
        logits: (B, T, H, W, K) class logits on the stride-8 level.
        labels: (B, T, H*W) int64 target class per pixel, -1 for background (`ClipPeakMatcher`).
        dist: (B, T, H*W, K) closeness weight per pixel at its class.
        num_points: uncertain points per frame (12544 in MDQE; all points when H*W is smaller).
    """
    batch, frames, height, width, num_classes = logits.shape
    logits = logits.reshape(batch * frames, height * width, num_classes)
    labels = labels.reshape(batch * frames, height * width)
    dist = dist.reshape(batch * frames, height * width, num_classes)
    one_hot = F.one_hot(labels.clamp(min=0), num_classes).to(logits.dtype) * (labels >= 0)[..., None]

    if num_points < height * width:
        with torch.no_grad():
            prob = logits.float().sigmoid()
            uncertainty = (num_classes * (1 - prob) * one_hot + prob * (1 - one_hot)).sum(dim=-1)
            point_idx = get_uncertain_point_indices_on_grid(
                uncertainty.view(-1, 1, height, width), num_points
            )[..., None]  # (BT, P', 1)
        logits = logits.gather(1, point_idx.expand(-1, -1, num_classes))
        one_hot = one_hot.gather(1, point_idx.expand(-1, -1, num_classes))
        dist = dist.gather(1, point_idx.expand(-1, -1, num_classes))

    num_boxes = one_hot.any(dim=-1).sum(dim=1).clamp(min=1)
    return weighted_sigmoid_focal_loss(logits, one_hot, dist, num_boxes)
