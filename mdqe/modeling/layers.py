"""Small building blocks of MDQE's transformer: MLP heads, reference grids and precision helpers
(box conversions are in `box_ops`)."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "MLP",
    "autocast_off",
    "full_precision",
    "inverse_sigmoid",
    "pixel_centers",
    "shape_tensor",
]


class MLP(nn.Module):
    """`num_layers` Linear layers with GELU in between (none after the last).

    Parameter names (`layers.{i}.weight/bias`) are the original's.
    """

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        dims_in = [input_dim] + [hidden_dim] * (num_layers - 1)
        dims_out = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(d_in, d_out) for d_in, d_out in zip(dims_in, dims_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., input_dim) -> (..., output_dim)."""
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last:
                x = F.gelu(x)
        return x


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """log(x / (1 - x)) with x clamped to [0, 1] and both terms to >= eps (DETR's convention)."""
    x = x.clamp(min=0, max=1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


def pixel_centers(height: int, width: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Normalised pixel centres of an (height, width) map, row-major.

    The sizes may be symbolic (torch.compile / torch.export): nothing here reads them as Python numbers.

    Returns:
        (height * width, 2) float32 (x, y) = ((j + 0.5) / width, (i + 0.5) / height).
    """
    # arange + 0.5 is exact in float32 and equal to the original's linspace(0.5, n - 0.5, n) to the last
    # bit (both are i + 0.5; tests/modeling/test_traceable.py checks it)
    ys = torch.arange(height, dtype=torch.float32, device=device) + 0.5
    xs = torch.arange(width, dtype=torch.float32, device=device) + 0.5
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x.reshape(-1) / width, grid_y.reshape(-1) / height], dim=-1)


def shape_tensor(sizes: Sequence[tuple[int, int]], device: torch.device | str | None = None) -> torch.Tensor:
    """The (L, 2) int64 tensor of L (H, W) sizes.

    Built from scalar tensors, not `torch.as_tensor(sizes)`: with symbolic sizes (a dynamic-shape
    torch.compile or torch.export) `as_tensor` would bake the example's numbers into the graph.
    """
    return torch.stack(
        [torch.stack([torch.scalar_tensor(s, dtype=torch.long, device=device) for s in hw]) for hw in sizes]
    )


def full_precision(x: torch.Tensor) -> torch.Tensor:
    """`x` in float32 when it is half or bfloat16 (the autocast-free regions of the model), else as is,
    so that a float64 model stays float64."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def autocast_off(device_type: str) -> contextlib.AbstractContextManager:
    """A region in full precision: autocast disabled when it is enabled, else no context at all, so that
    a graph exported without autocast holds the region's ops at its top level (no autocast wrapper)."""
    if torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type=device_type, enabled=False)
    return contextlib.nullcontext()
