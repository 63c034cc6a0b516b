"""The op step of the GPU check: multi-scale deformable attention of one backend, timed at R50_ovis_360's
shapes (`op_shapes`) in fp32 and bf16, forward and forward+backward, with the forward's largest
difference from the grid_sample reference in float64 on the same (rounded) inputs.

The step's process runs with MDQE_MSDA_BACKEND set to the backend, and every call goes through the public
`mdqe.layers.ms_deform_attn`, as the model's do. Rows that cannot run here say why ("unavailable: ...");
an error raised by a kernel fails that shape and dtype's rows (and the step, at its end), not the others.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from mdqe.benchmark.timing import median_seconds
from mdqe.layers import ms_deform_attn, ms_deform_attn_pytorch
from mdqe.layers.msda_backend import MSDABackendError, select_backend

from .op_shapes import OpCall, OpShape, op_shapes
from .steps import OP_DTYPES, MeasurementErrors, Rows, StepContext, op_labels

__all__ = ["make_inputs", "max_difference", "op_step", "time_forward_backward"]

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
Inputs = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def make_inputs(call: OpCall, shape: OpShape, dtype: torch.dtype, device: torch.device) -> Inputs:
    """Random inputs of one call (seed 0), locations spread a little beyond [0, 1] as in training.

    Returns:
        value (N, S, M, D), spatial_shapes (L, 2) int64, level_start_index (L,) int64,
        sampling_locations (N, Lq, M, L, P, 2), attention_weights (N, Lq, M, L, P) (softmax over L * P).
    """
    gen = torch.Generator().manual_seed(0)
    shapes = torch.tensor(call.levels, dtype=torch.int64)
    sizes = shapes.prod(1)
    starts = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    n, q, m, levels, p = call.batch, call.queries, shape.heads, len(call.levels), shape.points
    value = torch.randn(n, int(sizes.sum()), m, shape.channels, generator=gen)
    locations = torch.rand(n, q, m, levels, p, 2, generator=gen) * 1.2 - 0.1
    weights = torch.randn(n, q, m, levels * p, generator=gen).softmax(-1).view(n, q, m, levels, p)
    floats = {"device": device, "dtype": dtype}
    return (
        value.to(**floats),
        shapes.to(device),
        starts.to(device),
        locations.to(**floats),
        weights.to(**floats),
    )


def max_difference(calls: list[Inputs]) -> float:
    """Largest |ms_deform_attn - float64 grid_sample reference| of the forward over `calls`."""
    worst = 0.0
    with torch.no_grad():
        for value, shapes, starts, locations, weights in calls:
            out = ms_deform_attn(value, shapes, starts, locations, weights)
            ref = ms_deform_attn_pytorch(value.double(), shapes, locations.double(), weights.double())
            worst = max(worst, (out.double() - ref).abs().max().item())
    return worst


def time_forward_backward(
    calls: list[Inputs], repeats: int, warmup: int, per_sample: int
) -> tuple[float, float]:
    """Median seconds of the forward (no grad) and of forward+backward (gradients of value, locations and
    weights for a fixed random output gradient) of all `calls` (`median_seconds`'s arguments)."""

    def forward() -> None:
        for value, shapes, starts, locations, weights in calls:
            ms_deform_attn(value, shapes, starts, locations, weights)

    with torch.no_grad():
        forward_s = median_seconds(forward, repeats, warmup, per_sample)
    leaves = [(v.requires_grad_(), loc.requires_grad_(), w.requires_grad_()) for v, _, _, loc, w in calls]
    gen = torch.Generator().manual_seed(1)
    grads = [
        torch.randn(v.shape[0], loc.shape[1], v.shape[2] * v.shape[3], generator=gen).to(v)
        for v, _, _, loc, _ in calls
    ]

    def forward_backward() -> None:
        for inputs, leaf, grad in zip(calls, leaves, grads):
            torch.autograd.grad(ms_deform_attn(*inputs), leaf, grad)

    both_s = median_seconds(forward_backward, repeats, warmup, per_sample)
    for v, _, _, loc, w in calls:
        for t in (v, loc, w):
            t.requires_grad_(False)
    return forward_s, both_s


def _unavailable(backend: str, dtype: torch.dtype, device: torch.device) -> str:
    """'' if `backend` runs on `dtype` tensors on `device`, else why not."""
    try:
        implementation = select_backend(device.type)
    except MSDABackendError as e:
        return str(e)
    if implementation == "extension" and device.type == "cpu" and dtype not in (torch.float32, torch.float64):
        return "mdqe._C's C++ CPU kernel takes fp32 and fp64 only"
    return ""


def op_step(ctx: StepContext, backend: str) -> Iterator[Rows]:
    """Rows of `backend` (this process's MDQE_MSDA_BACKEND) for every shape and dtype, fp32 first.
    GPU: the median of 10 samples of 5 calls after 3 warm-up calls; dry run (CPU): one call each."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    repeats, warmup, per_sample = (1, 0, 1) if ctx.dry_run else (10, 3, 5)
    errors = MeasurementErrors()
    for dtype_name in OP_DTYPES:
        dtype = DTYPES[dtype_name]
        for shape in op_shapes(ctx.dry_run):
            labels = op_labels(backend, shape.name, dtype_name)
            why_not = _unavailable(backend, dtype, device)
            if why_not:
                yield [(label, f"unavailable: {why_not}") for label in labels.values()]
                continue
            try:
                calls = [make_inputs(call, shape, dtype, device) for call in shape.calls]
                diff = max_difference(calls)
                forward_s, both_s = time_forward_backward(calls, repeats, warmup, per_sample)
            except Exception as e:  # reported in its rows; the other shapes and dtypes still run
                yield errors.failed(tuple(labels.values()), e)
                continue
            yield [
                (labels["forward"], f"{forward_s * 1e3:.3f}"),
                (labels["forward+backward"], f"{both_s * 1e3:.3f}"),
                (labels["diff"], f"{diff:.2e}"),
            ]
    errors.check()
