"""Triton kernels of multi-scale deformable attention: `torch.ops.mdqe.ms_deform_attn_triton`.

A GPU kernel that needs no compiler at install time: Triton compiles it on first use for the GPU present.
Under `TRITON_INTERPRET=1` (set before this module is imported) the same kernels run on CPU tensors, which
is how the tests check them on machines without a GPU.

Shapes and sampling convention are those of `mdqe.layers.ms_deform_attn`. Design:

- one program per (block of BLOCK_Q queries, batch element n, head m); its tile is (BLOCK_Q, D) with the D
  channels of a head contiguous in value (N, S, M, D), so a corner read is BLOCK_Q rows of D channels;
- levels, points, tokens, queries and heads are run-time arguments that Triton does not specialise on
  (`do_not_specialize`), and the batch only sizes the grid: a new frame size, clip length or batch reuses
  the compiled kernel. Only the channels per head (a constexpr, padded to a power of two) and the dtypes
  select a compilation;
- arithmetic in float32 whatever the input dtype; the value gradient is accumulated with atomic adds into a
  float32 buffer (bfloat16 atomics are slow or missing on many GPUs) and cast at the end;
- one fixed launch configuration per head dim, no autotuning: nothing is re-tuned for a new shape.

Compiled for a GPU, the operators are `torch.library.triton_op`s, which torch.compile sees into. Under the
interpreter they are opaque `torch.library.custom_op`s with fake kernels: the interpreter runs a kernel on
the tensors it is given and cannot run on the fake tensors that tracing uses.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from .msda_op import register_msda_operator

__all__ = [
    "INTERPRETED",
    "Launch",
    "backward_launch",
    "forward_launch",
    "launch_config",
    "ms_deform_attn_triton",
    "ms_deform_attn_triton_backward",
]

# The run-time sizes: Triton would otherwise specialise on a size equal to 1 or divisible by 16 and compile
# again for each such value.
_RUNTIME_SIZES = ["tokens", "queries", "heads", "levels", "points"]


@triton.jit
def _stencil(loc_ptr, loc_index, height, width, q_mask):
    """Bilinear stencil of one sample for a block of queries.

    Returns pixel coordinates of the top-left corner (x0, y0) (int64), the position inside the cell
    (fx, fy) and `inside`: False where no corner can be on the map (or the location is NaN).
    """
    x = tl.load(loc_ptr + loc_index, mask=q_mask, other=0.0).to(tl.float32)
    y = tl.load(loc_ptr + loc_index + 1, mask=q_mask, other=0.0).to(tl.float32)
    w = width.to(tl.float32)
    h = height.to(tl.float32)
    px = x * w - 0.5
    py = y * h - 0.5
    inside = (px > -1.0) & (py > -1.0) & (px < w) & (py < h) & q_mask
    # off-map locations are moved to 0 so that the integer conversion below stays in range
    px = tl.where(inside, px, 0.0)
    py = tl.where(inside, py, 0.0)
    x0f = tl.floor(px)
    y0f = tl.floor(py)
    return x0f.to(tl.int64), y0f.to(tl.int64), px - x0f, py - y0f, inside


@triton.jit
def _corner(x0, y0, fx, fy, inside, height, width, DX: tl.constexpr, DY: tl.constexpr):
    """Corner (x0 + DX, y0 + DY): its pixel index in the level (0 where off the map), whether it is on the
    map, and its bilinear weights along x and y."""
    xx = x0 + DX
    yy = y0 + DY
    on_map = inside & (xx >= 0) & (xx < width) & (yy >= 0) & (yy < height)
    pixel = tl.where(on_map, yy * width + xx, 0)
    wx = fx if DX == 1 else 1.0 - fx
    wy = fy if DY == 1 else 1.0 - fy
    return pixel, on_map, wx, wy


@triton.jit
def _program_tile(
    tokens, queries, heads, CHANNELS: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_D: tl.constexpr
):
    """This program's tile: the (n, q, m) indices of its BLOCK_Q queries (int64), the channel offsets d,
    the query and channel masks, and the offset of its value rows' channels, (BLOCK_Q, BLOCK_D) without
    the row term: n * S * M * D + m * D + d."""
    pid_nm = tl.program_id(1).to(tl.int64)
    n = pid_nm // heads
    m = pid_nm % heads
    q = tl.program_id(0).to(tl.int64) * BLOCK_Q + tl.arange(0, BLOCK_Q)
    d = tl.arange(0, BLOCK_D)
    qm = (n * queries + q) * heads + m
    value_offset = n * tokens * heads * CHANNELS + m * CHANNELS + d[None, :]
    return qm, d, q < queries, d < CHANNELS, value_offset


@triton.jit(do_not_specialize=_RUNTIME_SIZES)
def _forward_kernel(
    value_ptr,  # (N, S, M, D)
    shapes_ptr,  # (L, 2) int64
    starts_ptr,  # (L,) int64
    loc_ptr,  # (N, Lq, M, L, P, 2)
    attn_ptr,  # (N, Lq, M, L, P)
    out_ptr,  # (N, Lq, M * D)
    tokens,
    queries,
    heads,
    levels,
    points,
    CHANNELS: tl.constexpr,
    BLOCK_Q: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    qm, d, q_mask, d_mask, value_offset = _program_tile(
        tokens, queries, heads, CHANNELS=CHANNELS, BLOCK_Q=BLOCK_Q, BLOCK_D=BLOCK_D
    )
    samples = levels * points
    row_stride = heads * CHANNELS
    value_base = value_ptr + value_offset
    acc = tl.zeros((BLOCK_Q, BLOCK_D), dtype=tl.float32)
    for lvl in range(levels):
        height = tl.load(shapes_ptr + 2 * lvl)
        width = tl.load(shapes_ptr + 2 * lvl + 1)
        start = tl.load(starts_ptr + lvl)
        for p in range(points):
            i = lvl * points + p
            x0, y0, fx, fy, inside = _stencil(loc_ptr, (qm * samples + i) * 2, height, width, q_mask)
            a = tl.load(attn_ptr + qm * samples + i, mask=q_mask, other=0.0).to(tl.float32)
            for c in tl.static_range(4):
                pixel, on_map, wx, wy = _corner(x0, y0, fx, fy, inside, height, width, c % 2, c // 2)
                ptr = value_base + (start + pixel)[:, None] * row_stride
                v = tl.load(ptr, mask=on_map[:, None] & d_mask[None, :], other=0.0).to(tl.float32)
                acc += (a * wx * wy)[:, None] * v
    out = out_ptr + qm[:, None] * CHANNELS + d[None, :]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=q_mask[:, None] & d_mask[None, :])


@triton.jit(do_not_specialize=_RUNTIME_SIZES)
def _backward_kernel(
    value_ptr,  # (N, S, M, D)
    shapes_ptr,  # (L, 2) int64
    starts_ptr,  # (L,) int64
    loc_ptr,  # (N, Lq, M, L, P, 2)
    attn_ptr,  # (N, Lq, M, L, P)
    grad_out_ptr,  # (N, Lq, M * D)
    grad_value_ptr,  # (N, S, M, D) float32, zero-initialised
    grad_loc_ptr,  # (N, Lq, M, L, P, 2)
    grad_attn_ptr,  # (N, Lq, M, L, P)
    tokens,
    queries,
    heads,
    levels,
    points,
    CHANNELS: tl.constexpr,
    BLOCK_Q: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    qm, d, q_mask, d_mask, value_offset = _program_tile(
        tokens, queries, heads, CHANNELS=CHANNELS, BLOCK_Q=BLOCK_Q, BLOCK_D=BLOCK_D
    )
    samples = levels * points
    row_stride = heads * CHANNELS
    tile_mask = q_mask[:, None] & d_mask[None, :]
    g = tl.load(grad_out_ptr + qm[:, None] * CHANNELS + d[None, :], mask=tile_mask, other=0.0).to(tl.float32)
    for lvl in range(levels):
        height = tl.load(shapes_ptr + 2 * lvl)
        width = tl.load(shapes_ptr + 2 * lvl + 1)
        start = tl.load(starts_ptr + lvl)
        for p in range(points):
            i = lvl * points + p
            x0, y0, fx, fy, inside = _stencil(loc_ptr, (qm * samples + i) * 2, height, width, q_mask)
            a = tl.load(attn_ptr + qm * samples + i, mask=q_mask, other=0.0).to(tl.float32)
            grad_a = tl.zeros((BLOCK_Q,), dtype=tl.float32)
            grad_px = tl.zeros((BLOCK_Q,), dtype=tl.float32)
            grad_py = tl.zeros((BLOCK_Q,), dtype=tl.float32)
            for c in tl.static_range(4):
                pixel, on_map, wx, wy = _corner(x0, y0, fx, fy, inside, height, width, c % 2, c // 2)
                offset = value_offset + (start + pixel)[:, None] * row_stride
                corner_mask = on_map[:, None] & d_mask[None, :]
                v = tl.load(value_ptr + offset, mask=corner_mask, other=0.0).to(tl.float32)
                dot = tl.sum(v * g, axis=1)  # <value row, grad_output>, 0 off the map
                grad_a += wx * wy * dot
                # d(wx)/d(px) is +1 for the right corners and -1 for the left ones; likewise for y
                grad_px += (wy * dot) if c % 2 == 1 else -(wy * dot)
                grad_py += (wx * dot) if c // 2 == 1 else -(wx * dot)
                tl.atomic_add(grad_value_ptr + offset, (a * wx * wy)[:, None] * g, mask=corner_mask)
            tl.store(grad_attn_ptr + qm * samples + i, grad_a.to(grad_attn_ptr.dtype.element_ty), mask=q_mask)
            grad_x = a * width.to(tl.float32) * grad_px
            grad_y = a * height.to(tl.float32) * grad_py
            loc_index = (qm * samples + i) * 2
            tl.store(grad_loc_ptr + loc_index, grad_x.to(grad_loc_ptr.dtype.element_ty), mask=q_mask)
            tl.store(grad_loc_ptr + loc_index + 1, grad_y.to(grad_loc_ptr.dtype.element_ty), mask=q_mask)


def launch_config(channels: int, backward: bool = False) -> dict[str, int]:
    """The fixed launch configuration for D channels per head: the tile is (BLOCK_Q, BLOCK_D) with
    BLOCK_D = D rounded up to a power of two, and 8 elements per thread at 4 warps in the forward, 4 in
    the backward (which holds four corner tiles, the output gradient and the atomics' addresses). For
    D = 32, ptxas gives the forward 72 registers on sm_80 and sm_90, the backward 116 on sm_80 and 54 on
    sm_90, no spills; twice the elements per thread took about twice the registers (up to 230), so a
    third of the warps per multiprocessor, for a kernel that waits on gathers."""
    block_d = triton.next_power_of_2(channels)
    elements = 512 if backward else 1024
    return {
        "BLOCK_Q": max(16, min(64, elements // block_d)),
        "BLOCK_D": block_d,
        "num_warps": 4,
    }


INTERPRETED = not isinstance(_forward_kernel, triton.runtime.JITFunction)
_define_op = torch.library.custom_op if INTERPRETED else torch.library.triton_op


class Launch(NamedTuple):
    """One kernel launch: `kernel[grid](*args, **kwargs)`."""

    grid: tuple[int, int]
    args: tuple
    kwargs: dict


def forward_launch(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    output: torch.Tensor,
) -> Launch:
    """The launch of `_forward_kernel` that writes `output` (N, Lq, M * D) (contiguous); the other
    arguments as `mdqe.layers.ms_deform_attn`."""
    n, s, m, d = value.shape
    _, lq, _, num_levels, num_points, _ = sampling_locations.shape
    config = launch_config(d)
    inputs = (value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    return Launch(
        grid=(triton.cdiv(lq, config["BLOCK_Q"]), n * m),
        args=(*(t.contiguous() for t in inputs), output, s, lq, m, num_levels, num_points),
        kwargs={"CHANNELS": d, **config},
    )


def backward_launch(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    grad_output: torch.Tensor,
    grad_value: torch.Tensor,
    grad_locations: torch.Tensor,
    grad_weights: torch.Tensor,
) -> Launch:
    """The launch of `_backward_kernel` for `grad_output` (N, Lq, M * D) that accumulates into
    `grad_value` (N, S, M, D) float32 (zeroed) and writes `grad_locations`, `grad_weights` (contiguous)."""
    n, s, m, d = value.shape
    _, lq, _, num_levels, num_points, _ = sampling_locations.shape
    config = launch_config(d, backward=True)
    inputs = (value, spatial_shapes, level_start_index, sampling_locations, attention_weights, grad_output)
    return Launch(
        grid=(triton.cdiv(lq, config["BLOCK_Q"]), n * m),
        args=(
            *(t.contiguous() for t in inputs),
            grad_value,
            grad_locations,
            grad_weights,
            *(s, lq, m, num_levels, num_points),
        ),
        kwargs={"CHANNELS": d, **config},
    )


@_define_op("mdqe::ms_deform_attn_triton", mutates_args=())
def ms_deform_attn_triton(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Forward with the Triton kernel; arguments and result as `mdqe.layers.ms_deform_attn`."""
    n, _, m, d = value.shape
    output = value.new_empty(n, sampling_locations.shape[1], m * d)
    inputs = (value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    launch = forward_launch(*inputs, output)
    torch.library.wrap_triton(_forward_kernel)[launch.grid](*launch.args, **launch.kwargs)
    return output


@_define_op("mdqe::ms_deform_attn_triton_backward", mutates_args=())
def ms_deform_attn_triton_backward(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    grad_output: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients (value, sampling_locations, attention_weights) of the forward for `grad_output`
    (N, Lq, M * D), each in its input's dtype."""
    grad_value = torch.zeros(value.shape, dtype=torch.float32, device=value.device)
    grad_locations = torch.empty_like(sampling_locations, memory_format=torch.contiguous_format)
    grad_weights = torch.empty_like(attention_weights, memory_format=torch.contiguous_format)
    inputs = (value, spatial_shapes, level_start_index, sampling_locations, attention_weights, grad_output)
    launch = backward_launch(*inputs, grad_value, grad_locations, grad_weights)
    torch.library.wrap_triton(_backward_kernel)[launch.grid](*launch.args, **launch.kwargs)
    return grad_value.to(value.dtype), grad_locations, grad_weights


# a triton_op's own function is its fake kernel; the interpreted custom ops get the shape kernels
register_msda_operator(
    "mdqe::ms_deform_attn_triton", "mdqe::ms_deform_attn_triton_backward", fake=INTERPRETED
)
