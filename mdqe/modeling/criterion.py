"""MDQE's criterion: matching, then every loss term weighted (the loss functions are in `losses`).

Two groups of terms, all returned already weighted (38 entries with the default 7 decoder outputs):

- query initialisation (once per batch): `loss_sem_cls_query_init`, a distance-weighted focal loss of the
  stride-8 class map against `ClipPeakMatcher` targets on its most uncertain points, and the contrastive
  terms `loss_reid_query_init` / `loss_reid_query_init_aux` on the track embeddings of the initial
  queries;
- per decoder output (last layer un-suffixed, then `_0` (warm-up) .. `_{L-2}`): `loss_cls` (sigmoid focal
  over all queries), `loss_bbox` / `loss_giou` (matched per-frame boxes), `loss_mask` / `loss_dice` on
  the full stride-4 masks against soft targets, in the inter-instance repulsion form by default.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from detectron2.config import CfgNode, configurable
from detectron2.utils.events import EventStorage, get_event_storage
from torch import nn

from .box_ops import matched_boxlist_giou
from .build import CRITERION_REGISTRY, build_matcher, num_grid_queries
from .losses import (
    dice_loss,
    get_uncertain_point_indices_on_grid,
    interinst_dice_loss,
    interinst_sigmoid_ce_loss,
    interinst_union_masks,
    query_init_class_loss,
    sigmoid_ce_loss,
    sigmoid_focal_loss,
    weighted_sigmoid_focal_loss,
)
from .matcher import ClipPeakMatcher
from .query_init import grid_relative_positions, query_grid_size

__all__ = [
    "DEFAULT_LOSSES",
    "LayerMatch",
    "LossSpec",
    "QueryInitMatch",
    "SetCriterion",
    "dice_loss",
    "get_uncertain_point_indices_on_grid",
    "interinst_dice_loss",
    "interinst_sigmoid_ce_loss",
    "interinst_union_masks",
    "loss",
    "loss_weights_from_config",
    "query_init_class_loss",
    "query_init_recall",
    "query_instance_ids",
    "sigmoid_ce_loss",
    "sigmoid_focal_loss",
    "weighted_sigmoid_focal_loss",
]

_AUX_SUFFIX = re.compile(r"_\d+$")


# ------------------------------------------------------------------------------ query initialisation
def _average_over_processes(count: float, device: torch.device) -> float:
    """The mean of `count` over the processes of the default group (`count` itself when not distributed)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return count
    total = torch.tensor([count], device=device)
    torch.distributed.all_reduce(total)
    return total.item() / torch.distributed.get_world_size()


@torch.no_grad()
def query_instance_ids(
    pixel_ids: torch.Tensor, grid_hw: tuple[int, int], coords: torch.Tensor
) -> torch.Tensor:
    """GT instance id at each initial query's point (nearest pixel, border padding).

    Args:
        pixel_ids: (B, T, H*W) int64 id per grid pixel (`ClipPeakMatcher`), -1 for background.
        grid_hw: (H, W).
        coords: (B, T, Q, 2) normalised (x, y) of the selected query points.

    Returns:
        (B, T, Q) int64.
    """
    batch, frames, num_queries, _ = coords.shape
    height, width = grid_hw
    # Sample the pixel index rather than the id itself, so that any int64 id survives the float map.
    index_map = torch.arange(height * width, device=coords.device, dtype=torch.float32)
    index_map = index_map.view(1, 1, height, width).expand(batch * frames, 1, height, width)
    grid = 2 * coords.reshape(batch * frames, 1, num_queries, 2).float() - 1
    picked = F.grid_sample(index_map, grid, mode="nearest", padding_mode="border", align_corners=False)
    picked = picked.view(batch, frames, num_queries).long()
    return pixel_ids.gather(2, picked)


# ------------------------------------------------------------------------------------ the criterion
DEFAULT_LOSSES = ("query_init_labels", "query_init_reid", "labels", "boxes", "masks")


