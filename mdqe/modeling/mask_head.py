"""The mask-feature head ("Mask Net"): encoder levels -> stride-4 mask features (YOLACT-style)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DepthwiseSeparableConv2d", "MaskHead"]


def _group_count(channels: int) -> int:
    # 32 groups, else 24 (Swin-L's 24 mask channels), as the original; smaller divisors only for the
    # tiny test models the original cannot build
    for groups in (32, 24, 16, 8, 4, 2, 1):
        if channels % groups == 0:
            return groups
    raise AssertionError("unreachable")


class DepthwiseSeparableConv2d(nn.Module):
    """Depthwise k x k conv, pointwise 1 x 1 conv, GroupNorm, ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 5, padding: int = 2):
        super().__init__()
        self.depthwise = nn.Conv2d(in_channels, in_channels, kernel_size, padding=padding, groups=in_channels)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1)
        self.gn = nn.GroupNorm(_group_count(out_channels), out_channels)
        for conv in (self.depthwise, self.pointwise):
            nn.init.kaiming_uniform_(conv.weight, a=1)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, C_in, H, W) -> (N, C_out, H, W)."""
        return F.relu(self.gn(self.pointwise(self.depthwise(x))))


class MaskHead(nn.Module):
    """Top-down fusion of the stride-32/16/8 encoder maps, then a x2 upsample to stride 4 and a
    projection to `mask_dim` (by default `hidden_dim // 8`, the original's) non-negative mask feature
    channels.

    `init_scale` is the initial GroupNorm weight of the last layer, i.e. the initial scale of the mask
    features (1.0, PyTorch's default, is the original's). It only matters when training from scratch:
    mask logits are `tanh(coefficients) . features`, so with unit-scale features confident masks need
    saturated coefficients, and from random features the coefficients of all queries saturate to one
    shared "any object" pattern before the queries can tell instances apart. Larger features keep the
    coefficients in tanh's linear range while that happens.
    """

    def __init__(self, hidden_dim: int, init_scale: float = 1.0, mask_dim: int = 0):
        super().__init__()
        self.mask_dim = mask_dim or hidden_dim // 8
        self.lay1 = nn.Conv2d(hidden_dim, hidden_dim, 3, padding=1)
        self.gn1 = nn.GroupNorm(8, hidden_dim)
        self.lay2 = nn.Conv2d(hidden_dim, hidden_dim, 3, padding=1)
        self.gn2 = nn.GroupNorm(8, hidden_dim)
        self.lay3 = nn.Conv2d(hidden_dim, hidden_dim, 3, padding=1)
        self.gn3 = nn.GroupNorm(8, hidden_dim)
        self.out_lay1 = DepthwiseSeparableConv2d(hidden_dim, hidden_dim, 5, padding=2)
        # kernel 1, stride 2, groups=C: w*x + b at even positions, b at odd ones (the original's upsample)
        self.out_uplay = nn.ConvTranspose2d(
            hidden_dim, hidden_dim, 1, stride=2, output_padding=1, groups=hidden_dim
        )
        self.out_lay2 = DepthwiseSeparableConv2d(hidden_dim, self.mask_dim, 5, padding=2)
        self.adapter1 = nn.Conv2d(hidden_dim, hidden_dim, 1)
        self.adapter2 = nn.Conv2d(hidden_dim, hidden_dim, 1)
        for conv in (self.lay1, self.lay2, self.lay3, self.adapter1, self.adapter2):
            nn.init.kaiming_uniform_(conv.weight, a=1)
            nn.init.zeros_(conv.bias)
        nn.init.constant_(self.out_lay2.gn.weight, init_scale)

    def forward(self, level8: torch.Tensor, level16: torch.Tensor, level32: torch.Tensor) -> torch.Tensor:
        """
        Args:
            level8, level16, level32: (N, C, H_l, W_l) encoder maps at strides 8, 16 and 32.

        Returns:
            (N, mask_dim, 2 H_8, 2 W_8) mask features (>= 0) at stride 4.
        """
        x = F.gelu(self.gn1(self.lay1(level32)))
        skip = self.adapter1(level16)
        x = F.gelu(self.gn2(self.lay2(skip + F.interpolate(x, size=skip.shape[-2:], mode="nearest"))))
        skip = self.adapter2(level8)
        x = F.gelu(self.gn3(self.lay3(skip + F.interpolate(x, size=skip.shape[-2:], mode="nearest"))))
        return self.out_lay2(self.out_uplay(self.out_lay1(x)))
