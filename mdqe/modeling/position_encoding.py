"""Sine position encoding of a padded feature map (DETR's, normalised)."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["PositionEmbeddingSine"]


class PositionEmbeddingSine(nn.Module):
    """2-D sine/cosine encoding of the cumulative row and column positions of valid pixels.

    With `normalize`, positions are divided by the number of valid rows/columns (+1e-6) and scaled to
    [0, 2 pi]. Channels: `num_pos_feats` for y, then `num_pos_feats` for x; within each, sin at even
    and cos at odd indices. The module has no state.
    """

    def __init__(
        self,
        num_pos_feats: int = 64,
        temperature: float = 10000,
        normalize: bool = False,
        scale: float | None = None,
    ):
        super().__init__()
        if scale is not None and not normalize:
            raise ValueError("PositionEmbeddingSine: `scale` needs normalize=True")
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = 2 * math.pi if scale is None else scale

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        """
        Args:
            mask: (N, H, W) bool, True at padded pixels.

        Returns:
            (N, 2 * num_pos_feats, H, W) float32.
        """
        not_mask = ~mask
        y_embed = not_mask.cumsum(1, dtype=torch.float32)
        x_embed = not_mask.cumsum(2, dtype=torch.float32)
        if self.normalize:
            eps = 1e-6
            y_embed = y_embed / (y_embed[:, -1:, :] + eps) * self.scale
            x_embed = x_embed / (x_embed[:, :, -1:] + eps) * self.scale
        dim_t = torch.arange(self.num_pos_feats, dtype=torch.float32, device=mask.device)
        dim_t = self.temperature ** (2 * torch.div(dim_t, 2, rounding_mode="trunc") / self.num_pos_feats)
        pos_x = x_embed[..., None] / dim_t
        pos_y = y_embed[..., None] / dim_t
        pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=4).flatten(3)
        pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=4).flatten(3)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)
