"""The registered operators of multi-scale deformable attention, on the Python side.

`mdqe._C` (ops/csrc) defines `torch.ops.mdqe.ms_deform_attn` and `torch.ops.mdqe.ms_deform_attn_backward`
with `TORCH_LIBRARY` and registers their C++ CPU kernel, and their CUDA kernel when built with CUDA. This
module loads it and registers what makes the operator a first-class PyTorch op: fake (shape) kernels, so
that `torch.compile` and `torch.export` trace it as one node, and its autograd formula. The Triton
operators (`mdqe.layers.msda_triton`) use the same autograd glue.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import torch

__all__ = ["EXTENSION", "backward_fake", "extension_has_cuda", "forward_fake", "register_msda_operator"]


def _load_extension() -> ModuleType | None:
    try:
        return importlib.import_module("mdqe._C")
    except ImportError:  # the extension is optional: callers fall back to Triton or the PyTorch reference
        return None


EXTENSION = _load_extension()


def extension_has_cuda() -> bool:
    """Whether `mdqe._C` is built and holds the CUDA kernel."""
    return EXTENSION is not None and bool(EXTENSION.with_cuda())


def forward_fake(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Shape kernel of the forward: value (N, S, M, D), sampling_locations (N, Lq, M, L, P, 2) ->
    (N, Lq, M * D)."""
    return value.new_empty(value.shape[0], sampling_locations.shape[1], value.shape[2] * value.shape[3])


def backward_fake(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    grad_output: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Shape kernel of the backward: contiguous gradients shaped as value, sampling_locations and
    attention_weights."""
    return tuple(
        torch.empty_like(t, memory_format=torch.contiguous_format)
        for t in (value, sampling_locations, attention_weights)
    )


def register_msda_operator(forward_op: str, backward_op: str, *, fake: bool = True) -> None:
    """Register the fake kernels (unless `fake` is False: the operator has its own) and the autograd of a
    forward operator `(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    -> (N, Lq, M * D)` whose gradients (value, sampling_locations, attention_weights) come from
    `backward_op(*inputs, grad_output)`. The gradients are not differentiable again (the kernels have no
    double backward)."""
    if fake:
        torch.library.register_fake(forward_op, forward_fake)
        torch.library.register_fake(backward_op, backward_fake)
    namespace, name = backward_op.split("::")
    backward_kernel = getattr(getattr(torch.ops, namespace), name)

    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(*inputs)

    def backward(ctx, grad_output):
        grad_value, grad_locations, grad_weights = backward_kernel(*ctx.saved_tensors, grad_output)
        return grad_value, None, None, grad_locations, grad_weights

    torch.library.register_autograd(forward_op, backward, setup_context=setup_context)


if EXTENSION is not None:
    register_msda_operator("mdqe::ms_deform_attn", "mdqe::ms_deform_attn_backward")