@dataclass(frozen=True)
class LossSpec:
    """A loss of `SetCriterion`: its name in MODEL.MDQE.LOSSES, the terms it returns and whether it runs on
    every decoder output (`LayerMatch`) or once per batch on the initial queries (`QueryInitMatch`)."""

    name: str
    terms: tuple[str, ...]
    per_layer: bool


def loss(name: str, *terms: str, per_layer: bool = True) -> Callable[[Callable], Callable]:
    """Mark a `SetCriterion` method as the loss `name`, returning the dict of `terms` (unweighted)."""

    def mark(method: Callable) -> Callable:
        method.loss_spec = LossSpec(name, terms, per_layer)
        return method

    return mark


@dataclass
class QueryInitMatch:
    """The initial queries of a batch and their dense targets: the input of the query-init losses.

    Attributes:
        rpn_logits: (B, T, H, W, K) class logits of the stride-8 level.
        labels, dist, pixel_ids: (B, T, H*W), (B, T, H*W, K), (B, T, H*W) `ClipPeakMatcher` targets.
        embeds: (B, T, Q, E) track embeddings of the initial queries (before association).
        query_ids: (B, T, Q) GT id at each initial query, -1 for background.
    """

    rpn_logits: torch.Tensor
    labels: torch.Tensor
    dist: torch.Tensor
    pixel_ids: torch.Tensor
    embeds: torch.Tensor
    query_ids: torch.Tensor


@dataclass
class LayerMatch:
    """One decoder output, its targets and its matching: the input of the per-layer losses.

    Attributes:
        pred_logits: (B, Q, K); pred_boxes: (B, Q, T, 4) xyxy; mask_coeff: (B, Q, M);
        mask_feats: (B, M, T, h, w); targets: B `prepare_targets` dicts;
        indices: per clip (query_idx, gt_idx); num_masks: matched pairs (averaged over processes, >= 1);
        clip_idx, query_idx: (P,) clip and query of every matched pair, clip-major.
    """

    pred_logits: torch.Tensor
    pred_boxes: torch.Tensor
    mask_coeff: torch.Tensor
    mask_feats: torch.Tensor
    targets: list[dict[str, torch.Tensor]]
    indices: list[tuple[torch.Tensor, torch.Tensor]]
    num_masks: float
    clip_idx: torch.Tensor
    query_idx: torch.Tensor

    def matched_targets(self, key: str) -> torch.Tensor:
        """targets[b][key][gt_idx] of every matched pair, concatenated: (P, ...)."""
        return torch.cat([t[key][g] for t, (_, g) in zip(self.targets, self.indices)])


def _event_storage() -> EventStorage | None:
    try:
        return get_event_storage()
    except AssertionError:  # outside a training loop
        return None


def query_init_recall(query_ids: torch.Tensor, pixel_ids: torch.Tensor) -> float:
    """Fraction of the (frame, instance) pairs on the grid that some initial query of the frame lands on.

    Args:
        query_ids: (B, T, Q) GT id at each initial query; pixel_ids: (B, T, H*W) GT id per grid pixel
            (-1 for background in both).
    """
    pixel_ids, query_ids = pixel_ids.flatten(0, 1), query_ids.flatten(0, 1)
    span = int(pixel_ids.max().clamp(min=0)) + 1
    frame = torch.arange(len(pixel_ids), device=pixel_ids.device)[:, None] * span
    present = (frame + pixel_ids)[pixel_ids >= 0].unique()
    hit = (frame + query_ids)[query_ids >= 0].unique()
    return float(torch.isin(present, hit).sum()) / max(len(present), 1)


