"""Multi-scale deformable attention: one Python function over the registered operators and the reference.

`ms_deform_attn` runs `torch.ops.mdqe.ms_deform_attn` (the C++ / CUDA kernels of `mdqe._C`),
`torch.ops.mdqe.ms_deform_attn_triton` (`mdqe.layers.msda_triton`) or the grid_sample reference
`ms_deform_attn_pytorch`, as `MDQE_MSDA_BACKEND` and the tensors' device decide
(`mdqe.layers.msda_backend`). The registered operators have fake kernels and registered autograd, so
`torch.compile` and `torch.export` hold each call as one node.

MDQE's attention module around reference boxes (`mdqe.modeling.deform_attn.MDQEDeformAttn`) calls
`ms_deform_attn`; Deformable DETR's point-reference module is not part of this codebase, as no MDQE part
uses it.

Shapes (Deformable DETR's convention), with N batch, S = sum_l H_l * W_l value tokens, M heads, D channels
per head, Lq queries, L levels and P points per level and head:

- value: (N, S, M, D), the levels flattened row-major and concatenated;
- spatial_shapes: (L, 2) int64, (H_l, W_l) of each level;
- level_start_index: (L,) int64, offset of each level in S;
- sampling_locations: (N, Lq, M, L, P, 2), normalised (x, y): (0, 0) is the top-left corner of the map and
  (1, 1) the bottom-right one; locations outside [0, 1] are allowed;
- attention_weights: (N, Lq, M, L, P);
- output: (N, Lq, M * D).

Sampling is bilinear with zeros outside the map and the align_corners=False convention: the pixel coordinate
of x is x * W - 0.5, exactly as `F.grid_sample(..., padding_mode="zeros", align_corners=False)`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import msda_op  # noqa: F401  (registers the fake kernels and autograd of mdqe._C's operators)
from .msda_backend import select_backend

__all__ = ["ms_deform_attn", "ms_deform_attn_pytorch"]


def ms_deform_attn_pytorch(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Reference implementation with `F.grid_sample`, one call per level.

    Args:
        value: (N, S, M, D).
        spatial_shapes: (L, 2) int64, (H, W) per level.
        sampling_locations: (N, Lq, M, L, P, 2) normalised (x, y).
        attention_weights: (N, Lq, M, L, P).

    Returns:
        (N, Lq, M * D).
    """
    n, _, m, d = value.shape
    _, lq, _, num_levels, num_points, _ = sampling_locations.shape
    sizes = [int(h) * int(w) for h, w in spatial_shapes.tolist()]
    value_levels = value.split(sizes, dim=1)
    grids = 2 * sampling_locations - 1
    sampled = []
    for lvl, (h, w) in enumerate(spatial_shapes.tolist()):
        # (N, H*W, M, D) -> (N*M, D, H, W)
        value_l = value_levels[lvl].flatten(2).transpose(1, 2).reshape(n * m, d, int(h), int(w))
        # (N, Lq, M, P, 2) -> (N*M, Lq, P, 2)
        grid_l = grids[:, :, :, lvl].transpose(1, 2).flatten(0, 1)
        # (N*M, D, Lq, P)
        sampled.append(
            F.grid_sample(value_l, grid_l, mode="bilinear", padding_mode="zeros", align_corners=False)
        )
    # (N, Lq, M, L, P) -> (N*M, 1, Lq, L*P)
    weights = attention_weights.transpose(1, 2).reshape(n * m, 1, lq, num_levels * num_points)
    output = (torch.stack(sampled, dim=-2).flatten(-2) * weights).sum(-1)
    return output.view(n, m * d, lq).transpose(1, 2).contiguous()


