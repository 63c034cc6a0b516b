"""MDQE's decoder (`detr.transformer_dec` in the original's checkpoints): query initialisation,
box-level and instance-level decoder layers, the heads and the mask-feature head.

Two kinds of queries:
- frame-level ("box-level") queries x (B*T, Q, C), one set per frame, each with a reference box that is
  refined after every layer; they give the per-frame boxes;
- instance-level queries x_inst (B, Q, C), one per query slot of the clip, fed by a time-weighted fusion
  of the frame-level queries and a temporal deformable attention over the clip's frames around the
  box that circumscribes the slot's per-frame boxes; they give classes, mask coefficients and the
  embeddings used for tracking.

Before the first layer a "warm-up" box prediction is made; the intermediate outputs therefore have
DEC_LAYERS + 1 entries (index 0 = warm-up).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from detectron2.config import CfgNode, configurable
from torch import nn

from mdqe.inference.frame_cache import FrameFeatures

from .box_ops import box_cxcywh_to_xyxy, circumscribed_boxes
from .build import DECODER_REGISTRY, attention_dims, num_grid_queries
from .deform_attn import MDQEDeformAttn
from .layers import MLP, autocast_off, full_precision, inverse_sigmoid
from .mask_head import MaskHead
from .query_init import (
    associate_queries,
    grid_relative_positions,
    query_grid_size,
    sample_query_features,
    select_grid_queries,
)

__all__ = [
    "DecoderLayer",
    "DecoderOutput",
    "FrameQueries",
    "LayerValues",
    "QueryDecoder",
    "temporal_frame_indices",
]


def temporal_frame_indices(clip_len: int, num_frames: int) -> list[int]:
    """Frames of a clip attended by the temporal cross-attention, whose parameters fit `num_frames`.

    itv = max(clip_len // num_frames, 1); from start = max((clip_len - 1) // 2 - ((num_frames - 1) // 2) *
    itv, 0) every itv-th frame, at most `num_frames` of them, the last one repeated if fewer remain.

    Returns:
        `num_frames` frame indices in [0, clip_len).
    """
    step = max(clip_len // num_frames, 1)
    start = max((clip_len - 1) // 2 - ((num_frames - 1) // 2) * step, 0)
    frames = list(range(start, clip_len, step))[:num_frames]
    return frames + [frames[-1]] * (num_frames - len(frames))


@dataclass
class LayerValues:
    """Projected values of one decoder layer's two deformable attentions, per frame.

    Attributes:
        cross: (N, S, H, D) values of `cross_attn` (padded tokens zeroed), N frames.
        temporal: per feature level (N, H_l * W_l, H, D) values of `temp_attn_inst`, or None without
            temporal attention.
    """

    cross: torch.Tensor
    temporal: list[torch.Tensor] | None

    def map(self, fn: Callable[..., torch.Tensor], *others: LayerValues) -> LayerValues:
        """Every tensor t replaced by fn(t, *the same tensor of `others`)."""
        cross = fn(self.cross, *(o.cross for o in others))
        if self.temporal is None:
            return LayerValues(cross, None)
        temporal = [fn(v, *(o.temporal[lvl] for o in others)) for lvl, v in enumerate(self.temporal)]
        return LayerValues(cross, temporal)


@dataclass
class FrameQueries:
    """Initial queries of N frames (grid-guided selection, before association); `per_clip` gives the
    same fields with leading dims (B, T) instead of N = B * T.

    Attributes:
        rpn_logits: (N, H0, W0, K) class logits of the stride-8 level (None where not needed).
        coords: (N, Q, 2) normalised (x, y) of the selected points.
        features: (N, Q, C) their content features.
        track_embed: (N, Q, E) their track embeddings.
    """

    rpn_logits: torch.Tensor | None
    coords: torch.Tensor
    features: torch.Tensor
    track_embed: torch.Tensor

    def per_clip(self, num_frames: int) -> FrameQueries:
        """(B * T, ...) fields -> (B, T, ...), frames clip-major."""

        def split(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.unflatten(0, (-1, num_frames))

        return FrameQueries(
            *(split(t) for t in (self.rpn_logits, self.coords, self.features, self.track_embed))
        )


@dataclass
class DecoderOutput:
    """Intermediate decoder outputs, index 0 = warm-up, -1 = last layer.

    Attributes:
        frame_queries: (L + 1, B * T, Q, C) frame-level queries.
        clip_queries: (L + 1, B, Q, C) instance-level queries (before the decoder norm).
        boxes: (L + 1, B * T, Q, 4) per-frame boxes, normalised (cx, cy, w, h).
    """

    frame_queries: torch.Tensor
    clip_queries: torch.Tensor
    boxes: torch.Tensor


class DecoderLayer(nn.Module):
    """Box-level cross-attn -> self-attn -> FFN, then instance-level temporal fusion and
    cross-attn -> self-attn -> FFN; all post-norm with GELU and no dropout."""

    def __init__(
        self,
        dim: int,
        n_heads: int,
        n_levels: int,
        n_frames: int,
        n_points: int,
        mlp_ratio: float = 4.0,
        temporal_attn: bool = True,
    ):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, n_heads, batch_first=True)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn = MDQEDeformAttn(
            dim, n_levels, n_heads, n_points, n_frames=n_frames, pred_offsets=False, mode="spatial"
        )
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.linear1 = nn.Linear(dim, hidden)
        self.linear2 = nn.Linear(hidden, dim)
        self.norm3 = nn.LayerNorm(dim)

        self.time_weights = nn.Linear(dim, 1)
        self.self_attn_inst = nn.MultiheadAttention(dim, n_heads, batch_first=True)
        self.norm1_inst = nn.LayerNorm(dim)
        self.temp_attn_inst = (
            MDQEDeformAttn(
                dim, n_levels, n_heads, n_points, n_frames=n_frames, pred_offsets=False, mode="temporal"
            )
            if temporal_attn
            else None
        )
        self.norm2_inst = nn.LayerNorm(dim)
        self.linear1_inst = nn.Linear(dim, hidden)
        self.linear2_inst = nn.Linear(hidden, dim)
        self.norm3_inst = nn.LayerNorm(dim)

    def project_values(
        self,
        memory: torch.Tensor,
        padding_mask: torch.Tensor | None,
        level_sizes: Sequence[tuple[int, int]],
    ) -> LayerValues:
        """memory: (N, S, C) encoder tokens of N frames, padding_mask (N, S), level_sizes: the L
        (H_l, W_l) -> this layer's values."""
        temporal = None
        if self.temp_attn_inst is not None:
            temporal = self.temp_attn_inst.project_value_levels(memory, level_sizes, padding_mask)
        return LayerValues(self.cross_attn.project_value(memory, padding_mask), temporal)

    def forward(
        self,
        x: torch.Tensor,
        x_pos: torch.Tensor,
        x_boxes: torch.Tensor,
        x_inst: torch.Tensor,
        x_inst_pos: torch.Tensor,
        x_inst_boxes: torch.Tensor,
        values: LayerValues,
        temporal_frames: list[int],
        spatial_shapes: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            x, x_pos: (B*T, Q, C) frame-level queries and position embeddings (T frames per clip).
            x_boxes: (B*T, Q, 4) their reference boxes (cx, cy, w, h).
            x_inst, x_inst_pos: (B, Q, C) instance-level queries and position embeddings.
            x_inst_boxes: (B, Q, 4) their reference boxes (the circumscribed boxes).
            values: this layer's values of the B*T frames.
            temporal_frames: frame indices within a clip attended by the temporal attention.
            spatial_shapes: (L, 2) int64.

        Returns:
            x (B*T, Q, C) and x_inst (B, Q, C).
        """
        x = self.norm2(x + self.cross_attn(x + x_pos, x_boxes, values.cross, spatial_shapes))
        after_cross = x
        q = x + x_pos
        x = self.norm1(x + self.self_attn(q, q, x, need_weights=False)[0])
        x = self.norm3(x + self.linear2(F.gelu(self.linear1(x))))

        batch = x_inst.shape[0]
        frames = x.shape[0] // batch
        weights = self.time_weights(x.unflatten(0, (batch, frames))).softmax(dim=1)
        fused = (weights * after_cross.unflatten(0, (batch, frames))).sum(dim=1)
        if self.temp_attn_inst is not None:
            per_clip = [v.unflatten(0, (batch, frames)) for v in values.temporal]
            if temporal_frames != list(range(frames)):
                per_clip = [v[:, temporal_frames] for v in per_clip]
            fused = self.temp_attn_inst(fused + x_inst_pos, x_inst_boxes, per_clip, spatial_shapes)
        x_inst = self.norm2_inst(x_inst + fused)
        q_inst = x_inst + x_inst_pos
        x_inst = self.norm1_inst(x_inst + self.self_attn_inst(q_inst, q_inst, x_inst, need_weights=False)[0])
        x_inst = self.norm3_inst(x_inst + self.linear2_inst(F.gelu(self.linear1_inst(x_inst))))
        return x, x_inst


class _DecoderStack(nn.Module):
    """The layers plus the modules shared with `QueryDecoder` (the original's `DecoderDefAttn`; its
    shared children appear under both names in checkpoints)."""

    def __init__(
        self,
        layer: DecoderLayer,
        num_layers: int,
        point2pos_proj: nn.Linear,
        bbox_embed: MLP,
        norm: nn.LayerNorm,
    ):
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        self.point2pos_proj = point2pos_proj
        self.bbox_embed = bbox_embed
        self.norm = norm


@DECODER_REGISTRY.register()
class QueryDecoder(nn.Module):
    """Query initialisation, decoder, heads and mask-feature head of MDQE."""

    @configurable
    def __init__(
        self,
        *,
        num_classes: int,
        dim: int = 256,
        n_heads: int = 8,
        n_levels: int = 4,
        n_frames: int = 1,
        n_points: int = 4,
        num_layers: int = 6,
        mlp_ratio: float = 4.0,
        num_queries: int = 196,
        temporal_attn: bool = True,
        window_inter_frame_asso: float = 5,
        query_embed_dim: int = 64,
        mask_feat_init_scale: float = 1.0,
        mask_feat_dim: int = 0,
    ):
        """
        Args:
            num_classes: K.
            dim: channels C; n_heads: attention heads; n_levels: feature levels.
            n_frames: T, training clip length (sizes the temporal attention).
            n_points: sampling points of the decoder's deformable attentions.
            num_layers: decoder layers; mlp_ratio: FFN width ratio.
            num_queries: Q, a perfect square (the g x g query grid).
            temporal_attn: use the temporal cross-attention of instance queries (DEC_TEMPORAL).
            window_inter_frame_asso: grid window of the association (halved at inference).
            query_embed_dim: E, size of the track embeddings.
            mask_feat_init_scale: initial scale of the mask features (see `MaskHead`).
            mask_feat_dim: number of mask feature channels; 0: dim // 8, the original's.
        """
        super().__init__()
        self.grid_size = query_grid_size(num_queries)
        self.num_classes = num_classes
        self.n_frames = n_frames
        self.window_inter_frame_asso = window_inter_frame_asso
        self.register_buffer("query_relpos_grid", grid_relative_positions(self.grid_size))

        self.decoder_norm = nn.LayerNorm(dim)
        self.bbox_embed = MLP(dim, dim, 4, 3)
        self.point2pos_proj = nn.Linear(2, dim)
        layer = DecoderLayer(dim, n_heads, n_levels, n_frames, n_points, mlp_ratio, temporal_attn)
        self.decoder = _DecoderStack(
            layer, num_layers, self.point2pos_proj, self.bbox_embed, self.decoder_norm
        )
        self.rpn_cls_embed = MLP(dim, dim, num_classes, 3)
        self.cls_embed = MLP(dim, dim, num_classes, 3)
        self.track_embed = MLP(dim, dim, query_embed_dim, 3)
        self.mask_head = MaskHead(dim, init_scale=mask_feat_init_scale, mask_dim=mask_feat_dim)
        self.mask_embed = MLP(dim, dim, self.mask_head.mask_dim, 3)
        self._reset_parameters()

    @classmethod
    def from_config(cls, cfg: CfgNode) -> dict[str, Any]:
        mdqe = cfg.MODEL.MDQE
        return {
            **attention_dims(cfg),
            "num_classes": mdqe.NUM_CLASSES,
            "n_frames": cfg.INPUT.SAMPLING_FRAME_NUM,
            "n_points": mdqe.DEC_NUM_POINTS,
            "num_layers": mdqe.DEC_LAYERS,
            "mlp_ratio": mdqe.MLP_RATIO,
            "num_queries": num_grid_queries(cfg),
            "temporal_attn": mdqe.DEC_TEMPORAL,
            "window_inter_frame_asso": mdqe.WINDOW_INTER_FRAME_ASSOCIATION,
            "query_embed_dim": mdqe.QUERY_EMBED_DIM,
            "mask_feat_init_scale": mdqe.MASK_FEAT_INIT_SCALE,
            "mask_feat_dim": mdqe.MASK_FEAT_DIM,
        }

    @property
    def mask_dim(self) -> int:
        """M, channels of the mask features and size of the mask coefficients."""
        return self.mask_head.mask_dim

    def _reset_parameters(self) -> None:
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for m in self.modules():
            if isinstance(m, MDQEDeformAttn):
                m._reset_parameters()
        nn.init.zeros_(self.bbox_embed.layers[-1].bias)
        prior = -math.log((1 - 0.01) / 0.01)
        nn.init.constant_(self.cls_embed.layers[-1].bias, prior)
        nn.init.constant_(self.rpn_cls_embed.layers[-1].bias, prior)

    # ------------------------------------------------------------------------------ per-frame parts
    @staticmethod
    def split_levels(memory: torch.Tensor, level_sizes: Sequence[tuple[int, int]]) -> list[torch.Tensor]:
        """memory: (N, S, C), level_sizes: L (H_l, W_l) -> per level (N, C, H_l, W_l)."""
        levels = memory.split([h * w for h, w in level_sizes], dim=1)
        return [level.transpose(1, 2).unflatten(2, (h, w)) for level, (h, w) in zip(levels, level_sizes)]

    def mask_features(self, memory: torch.Tensor, level_sizes: Sequence[tuple[int, int]]) -> torch.Tensor:
        """memory: (N, S, C) encoder tokens of N frames -> (N, M, 2 H_0, 2 W_0) stride-4 mask features."""
        levels = self.split_levels(memory, level_sizes)
        return self.mask_head(levels[0], levels[1], levels[2])

    def init_frame_queries(
        self, memory: torch.Tensor, level_sizes: Sequence[tuple[int, int]]
    ) -> FrameQueries:
        """Grid-guided query selection on each of N frames (memory (N, S, C))."""
        levels = self.split_levels(memory, level_sizes)
        rpn_logits = self.rpn_cls_embed(levels[0].permute(0, 2, 3, 1))
        coords = select_grid_queries(rpn_logits, self.grid_size)
        features = sample_query_features(levels, coords)
        return FrameQueries(rpn_logits, coords, features, self.track_embed(features))

    def project_values(
        self,
        memory: torch.Tensor,
        padding_mask: torch.Tensor | None,
        level_sizes: Sequence[tuple[int, int]],
    ) -> list[LayerValues]:
        """memory: (N, S, C), padding_mask: (N, S), level_sizes: the L (H_l, W_l) -> every layer's
        attention values of the N frames."""
        return [layer.project_values(memory, padding_mask, level_sizes) for layer in self.decoder.layers]

    def frame_features(
        self,
        memory: torch.Tensor,
        padding_mask: torch.Tensor,
        spatial_shapes: torch.Tensor,
        level_sizes: Sequence[tuple[int, int]],
    ) -> FrameFeatures:
        """Everything the decoder computes per frame, from the encoder's output for N frames.

        Args:
            memory: (N, S, C) encoder tokens; padding_mask: (N, S) bool; spatial_shapes: (L, 2) int64;
            level_sizes: the same L sizes as ints.

        Returns:
            `FrameFeatures` with tensors "coords" (N, Q, 2), "features" (N, Q, C), "track_embed" (N, Q, E),
            "mask_feats" (N, M, 2 H_0, 2 W_0), and in training mode "rpn_logits" (N, H_0, W_0, K); values:
            every layer's attention values (`project_values`).
        """
        queries = self.init_frame_queries(memory, level_sizes)
        tensors = {
            "coords": queries.coords,
            # contiguous, as after the frame cache's concatenation: one memory layout for the per-clip part
            "features": queries.features.contiguous(),
            "track_embed": queries.track_embed,
            "mask_feats": self.mask_features(memory, level_sizes),
        }
        if self.training:
            tensors["rpn_logits"] = queries.rpn_logits
        return FrameFeatures(spatial_shapes, tensors, self.project_values(memory, padding_mask, level_sizes))

    # --------------------------------------------------------------------------------- per clip
    def associate(
        self, features: torch.Tensor, coords: torch.Tensor, track_embed: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Re-order each frame's queries to follow the centre frame's (inter-frame association).

        Args:
            features: (B, T, Q, C); coords: (B, T, Q, 2); track_embed: (B, T, Q, E).

        Returns:
            aligned features (B, T, Q, C) and coordinates (B, T, Q, 2).
        """
        if features.shape[1] == 1:
            return features, coords
        window = self.window_inter_frame_asso if self.training else self.window_inter_frame_asso / 2
        index = associate_queries(track_embed, self.query_relpos_grid, window)
        features = features.gather(2, index[..., None].expand_as(features))
        coords = coords.gather(2, index[..., None].expand_as(coords))
        return features, coords

    def _boxes_and_positions(
        self, x: torch.Tensor, ref_boxes: torch.Tensor, batch: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Refine the frame-level boxes and derive the position embeddings.

        Args:
            x: (B*T, Q, C) frame-level queries; ref_boxes: (B*T, Q, 4) their current references.

        Returns:
            boxes (B*T, Q, 4), frame positions (B*T, Q, C), instance boxes (B, Q, 4) (circumscribed
            over the clip, detached) and instance positions (B, Q, C).
        """
        boxes = (self.bbox_embed(self.decoder_norm(x)) + inverse_sigmoid(ref_boxes)).sigmoid()
        x_pos = self.point2pos_proj(boxes[..., :2])
        per_clip = boxes.detach().unflatten(0, (batch, -1)).transpose(1, 2)
        inst_boxes = circumscribed_boxes(per_clip)
        return boxes, x_pos, inst_boxes, self.point2pos_proj(inst_boxes[..., :2])

    def decode(
        self,
        features: torch.Tensor,
        coords: torch.Tensor,
        values: list[LayerValues],
        spatial_shapes: torch.Tensor,
    ) -> DecoderOutput:
        """Run the decoder on clips of associated queries.

        Args:
            features: (B, T, Q, C) associated initial queries; coords: (B, T, Q, 2) their points.
            values: per layer, the attention values of the B*T frames (`project_values`).
            spatial_shapes: (L, 2) int64.
        """
        with autocast_off(features.device.type):
            batch, frames = features.shape[:2]
            center = (frames - 1) // 2
            temporal_frames = temporal_frame_indices(frames, self.n_frames)
            x = full_precision(features.flatten(0, 1))
            x_inst = full_precision(features[:, center])
            ref = full_precision(coords.flatten(0, 1))
            ref_boxes = torch.cat([ref, torch.full_like(ref, 0.1)], dim=-1)
            boxes, x_pos, inst_boxes, inst_pos = self._boxes_and_positions(x, ref_boxes, batch)
            frame_out, clip_out, box_out = [x], [x_inst], [boxes]
            for layer, layer_values in zip(self.decoder.layers, values):
                x, x_inst = layer(
                    x,
                    x_pos,
                    boxes.detach(),
                    x_inst,
                    inst_pos,
                    inst_boxes,
                    layer_values,
                    temporal_frames,
                    spatial_shapes,
                )
                boxes, x_pos, inst_boxes, inst_pos = self._boxes_and_positions(x, boxes.detach(), batch)
                frame_out.append(x)
                clip_out.append(x_inst)
                box_out.append(boxes)
        return DecoderOutput(torch.stack(frame_out), torch.stack(clip_out), torch.stack(box_out))

    def decode_clips(
        self, queries: FrameQueries, values: list[LayerValues], spatial_shapes: torch.Tensor
    ) -> DecoderOutput:
        """Associate and decode clips: the one path of training, video and image inference.

        Args:
            queries: per clip (B, T, ...) initial queries (`FrameQueries.per_clip`; `rpn_logits` unused).
            values: per layer, the attention values of the B*T frames (`project_values`).
            spatial_shapes: (L, 2) int64.
        """
        features, coords = self.associate(queries.features, queries.coords, queries.track_embed)
        return self.decode(features, coords, values, spatial_shapes)

    def heads(self, clip_queries: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """clip_queries: (..., Q, C) -> class logits (..., Q, K) and mask coefficients (..., Q, M) (tanh)."""
        normed = self.decoder_norm(clip_queries)
        return self.cls_embed(normed), self.mask_embed(normed).tanh()

    def clip_heads(self, features: FrameFeatures, num_frames: int) -> dict[str, torch.Tensor]:
        """The per-clip part of inference: the last decoder layer's outputs of B clips.

        Args:
            features: the `frame_features` of B * T frames, clip-major; num_frames: T.

        Returns:
            "pred_logits" (B, Q, K) class logits, "pred_mask_coeff" (B, Q, M) (tanh), "pred_boxes"
            (B, Q, T, 4) normalised xyxy, "query_embed" (B, Q, C) instance queries before the decoder norm
            (the tracker's embeddings).
        """
        out = self._decode_features(features, num_frames)
        clip_queries = out.clip_queries[-1]
        logits, mask_coeff = self.heads(clip_queries)
        boxes = box_cxcywh_to_xyxy(out.boxes[-1].unflatten(0, (-1, num_frames)).transpose(1, 2))
        return {
            "pred_logits": logits,
            "pred_mask_coeff": mask_coeff,
            "pred_boxes": boxes,
            "query_embed": clip_queries,
        }

    def _decode_features(self, features: FrameFeatures, num_frames: int) -> DecoderOutput:
        t = features.tensors
        queries = FrameQueries(None, t["coords"], t["features"], t["track_embed"]).per_clip(num_frames)
        return self.decode_clips(queries, features.values, features.spatial_shapes)

    # ------------------------------------------------------------------------------------ training
    def forward(self, features: FrameFeatures, num_frames: int) -> dict[str, torch.Tensor]:
        """The per-clip part of training: outputs of every decoder layer for B clips.

        Args:
            features: the `frame_features` (training mode) of B * T frames, clip-major; num_frames: T.

        Returns:
            the criterion's inputs: pred_logits (L+1, B, Q, K), pred_boxes (L+1, B, Q, T, 4) xyxy,
            pred_mask_coeff (L+1, B, Q, M), mask_feats (B, M, T, 2 H_0, 2 W_0),
            rpn_sem_cls (B, T, H_0, W_0, K), query_init_embed (B, T, Q, E) and
            query_init_coords (B, T, Q, 2), the last two before association.
        """
        out = self._decode_features(features, num_frames)
        logits, mask_coeff = self.heads(out.clip_queries)
        boxes = box_cxcywh_to_xyxy(out.boxes.unflatten(1, (-1, num_frames)).transpose(2, 3))
        t = {key: value.unflatten(0, (-1, num_frames)) for key, value in features.tensors.items()}
        return {
            "pred_logits": logits,
            "pred_boxes": boxes,
            "pred_mask_coeff": mask_coeff,
            "mask_feats": t["mask_feats"].transpose(1, 2),
            "rpn_sem_cls": t["rpn_logits"],
            "query_init_embed": t["track_embed"],
            "query_init_coords": t["coords"],
        }
