"""The deformable-attention pixel encoder (`detr.transformer_enc` in the original's checkpoints).

Every frame is encoded on its own: the attention spans the feature levels of one frame, never other
frames, so frames can be encoded in any grouping with the same result.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from detectron2.config import CfgNode, configurable
from detectron2.layers import ShapeSpec
from torch import nn

from .build import PIXEL_ENCODER_REGISTRY, attention_dims, check_feature_strides
from .deform_attn import MDQEDeformAttn
from .layers import autocast_off, full_precision, pixel_centers, shape_tensor

__all__ = ["DeformableEncoder", "EncoderLayer", "flatten_levels"]


def flatten_levels(
    srcs: list[torch.Tensor], masks: list[torch.Tensor], pos: list[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Concatenate the levels of a feature pyramid into one token sequence.

    Args:
        srcs: per level (N, C, H_l, W_l).
        masks: per level (N, H_l, W_l) bool padding masks.
        pos: per level (N, C, H_l, W_l) position embeddings.

    Returns:
        tokens (N, S, C), padding mask (N, S), position embeddings (N, S, C), spatial_shapes (L, 2) int64,
        with S = sum_l H_l * W_l, levels in order, row-major within a level.
    """
    tokens = torch.cat([src.flatten(2).transpose(1, 2) for src in srcs], dim=1)
    mask = torch.cat([m.flatten(1) for m in masks], dim=1)
    pos_flat = torch.cat([p.flatten(2).transpose(1, 2) for p in pos], dim=1)
    return tokens, mask, pos_flat, shape_tensor([src.shape[-2:] for src in srcs], tokens.device)


class EncoderLayer(nn.Module):
    """Post-norm layer: x = LN(x + DeformAttn(x + pos, x)); x = LN(x + FFN(x)) with GELU."""

    def __init__(self, dim: int, n_heads: int, n_levels: int, n_points: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.self_attn = MDQEDeformAttn(dim, n_levels, n_heads, n_points, pred_offsets=True, mode="spatial")
        self.norm1 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.linear1 = nn.Linear(dim, hidden)
        self.activation = nn.GELU()
        self.linear2 = nn.Linear(hidden, dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(
        self,
        x: torch.Tensor,
        pos: torch.Tensor,
        reference_boxes: torch.Tensor,
        spatial_shapes: torch.Tensor,
        padding_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """
        Args:
            x: (N, S, C) tokens; pos: (N, S, C); reference_boxes: (N, S, 4) (cx, cy, w, h);
            spatial_shapes: (L, 2) int64; padding_mask: (N, S) bool.

        Returns:
            (N, S, C).
        """
        value = self.self_attn.project_value(x, padding_mask)
        x = self.norm1(x + self.self_attn(x + pos, reference_boxes, value, spatial_shapes))
        return self.norm2(x + self.linear2(self.activation(self.linear1(x))))


class _EncoderStack(nn.Module):
    """`layers` then the final `norm` (the original's `Encoder`, kept for its checkpoint names)."""

    def __init__(self, layer: EncoderLayer, num_layers: int, dim: int):
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        self.norm = nn.LayerNorm(dim)


@PIXEL_ENCODER_REGISTRY.register()
class DeformableEncoder(nn.Module):
    """Deformable DETR-style encoder over the flattened multi-scale features of each frame.

    It takes the backbone levels at strides 8, 16, 32, ... (projected to `dim` channels, plus extra
    strided levels up to NUM_FEATURE_LEVELS, by `MDQETransformer`); the decoder's query selection and
    mask head rely on the first level being at stride 8.
    """

    @configurable
    def __init__(
        self,
        *,
        dim: int = 256,
        n_heads: int = 8,
        n_levels: int = 4,
        n_points: int = 4,
        num_layers: int = 6,
    ):
        """
        Args:
            dim: channels C; n_heads: attention heads; n_levels: feature levels L;
            n_points: sampling points per head and level; num_layers: encoder layers.
        """
        super().__init__()
        self.dim = dim
        self.n_levels = n_levels
        layer = EncoderLayer(dim, n_heads, n_levels, n_points)
        self.encoder = _EncoderStack(layer, num_layers, dim)
        self.level_embed = nn.Parameter(torch.empty(n_levels, dim))
        nn.init.normal_(self.level_embed)

    @classmethod
    def from_config(cls, cfg: CfgNode, input_shape: dict[str, ShapeSpec]) -> dict[str, Any]:
        check_feature_strides(
            cfg.MODEL.BACKBONE.NAME, input_shape, [8 * 2**level for level in range(len(input_shape))]
        )
        mdqe = cfg.MODEL.MDQE
        return {**attention_dims(cfg), "n_points": mdqe.ENC_NUM_POINTS, "num_layers": mdqe.ENC_LAYERS}

    def forward(
        self, srcs: list[torch.Tensor], masks: list[torch.Tensor], pos: list[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """
        Args:
            srcs: per level (N, C, H_l, W_l) projected features (N frames).
            masks: per level (N, H_l, W_l) bool padding masks.
            pos: per level (N, C, H_l, W_l) position embeddings.

        Returns:
            memory (N, S, C) encoded tokens, padding mask (N, S) bool, spatial_shapes (L, 2) int64.
        """
        tokens, mask, pos_flat, shapes = flatten_levels(srcs, masks, pos)
        sizes = [src.shape[-2:] for src in srcs]
        level_pos = torch.cat([embed.expand(h * w, -1) for embed, (h, w) in zip(self.level_embed, sizes)])
        pos_flat = pos_flat + level_pos
        centers = torch.cat([pixel_centers(h, w, tokens.device) for h, w in sizes])
        boxes = torch.cat([centers, torch.full_like(centers, 0.1)], dim=-1)
        boxes = boxes.expand(tokens.shape[0], -1, -1)
        with autocast_off(tokens.device.type):
            x = full_precision(tokens)
            pos_flat = full_precision(pos_flat)
            for layer in self.encoder.layers:
                x = layer(x, pos_flat, boxes, shapes, mask)
            x = self.encoder.norm(x)
        return x, mask, shapes