def _check_inputs(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> None:
    if value.dim() != 4:
        raise ValueError(f"ms_deform_attn: value must be (N, S, M, D), found shape {tuple(value.shape)}")
    n, s, m, _ = value.shape
    if spatial_shapes.dim() != 2 or spatial_shapes.shape[1] != 2:
        raise ValueError(
            f"ms_deform_attn: spatial_shapes must be (L, 2), found {tuple(spatial_shapes.shape)}"
        )
    num_levels = spatial_shapes.shape[0]
    if level_start_index.shape != (num_levels,):
        raise ValueError(
            f"ms_deform_attn: level_start_index must be ({num_levels},), "
            f"found {tuple(level_start_index.shape)}"
        )
    for name, index in (("spatial_shapes", spatial_shapes), ("level_start_index", level_start_index)):
        if index.dtype != torch.int64:
            raise ValueError(f"ms_deform_attn: {name} must be int64, found {index.dtype}")
    if sampling_locations.dim() != 6 or sampling_locations.shape[-1] != 2:
        raise ValueError(
            "ms_deform_attn: sampling_locations must be (N, Lq, M, L, P, 2), "
            f"found {tuple(sampling_locations.shape)}"
        )
    lq, num_points = sampling_locations.shape[1], sampling_locations.shape[4]
    expected = (n, lq, m, num_levels, num_points)
    if tuple(sampling_locations.shape[:-1]) != expected:
        raise ValueError(
            f"ms_deform_attn: sampling_locations must be {(*expected, 2)} for value {tuple(value.shape)} and "
            f"{num_levels} levels, found {tuple(sampling_locations.shape)}"
        )
    if tuple(attention_weights.shape) != expected:
        raise ValueError(
            f"ms_deform_attn: attention_weights must be {expected}, found {tuple(attention_weights.shape)}"
        )
    if not value.is_floating_point():
        raise ValueError(f"ms_deform_attn: value must be floating point, found {value.dtype}")
    for name, t in (("sampling_locations", sampling_locations), ("attention_weights", attention_weights)):
        if t.dtype != value.dtype:
            raise ValueError(f"ms_deform_attn: {name} must have value's dtype {value.dtype}, found {t.dtype}")
    for name, t in (
        ("spatial_shapes", spatial_shapes),
        ("level_start_index", level_start_index),
        ("sampling_locations", sampling_locations),
        ("attention_weights", attention_weights),
    ):
        if t.device != value.device:
            raise ValueError(f"ms_deform_attn: {name} is on {t.device} but value is on {value.device}")
    # reads the shapes' values: not on a GPU (a synchronisation) nor while tracing (they are unknown)
    if not (spatial_shapes.is_cuda or spatial_shapes.is_meta or torch.compiler.is_compiling()):
        total = int(spatial_shapes.prod(1).sum())
        if total != s:
            raise ValueError(
                f"ms_deform_attn: value has S={s} tokens but spatial_shapes {spatial_shapes.tolist()} "
                f"sum to {total}"
            )


def ms_deform_attn(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    im2col_step: int = 64,
) -> torch.Tensor:
    """Multi-scale deformable attention, differentiable in value, sampling_locations and
    attention_weights, with the implementation `MDQE_MSDA_BACKEND` selects (`mdqe.layers.msda_backend`).

    Args:
        value: (N, S, M, D) float32/float64 (also float16/bfloat16 on CUDA; arithmetic in float32).
        spatial_shapes: (L, 2) int64, (H, W) per level.
        level_start_index: (L,) int64, start of each level in S.
        sampling_locations: (N, Lq, M, L, P, 2) normalised (x, y), value's dtype.
        attention_weights: (N, Lq, M, L, P), value's dtype.
        im2col_step: accepted for compatibility with Deformable DETR's signature and unused: these
            kernels need no im2col buffer, so the batch is never chunked (and need not divide by it).

    Returns:
        (N, Lq, M * D), value's dtype.
    """
    _check_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    backend = select_backend(value.device.type)
    if backend == "extension":
        return torch.ops.mdqe.ms_deform_attn(
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights
        )
    if backend == "triton":
        from . import msda_triton  # noqa: F401  (imported on first use: it reads TRITON_INTERPRET)

        return torch.ops.mdqe.ms_deform_attn_triton(
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights
        )
    return ms_deform_attn_pytorch(value, spatial_shapes, sampling_locations, attention_weights)
