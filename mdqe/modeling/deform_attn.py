"""MDQE's multi-scale deformable attention (a SeqFormer-style variant of Deformable DETR's).

It differs from Deformable DETR's module:

- the reference of every query is a box (cx, cy, w, h), shared by all levels (no valid ratios);
- sampling locations are `(cx, cy) + offset / 8`, offsets NOT normalised by the level size;
- with `pred_offsets` (encoder) the offsets are predicted by `sampling_offsets`; without (decoder)
  they are a fixed grid (the float buffer `sampling_offsets`) scaled by half the box size, plus
  predicted offsets (`sampling_grid_offsets`) clamped to +-8 times the box size;
- in "temporal" mode the attended "levels" are the T frames of a clip: for each feature level the T
  frames of that level are attended with the same locations and weights, and the per-level results
  are averaged.

Parameter and buffer names and layouts (head-major: (H, L, K, xy)) are the original's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mdqe.layers import ms_deform_attn

from .layers import full_precision

__all__ = ["MDQEDeformAttn", "level_start_index"]

_OFFSET_SCALE = 8.0


def level_start_index(spatial_shapes: torch.Tensor) -> torch.Tensor:
    """spatial_shapes: (L, 2) int64 (H, W) -> (L,) int64 start of each level in the flattened tokens."""
    sizes = spatial_shapes.prod(-1)
    return torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])


class MDQEDeformAttn(nn.Module):
    """Deformable attention around reference boxes, over feature levels ("spatial") or frames
    ("temporal")."""

    def __init__(
        self,
        d_model: int = 256,
        n_levels: int = 4,
        n_heads: int = 8,
        n_points: int = 4,
        n_frames: int = 1,
        pred_offsets: bool = True,
        mode: str = "spatial",
    ):
        """
        Args:
            d_model: channels C.
            n_levels: feature levels.
            n_heads: attention heads H.
            n_points: sampling points K per head and level (or frame).
            n_frames: frames T attended in "temporal" mode (sizes the parameters there).
            pred_offsets: predict the offsets (encoder) or use a fixed grid plus bounded ones (decoder).
            mode: "spatial" (attend the levels of one frame) or "temporal" (the frames of a clip).
        """
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f"MDQEDeformAttn: d_model={d_model} must be divisible by n_heads={n_heads}")
        if mode not in ("spatial", "temporal"):
            raise ValueError(f"MDQEDeformAttn: mode must be 'spatial' or 'temporal', got {mode!r}")
        self.d_model = d_model
        self.n_levels = n_levels
        self.n_heads = n_heads
        self.n_points = n_points
        self.n_frames = n_frames
        self.pred_offsets = pred_offsets
        self.mode = mode
        # number of attended "levels": feature levels, or frames in temporal mode
        self.lvl = n_levels if mode == "spatial" else n_frames
        scales = torch.arange(1, self.lvl + 1) if mode == "spatial" else torch.full((self.lvl,), 2)
        self.register_buffer("lvl_spatial_scales", scales)

        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self.attention_weights = nn.Linear(d_model, n_heads * self.lvl * n_points)
        num_offsets = n_heads * self.lvl * n_points * 2
        if pred_offsets:
            self.sampling_offsets = nn.Linear(d_model, num_offsets)
        else:
            self.sampling_grid_offsets = nn.Linear(d_model, num_offsets)
            self.register_buffer("sampling_offsets", torch.zeros(1, 1, n_heads, self.lvl, n_points, 2))
        self._reset_parameters()

    def _base_grid(self) -> torch.Tensor:
        """(H, lvl, K, 2): per head a direction on the square, the k-th point at (k + 1) / K * 8."""
        angles = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        directions = torch.stack([angles.cos(), angles.sin()], dim=-1)
        directions = directions / directions.abs().max(dim=-1, keepdim=True).values
        steps = torch.arange(1, self.n_points + 1, dtype=torch.float32)
        grid = directions[:, None, None, :] * steps[None, None, :, None]
        grid = grid.expand(self.n_heads, self.lvl, self.n_points, 2)
        return grid / self.n_points * _OFFSET_SCALE

    def _reset_parameters(self) -> None:
        grid = self._base_grid()
        with torch.no_grad():
            if self.pred_offsets:
                nn.init.zeros_(self.sampling_offsets.weight)
                scales = self.lvl_spatial_scales.to(grid.dtype).reshape(1, -1, 1, 1)
                self.sampling_offsets.bias.copy_((grid * 0.05 * scales).reshape(-1))
            else:
                self.sampling_offsets.copy_(grid[None, None])
                nn.init.zeros_(self.sampling_grid_offsets.weight)
                nn.init.zeros_(self.sampling_grid_offsets.bias)
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for proj in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(proj.weight)
            nn.init.zeros_(proj.bias)

    def project_value(self, src: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Values of the attended tokens.

        Args:
            src: (..., S, C) tokens.
            padding_mask: (..., S) bool, True at padded tokens (their values are zeroed).

        Returns:
            (..., S, H, C / H).
        """
        value = self.value_proj(src)
        if padding_mask is not None:
            value = value.masked_fill(padding_mask[..., None], 0.0)
        return value.unflatten(-1, (self.n_heads, self.d_model // self.n_heads))

    def _locations_and_weights(
        self, query: torch.Tensor, reference_boxes: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            query: (N, Q, C).
            reference_boxes: (N, Q, 4) normalised (cx, cy, w, h).

        Returns:
            sampling locations (N, Q, H, lvl, K, 2) normalised (x, y), and attention weights
            (N, Q, H, lvl, K) (softmax over lvl * K per head).
        """
        n, q, _ = query.shape
        shape = (n, q, self.n_heads, self.lvl, self.n_points, 2)
        ref = reference_boxes[:, :, None, None, None, :]
        if self.pred_offsets:
            offsets = self.sampling_offsets(query).view(shape)
        else:
            half_span = ref[..., 2:]
            limit = half_span * _OFFSET_SCALE
            learned = self.sampling_grid_offsets(query).view(shape).to(ref.dtype)
            learned = torch.minimum(torch.maximum(learned, -limit), limit)
            offsets = self.sampling_offsets * 0.5 * half_span + learned
        locations = ref[..., :2] + offsets / _OFFSET_SCALE
        weights = self.attention_weights(query).view(n, q, self.n_heads, self.lvl * self.n_points)
        weights = F.softmax(weights, dim=-1).view(n, q, self.n_heads, self.lvl, self.n_points)
        return locations, weights

    def project_value_levels(
        self,
        src: torch.Tensor,
        spatial_shapes: torch.Tensor | Sequence[tuple[int, int]],
        padding_mask: torch.Tensor | None = None,
    ) -> list[torch.Tensor]:
        """`project_value` split into contiguous per-level tensors, the layout of "temporal" mode.

        Args:
            src: (N, S, C) tokens of N frames.
            spatial_shapes: the L level sizes (H_l, W_l) as ints (what torch.compile / torch.export can
                trace), or as an (L, 2) int64 tensor (read on the host).
            padding_mask: (N, S) bool.

        Returns:
            per level (N, H_l * W_l, H, C / H), contiguous.
        """
        if isinstance(spatial_shapes, torch.Tensor):
            spatial_shapes = spatial_shapes.tolist()
        value = self.project_value(src, padding_mask)
        return [v.contiguous() for v in value.split([h * w for h, w in spatial_shapes], dim=1)]

    def forward(
        self,
        query: torch.Tensor,
        reference_boxes: torch.Tensor,
        value: torch.Tensor | list[torch.Tensor],
        spatial_shapes: torch.Tensor,
    ) -> torch.Tensor:
        """
        Args:
            query: (N, Q, C) queries (with their position embedding).
            reference_boxes: (N, Q, 4) normalised (cx, cy, w, h).
            value: "spatial" mode: (N, S, H, D) from `project_value`, S = sum_l H_l * W_l;
                "temporal" mode: per level l, (N, T, H_l * W_l, H, D) with T = n_frames (from
                `project_value_levels`; contiguous ones are used without a copy).
            spatial_shapes: (L, 2) int64 (H_l, W_l) of the feature levels.

        Returns:
            (N, Q, C).
        """
        if torch.is_autocast_enabled(query.device.type):
            # offsets, weights and sampling in full precision, as the original; outside autocast the context
            # is left out, so that an exported graph holds the attention op at its top level
            with torch.autocast(device_type=query.device.type, enabled=False):
                return self._attend(query, reference_boxes, value, spatial_shapes)
        return self._attend(query, reference_boxes, value, spatial_shapes)

    def _attend(
        self,
        query: torch.Tensor,
        reference_boxes: torch.Tensor,
        value: torch.Tensor | list[torch.Tensor],
        spatial_shapes: torch.Tensor,
    ) -> torch.Tensor:
        """`forward` in full precision, outside autocast."""
        query = full_precision(query)
        reference_boxes = full_precision(reference_boxes)
        locations, weights = self._locations_and_weights(query, reference_boxes)
        if self.mode == "spatial":
            starts = level_start_index(spatial_shapes)
            out = ms_deform_attn(full_precision(value), spatial_shapes, starts, locations, weights)
        else:
            out = self._temporal([full_precision(v) for v in value], spatial_shapes, locations, weights)
        return self.output_proj(out)

    def _temporal(
        self,
        values: list[torch.Tensor],
        spatial_shapes: torch.Tensor,
        locations: torch.Tensor,
        weights: torch.Tensor,
    ) -> torch.Tensor:
        """values: per level (N, T, S_l, H, D); locations (N, Q, H, T, K, 2); weights (N, Q, H, T, K)
        -> (N, Q, C)."""
        outputs = []
        # one call per feature level: the T frames of a level are the T "levels" of the op
        for value_l, shape_l in zip(values, spatial_shapes):
            num_frames, size_l = value_l.shape[1], value_l.shape[2]
            shapes_t = shape_l.expand(num_frames, 2).contiguous()
            starts_t = torch.arange(num_frames, device=spatial_shapes.device) * size_l
            outputs.append(ms_deform_attn(value_l.flatten(1, 2), shapes_t, starts_t, locations, weights))
        return torch.stack(outputs).mean(0)
