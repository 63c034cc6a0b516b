"""The registered operators of multi-scale deformable attention, on the Python side.

`mdqe._C` (ops/csrc) defines `torch.ops.mdqe.ms_deform_attn` and `torch.ops.mdqe.ms_deform_attn_backward`
with `TORCH_LIBRARY` and registers their C++ CPU kernel, and their CUDA kernel when built with CUDA. This
module loads it and registers what makes the operator a first-class PyTorch op: fake (shape) kernels, so
that `torch.compile` and `torch.export` trace it as one node, and its autograd formula. The Triton
operators (`mdqe.layers.msda_triton`) use the same autograd glue.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType

import torch

__all__ = ["EXTENSION", "extension_has_cuda", "register_msda_autograd"]


def _load_extension() -> ModuleType | None:
    try:
        return importlib.import_module("mdqe._C")
    except ImportError:  # the extension is optional: callers fall back to Triton or the PyTorch reference
        return None


EXTENSION = _load_extension()


def extension_has_cuda() -> bool:
    """Whether `mdqe._C` is built and holds the CUDA kernel."""
    return EXTENSION is not None and bool(EXTENSION.with_cuda())


def register_msda_autograd(forward_op: str, backward_op: Callable[..., tuple[torch.Tensor, ...]]) -> None:
    """Register the autograd of a forward operator `(value, spatial_shapes, level_start_index,
    sampling_locations, attention_weights) -> (N, Lq, M * D)` whose gradients (value, sampling_locations,
    attention_weights) come from `backward_op(*inputs, grad_output)`. The gradients are not differentiable
    again (the kernels have no double backward)."""

    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(*inputs)

    def backward(ctx, grad_output):
        grad_value, grad_locations, grad_weights = backward_op(*ctx.saved_tensors, grad_output)
        return grad_value, None, None, grad_locations, grad_weights

    torch.library.register_autograd(forward_op, backward, setup_context=setup_context)


if EXTENSION is not None:

    @torch.library.register_fake("mdqe::ms_deform_attn")
    def _forward_fake(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
        # (N, S, M, D), (N, Lq, M, L, P, 2) -> (N, Lq, M * D)
        return value.new_empty(value.shape[0], sampling_locations.shape[1], value.shape[2] * value.shape[3])

    @torch.library.register_fake("mdqe::ms_deform_attn_backward")
    def _backward_fake(
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights, grad_output
    ):
        return tuple(
            torch.empty_like(t, memory_format=torch.contiguous_format)
            for t in (value, sampling_locations, attention_weights)
        )

    register_msda_autograd("mdqe::ms_deform_attn", torch.ops.mdqe.ms_deform_attn_backward)