@CRITERION_REGISTRY.register()
class SetCriterion(nn.Module):
    """All training losses of MDQE (see the module docstring).

    Each loss is a method marked with `@loss(name, *terms)`; MODEL.MDQE.LOSSES picks them by name and
    every term needs a weight (checked at build time). A subclass adds a loss with another marked method.
    """

    @configurable
    def __init__(
        self,
        *,
        num_classes: int,
        matcher: nn.Module,
        weight_dict: dict[str, float],
        eos_coef: float,
        num_queries: int,
        losses: Sequence[str] = DEFAULT_LOSSES,
        num_layers: int | None = None,
        deep_supervision: bool = True,
        window_inter_frame_asso: int = 5,
        interinst_mask_loss_enabled: bool = True,
        interinst_mask_threshold: float = 0.1,
        mask_on: bool = True,
        num_points: int = 12544,
        deterministic_sampling: bool = False,
    ):
        """
        Args:
            num_classes: K.
            matcher: assigns queries to GT tracks per decoder output.
            weight_dict: weight per loss term; layer-suffixed terms (`loss_cls_0`) use their base term's.
            eos_coef: focal-loss weight of unmatched queries (MODEL.MDQE.NO_OBJECT_WEIGHT).
            num_queries: Q, a perfect square (the query grid).
            losses: the losses to compute, by name (`loss_specs`), in the order of the returned dict.
            num_layers: expected number of decoder outputs, DEC_LAYERS + 1 (None: not checked).
            deep_supervision: also supervise every earlier decoder output.
            window_inter_frame_asso: grid window w of the contrastive candidates.
            interinst_mask_loss_enabled: use the inter-instance repulsion mask losses.
            interinst_mask_threshold: box IoU above which instances count as near.
            mask_on: query-init positives from masks (else from box-centre distance).
            num_points: uncertain points per frame of the query-init class loss.
            deterministic_sampling: draw the contrastive samples in order (arange) instead of
                `torch.randperm`, for reproducible tests.
        """
        super().__init__()
        self.num_classes = num_classes
        self.matcher = matcher
        self.clip_peak_matcher = ClipPeakMatcher(num_classes, mask_on=mask_on)
        self.weight_dict = dict(weight_dict)
        self.losses = tuple(losses)
        self._check_losses()
        self.eos_coef = eos_coef
        self.num_queries = num_queries
        self.num_layers = num_layers
        self.deep_supervision = deep_supervision
        self.window_inter_frame_asso = window_inter_frame_asso
        self.interinst_mask_loss_enabled = interinst_mask_loss_enabled
        self.interinst_mask_threshold = interinst_mask_threshold
        self.num_points = num_points
        self.deterministic_sampling = deterministic_sampling
        self.register_buffer("query_relpos_grid", grid_relative_positions(query_grid_size(num_queries)))

    @classmethod
    def from_config(cls, cfg: CfgNode) -> dict[str, Any]:
        mdqe = cfg.MODEL.MDQE
        return {
            "num_classes": mdqe.NUM_CLASSES,
            "matcher": build_matcher(cfg),
            "weight_dict": loss_weights_from_config(cfg),
            "eos_coef": mdqe.NO_OBJECT_WEIGHT,
            "num_queries": num_grid_queries(cfg),
            "losses": tuple(mdqe.LOSSES),
            "num_layers": mdqe.DEC_LAYERS + 1,
            "deep_supervision": mdqe.DEEP_SUPERVISION,
            "window_inter_frame_asso": mdqe.WINDOW_INTER_FRAME_ASSOCIATION,
            "interinst_mask_loss_enabled": mdqe.INTERINST_MASK_LOSS_ENABLED,
            "interinst_mask_threshold": mdqe.INTERINST_MASK_THRESHOLD,
            "mask_on": cfg.MODEL.MASK_ON,
        }

    @classmethod
    def loss_specs(cls) -> dict[str, tuple[str, LossSpec]]:
        """Loss name -> (method name, spec) of every `@loss` method of this class."""
        specs = {}
        for attr in dir(cls):
            spec = getattr(getattr(cls, attr, None), "loss_spec", None)
            if isinstance(spec, LossSpec):
                specs[spec.name] = (attr, spec)
        return specs

    def _check_losses(self) -> None:
        specs = self.loss_specs()
        unknown = [name for name in self.losses if name not in specs]
        if unknown:
            raise ValueError(
                f"{type(self).__name__}: unknown losses {unknown} in MODEL.MDQE.LOSSES; "
                f"known: {sorted(specs)}"
            )
        for name in self.losses:
            missing = [term for term in specs[name][1].terms if term not in self.weight_dict]
            if missing:
                raise ValueError(
                    f"{type(self).__name__}: loss '{name}' returns {missing} without a weight; every term "
                    "needs one (MODEL.MDQE.EXTRA_LOSS_WEIGHTS for the terms of added losses)"
                )

    def get_loss(self, name: str, match: LayerMatch | QueryInitMatch) -> dict[str, torch.Tensor]:
        """The unweighted terms of the loss `name` (Mask2Former's `get_loss`)."""
        attr, _ = self.loss_specs()[name]
        return getattr(self, attr)(match)

    def _weight(self, key: str) -> float:
        return (
            self.weight_dict[key] if key in self.weight_dict else self.weight_dict[_AUX_SUFFIX.sub("", key)]
        )

    # ---------------------------------------------------------------------------------------- forward
    def forward(
        self, outputs: dict[str, torch.Tensor], targets: list[dict[str, torch.Tensor]]
    ) -> dict[str, torch.Tensor]:
        """
        Args:
            outputs: the model's training outputs (float32):
                pred_logits (L, B, Q, K), pred_boxes (L, B, Q, T, 4) xyxy in [0, 1],
                pred_mask_coeff (L, B, Q, M), mask_feats (B, M, T, h, w),
                rpn_sem_cls (B, T, H0, W0, K), query_init_embed (B, T, Q, E),
                query_init_coords (B, T, Q, 2) (x, y) in [0, 1]; index L-1 is the last decoder layer.
            targets: B `prepare_targets` dicts, match_masks of size (h, w).

        Returns:
            weighted losses: the query-init losses' terms, then the per-layer losses' terms of the last
            layer, then the same with suffix _0 .. _{L-2} (38 entries with the defaults and 7 outputs).
        """
        num_layers = outputs["pred_logits"].shape[0]
        if self.num_layers is not None and num_layers != self.num_layers:
            raise ValueError(
                f"SetCriterion: got {num_layers} decoder outputs, expected {self.num_layers} "
                "(MODEL.MDQE.DEC_LAYERS + 1)"
            )
        specs = self.loss_specs()
        storage = _event_storage()
        losses: dict[str, torch.Tensor] = {}
        query_init = [name for name in self.losses if not specs[name][1].per_layer]
        if query_init:
            init_match = self.match_query_init(outputs, targets)
            for name in query_init:
                losses.update(self.get_loss(name, init_match))
            if storage is not None:
                storage.put_scalar(
                    "mdqe/query_init_recall", query_init_recall(init_match.query_ids, init_match.pixel_ids)
                )
        per_layer = [name for name in self.losses if specs[name][1].per_layer]
        layers = [num_layers - 1] + (list(range(num_layers - 1)) if self.deep_supervision else [])
        for layer in layers:
            match = self.match_layer(outputs, layer, targets)
            suffix = "" if layer == num_layers - 1 else f"_{layer}"
            for name in per_layer:
                losses.update({k + suffix: v for k, v in self.get_loss(name, match).items()})
            if storage is not None and layer == num_layers - 1:
                num_targets = max(sum(len(t["labels"]) for t in targets), 1)
                storage.put_scalar("mdqe/matched_queries_per_target", len(match.query_idx) / num_targets)
        return {k: v * self._weight(k) for k, v in losses.items()}

    # ------------------------------------------------------------------------------------- matching
    def match_query_init(
        self, outputs: dict[str, torch.Tensor], targets: list[dict[str, torch.Tensor]]
    ) -> QueryInitMatch:
        """Dense stride-8 targets of the batch and the GT id at every initial query."""
        rpn_logits = outputs["rpn_sem_cls"]
        grid_hw = tuple(rpn_logits.shape[2:4])
        labels, dist, pixel_ids = self.clip_peak_matcher(targets, grid_hw)
        query_ids = query_instance_ids(pixel_ids, grid_hw, outputs["query_init_coords"])
        return QueryInitMatch(rpn_logits, labels, dist, pixel_ids, outputs["query_init_embed"], query_ids)

    def match_layer(
        self, outputs: dict[str, torch.Tensor], layer: int, targets: list[dict[str, torch.Tensor]]
    ) -> LayerMatch:
        """Match the queries of decoder output `layer` to the targets."""
        pred_logits, pred_boxes = outputs["pred_logits"][layer], outputs["pred_boxes"][layer]
        mask_coeff, mask_feats = outputs["pred_mask_coeff"][layer], outputs["mask_feats"]
        with torch.no_grad():
            all_masks = torch.einsum("bqm,bmthw->bqthw", mask_coeff, mask_feats)
            indices = self.matcher(pred_logits.detach(), pred_boxes.detach(), all_masks, targets)
            del all_masks
        num_masks = max(
            _average_over_processes(float(sum(len(q) for q, _ in indices)), pred_logits.device), 1.0
        )
        clip_idx = torch.cat([torch.full_like(q, b) for b, (q, _) in enumerate(indices)])
        query_idx = torch.cat([q for q, _ in indices])
        return LayerMatch(
            pred_logits, pred_boxes, mask_coeff, mask_feats, targets, indices, num_masks, clip_idx, query_idx
        )

    # ----------------------------------------------------------------------- query-init losses
    @loss("query_init_labels", "loss_sem_cls_query_init", per_layer=False)
    def loss_query_init_labels(self, match: QueryInitMatch) -> dict[str, torch.Tensor]:
        """Distance-weighted focal loss of the stride-8 class map (`query_init_class_loss`)."""
        loss_value = query_init_class_loss(match.rpn_logits, match.labels, match.dist, self.num_points)
        return {"loss_sem_cls_query_init": loss_value}

    @loss("query_init_reid", "loss_reid_query_init", "loss_reid_query_init_aux", per_layer=False)
    def loss_query_init_reid(self, match: QueryInitMatch) -> dict[str, torch.Tensor]:
        """Contrastive losses on the initial queries' track embeddings (`reid_losses`)."""
        reid, aux = self.reid_losses(match.embeds, match.query_ids)
        return {"loss_reid_query_init": reid, "loss_reid_query_init_aux": aux}

    def _sample_order(self, n: int, device: torch.device) -> torch.Tensor:
        # The original draws on the default (CPU) generator; doing the same keeps seeded runs identical.
        order = torch.arange(n) if self.deterministic_sampling else torch.randperm(n)
        return order.to(device)

    def reid_losses(self, embeds: torch.Tensor, query_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Contrastive losses on the track embeddings of the initial queries.

        For each clip and each GT id hit by some query, the anchor is its first query in frame-major order
        (`_anchor_terms`). Both terms are averaged over anchors (in multi-process training: the anchor
        count of all processes / world size).

        Args:
            embeds: (B, T, Q, E) track embeddings (before the inter-frame association).
            query_ids: (B, T, Q) int64 GT id per query, -1 for background.

        Returns:
            reid, aux: scalar tensors (0 when no query hits a GT).
        """
        with torch.autocast(device_type=embeds.device.type, enabled=False):
            embeds = embeds.float()
            _, frames, num_queries, _ = embeds.shape
            ctt_terms, aux_terms = [], []
            for clip_embeds, clip_ids in zip(embeds, query_ids):
                ids = clip_ids.flatten()  # (T*Q,)
                clip_embeds = clip_embeds.reshape(frames * num_queries, -1)
                unique_ids = ids[ids >= 0].unique()
                anchors = (ids[None] == unique_ids[:, None]).to(torch.uint8).argmax(dim=1)
                # Sequential over anchors: each draws from the random generator in turn.
                for anchor, inst_id in zip(anchors.tolist(), unique_ids.tolist()):
                    ctt, aux = self._anchor_terms(clip_embeds, ids, anchor, inst_id, frames)
                    ctt_terms.append(ctt)
                    aux_terms.append(aux)

            # Averaged over the anchors of all processes (as many as in one process when not distributed),
            # so that DDP's gradient average equals the single-process gradient of the whole batch.
            num_anchors = _average_over_processes(float(len(ctt_terms)), embeds.device)
            if not ctt_terms or num_anchors == 0:
                # Zero that stays attached to the graph, so every parameter still gets a gradient.
                zero = embeds.sum() * 0.0
                return zero, zero
            return torch.stack(ctt_terms).sum() / num_anchors, torch.stack(aux_terms).sum() / num_anchors

    def _anchor_terms(
        self, clip_embeds: torch.Tensor, ids: torch.Tensor, anchor: int, inst_id: int, frames: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The two contrastive terms of one anchor.

        Candidates: in frame t, queries whose grid cell lies within w' (|t - t_anchor| + 1) cells of the
        anchor's cell in both axes, w' = max(window, 2) (all T*Q queries if every candidate shares the
        anchor's id). Up to 50 T negatives (other ids or background) and max(n_neg // 5, 2) positives (same
        id, anchor included) are drawn at random. With s = <anchor, e>:
        reid = mean_pos log(1 + min(sum_neg exp(s_neg - s_pos), 1e3));
        aux = mean over drawn samples of (cos(anchor, e) - [same id])^2.

        Args:
            clip_embeds: (T*Q, E) one clip's embeddings, frame-major; ids: (T*Q,) their GT ids.
            anchor: index of the anchor query; inst_id: its GT id; frames: T.
        """
        device = clip_embeds.device
        num_queries = clip_embeds.shape[0] // frames
        anchor_frame, anchor_query = divmod(anchor, num_queries)
        window = max(self.window_inter_frame_asso, 2)
        radius = window * ((torch.arange(frames, device=device) - anchor_frame).abs() + 1)  # (T,)
        relpos = self.query_relpos_grid[:, anchor_query]  # (Q, 2)
        candidate = (relpos[None] <= radius[:, None, None]).all(dim=-1).flatten()  # (T*Q,)
        same = ids == inst_id
        if not (candidate & ~same).any():
            candidate = torch.ones_like(candidate)
        pos_embeds = clip_embeds[candidate & same]
        neg_embeds = clip_embeds[candidate & ~same]
        num_neg = min(len(neg_embeds), 50 * frames)
        num_pos = max(num_neg // 5, 2)
        pos_embeds = pos_embeds[self._sample_order(len(pos_embeds), device)[:num_pos]]
        neg_embeds = neg_embeds[self._sample_order(len(neg_embeds), device)[:num_neg]]

        anchor_embed = clip_embeds[anchor]
        pos_sim = pos_embeds @ anchor_embed
        neg_sim = neg_embeds @ anchor_embed
        neg_over_pos = (neg_sim[:, None] - pos_sim[None]).exp().sum(dim=0).clamp(max=1e3)
        ctt = torch.log(1 + neg_over_pos).mean()

        samples = torch.cat([pos_embeds, neg_embeds])
        is_pos = torch.cat([pos_sim.new_ones(len(pos_embeds)), neg_sim.new_zeros(len(neg_embeds))])
        cosine = F.normalize(samples, dim=-1) @ F.normalize(anchor_embed, dim=-1)
        # This order does not change the mean; it is drawn to consume the generator exactly as the
        # original does, so seeded runs reproduce its samples.
        order = self._sample_order(len(samples), device)
        return ctt, ((cosine[order] - is_pos[order]) ** 2).mean()

    # -------------------------------------------------------------------------------- per-layer losses
    @loss("labels", "loss_cls")
    def loss_labels(self, match: LayerMatch) -> dict[str, torch.Tensor]:
        """Focal loss over every query; matched queries have a one-hot target."""
        tgt_classes = torch.zeros_like(match.pred_logits)
        tgt_classes[match.clip_idx, match.query_idx, match.matched_targets("labels")] = 1.0
        logits = match.pred_logits.flatten(0, 1)
        return {"loss_cls": sigmoid_focal_loss(logits, tgt_classes.flatten(0, 1), self.eos_coef)}

    @loss("boxes", "loss_bbox", "loss_giou")
    def loss_boxes(self, match: LayerMatch) -> dict[str, torch.Tensor]:
        """L1 and GIoU of the matched per-frame boxes, on frames where the GT box is not empty."""
        tgt_boxes = match.matched_targets("boxes").to(match.pred_boxes)
        num_frames = tgt_boxes.shape[1]
        valid = ((tgt_boxes[..., 2:] - tgt_boxes[..., :2]) > 0).all(dim=-1).flatten()
        src_boxes = match.pred_boxes[match.clip_idx, match.query_idx].flatten(0, 1)[valid]
        gt_boxes = tgt_boxes.flatten(0, 1)[valid]
        normaliser = num_frames * match.num_masks
        return {
            "loss_bbox": F.l1_loss(src_boxes, gt_boxes, reduction="sum") / normaliser,
            "loss_giou": (1 - matched_boxlist_giou(src_boxes, gt_boxes)).sum() / normaliser,
        }

    @loss("masks", "loss_mask", "loss_dice")
    def loss_masks(self, match: LayerMatch) -> dict[str, torch.Tensor]:
        """BCE and dice of the full stride-4 masks of the matched queries (repulsion form by default)."""
        tgt_masks = match.matched_targets("match_masks").to(match.mask_feats)
        src_masks = torch.cat(
            [
                torch.einsum("nm,mthw->nthw", match.mask_coeff[b, q], match.mask_feats[b])
                for b, (q, _) in enumerate(match.indices)
            ]
        )
        if not self.interinst_mask_loss_enabled:
            return {
                "loss_mask": sigmoid_ce_loss(src_masks, tgt_masks, match.num_masks),
                "loss_dice": dice_loss(src_masks, tgt_masks, match.num_masks),
            }
        tgt_boxes = match.matched_targets("boxes").to(match.pred_boxes)
        union = interinst_union_masks(tgt_masks, tgt_boxes, match.clip_idx, self.interinst_mask_threshold)
        return {
            "loss_mask": interinst_sigmoid_ce_loss(src_masks, tgt_masks, union, match.num_masks),
            "loss_dice": interinst_dice_loss(src_masks, tgt_masks, union, match.num_masks),
        }


def loss_weights_from_config(cfg: CfgNode) -> dict[str, float]:
    """Weight of every loss term: the built-in terms from their keys, added ones from EXTRA_LOSS_WEIGHTS."""
    mdqe = cfg.MODEL.MDQE
    weights = {
        "loss_sem_cls_query_init": mdqe.CLASS_WEIGHT,
        "loss_reid_query_init": mdqe.REID_WEIGHT,
        "loss_reid_query_init_aux": mdqe.REID_WEIGHT,
        "loss_cls": mdqe.CLASS_WEIGHT,
        "loss_bbox": mdqe.BOX_WEIGHT,
        "loss_giou": mdqe.BOX_WEIGHT,
        "loss_mask": mdqe.MASK_WEIGHT,
        "loss_dice": mdqe.DICE_WEIGHT,
    }
    for entry in mdqe.EXTRA_LOSS_WEIGHTS:
        if len(entry) != 2 or not isinstance(entry[0], str) or not isinstance(entry[1], (int, float)):
            raise ValueError(f"MODEL.MDQE.EXTRA_LOSS_WEIGHTS: expected [term, weight] pairs, got {entry!r}")
        if entry[0] in weights:
            raise ValueError(f"MODEL.MDQE.EXTRA_LOSS_WEIGHTS: '{entry[0]}' is weighted by its own config key")
        weights[entry[0]] = float(entry[1])
    return weights
