"""A detectron2 backbone with per-level padding masks and sine position encodings."""

from __future__ import annotations

from typing import Any

import torch
from detectron2.config import CfgNode, configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import Backbone, build_backbone
from torch import nn

from .position_encoding import PositionEmbeddingSine

__all__ = ["BackboneWithPosition", "MaskedBackbone", "padding_masks"]


def padding_masks(feature_hw: tuple[int, int], stride: int, image_sizes: torch.Tensor) -> torch.Tensor:
    """Padding mask of a feature map of a padded batch.

    Args:
        feature_hw: (H, W) of the feature map (Python or symbolic ints).
        stride: its stride w.r.t. the input.
        image_sizes: (N, 2) int64 unpadded (h, w) input sizes.

    Returns:
        (N, H, W) bool, False on [:ceil(h / stride), :ceil(w / stride)] of each image, True elsewhere.
    """
    height, width = feature_hw
    valid = torch.div(image_sizes + (stride - 1), stride, rounding_mode="floor")  # ceil(size / stride)
    rows = torch.arange(height, device=image_sizes.device)[None, :, None] >= valid[:, 0, None, None]
    cols = torch.arange(width, device=image_sizes.device)[None, None, :] >= valid[:, 1, None, None]
    return rows | cols


class MaskedBackbone(nn.Module):
    """Wraps a detectron2 backbone (attribute `backbone`, as in the original's checkpoints) and adds
    the padding mask of every output level."""

    @configurable
    def __init__(self, backbone: Backbone):
        super().__init__()
        self.backbone = backbone
        shapes = backbone.output_shape()
        self.feature_names = list(shapes.keys())
        self.feature_strides = [shapes[name].stride for name in self.feature_names]
        self.num_channels = [shapes[name].channels for name in self.feature_names]

    @classmethod
    def from_config(cls, cfg: CfgNode) -> dict[str, Any]:
        """`cfg.MODEL.BACKBONE.NAME`, built with detectron2's `build_backbone`."""
        return {"backbone": build_backbone(cfg)}

    def output_shape(self) -> dict[str, ShapeSpec]:
        """The wrapped backbone's output ShapeSpecs, finest first."""
        return self.backbone.output_shape()

    def forward(
        self, images: torch.Tensor, image_sizes: torch.Tensor
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """
        Args:
            images: (N, 3, Hp, Wp) padded batch.
            image_sizes: (N, 2) int64 unpadded (h, w) of each image.

        Returns:
            per output level (finest first): features (N, C_l, H_l, W_l) and padding mask (N, H_l, W_l)
            bool, True at padded positions.
        """
        features = self.backbone(images)
        return [
            (feat, padding_masks(feat.shape[-2:], stride, image_sizes.to(feat.device)))
            for feat, stride in zip((features[name] for name in self.feature_names), self.feature_strides)
        ]


class BackboneWithPosition(nn.Sequential):
    """[0] the masked backbone, [1] the (stateless) sine position encoding: the original's `Joiner`,
    whose layout the checkpoint keys `detr.backbone.0.backbone.*` follow."""

    def __init__(self, masked_backbone: MaskedBackbone, position_embedding: PositionEmbeddingSine):
        super().__init__(masked_backbone, position_embedding)
        self.feature_strides = masked_backbone.feature_strides
        self.num_channels = masked_backbone.num_channels

    def output_shape(self) -> dict[str, ShapeSpec]:
        """The backbone's output ShapeSpecs, finest first."""
        return self[0].output_shape()

    def forward(
        self, images: torch.Tensor, image_sizes: torch.Tensor
    ) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], list[torch.Tensor]]:
        """
        Args:
            images: (N, 3, Hp, Wp) padded batch.
            image_sizes: (N, 2) int64 unpadded (h, w) of each image.

        Returns:
            levels: per backbone level, features (N, C_l, H_l, W_l) and padding mask (N, H_l, W_l);
            pos: per backbone level, (N, C, H_l, W_l) position encodings in the features' dtype.
        """
        levels = self[0](images, image_sizes)
        pos = [self[1](mask).to(feat.dtype) for feat, mask in levels]
        return levels, pos
