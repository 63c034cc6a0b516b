"""The helpers that keep the model traceable with symbolic frame sizes equal what they replaced."""

from __future__ import annotations

import math

import torch
from torch.export import Dim

from mdqe.modeling.layers import autocast_off, pixel_centers, shape_tensor
from mdqe.modeling.masked_backbone import padding_masks


def test_pixel_centers_equal_the_originals_linspace_to_the_last_bit():
    for height, width in [(1, 1), (1, 7), (45, 80), (23, 40), (97, 1), (1000, 1333)]:
        ys = torch.linspace(0.5, height - 0.5, height, dtype=torch.float32)
        xs = torch.linspace(0.5, width - 0.5, width, dtype=torch.float32)
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        original = torch.stack([grid_x.reshape(-1) / width, grid_y.reshape(-1) / height], dim=-1)
        assert torch.equal(pixel_centers(height, width), original), (height, width)


class _Shapes(torch.nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return shape_tensor([a.shape[-2:], b.shape[-2:]])


def test_shape_tensor_keeps_sizes_symbolic_in_an_exported_graph():
    dims = ({2: Dim("h0"), 3: Dim("w0")}, {2: Dim("h1"), 3: Dim("w1")})
    program = torch.export.export(
        _Shapes(), (torch.zeros(1, 1, 6, 8), torch.zeros(1, 1, 3, 4)), dynamic_shapes=dims
    )
    out = program.module()(torch.zeros(1, 1, 9, 10), torch.zeros(1, 1, 5, 7))
    assert torch.equal(out, torch.tensor([[9, 10], [5, 7]]))
    assert out.dtype == torch.long


def test_padding_masks_cover_the_pixels_past_each_images_ceiled_size():
    sizes = [(61, 90), (64, 96), (33, 1)]
    masks = padding_masks((8, 12), 8, torch.tensor(sizes))
    for mask, (h, w) in zip(masks, sizes):
        expected = torch.ones(8, 12, dtype=torch.bool)
        expected[: math.ceil(h / 8), : math.ceil(w / 8)] = False
        assert torch.equal(mask, expected), (h, w)


def test_autocast_off_disables_autocast_only_where_it_is_on():
    x = torch.ones(2, 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert (x @ x).dtype == torch.bfloat16
        with autocast_off("cpu"):
            assert (x @ x).dtype == torch.float32
    with autocast_off("cpu"):
        assert not torch.is_autocast_enabled("cpu")
