"""`MDQETransformer`: backbone, input projections, pixel encoder and query decoder (`detr` in the
original's checkpoints), built from the config through the registries of `mdqe.modeling.build`."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from detectron2.config import CfgNode, configurable
from torch import nn

from .build import build_decoder, build_pixel_encoder
from .masked_backbone import BackboneWithPosition, MaskedBackbone
from .position_encoding import PositionEmbeddingSine

__all__ = ["EncodedFrames", "MDQETransformer", "input_projections"]


class EncodedFrames(NamedTuple):
    """The encoder's output for N frames.

    Attributes:
        memory: (N, S, C) encoded tokens, levels concatenated, row-major within a level.
        padding_mask: (N, S) bool, True at padded tokens.
        spatial_shapes: (L, 2) int64 (H_l, W_l), for the deformable-attention op.
        level_sizes: the same L sizes as Python ints (symbolic ones while traced), for splitting `memory`
            without reading a tensor.
    """

    memory: torch.Tensor
    padding_mask: torch.Tensor
    spatial_shapes: torch.Tensor
    level_sizes: list[tuple[int, int]]


def input_projections(in_channels: list[int], hidden_dim: int, num_levels: int) -> nn.ModuleList:
    """1x1 conv + GroupNorm per backbone level, then 3x3 stride-2 convs for the extra levels.

    Args:
        in_channels: channels of the backbone levels, finest first.
        hidden_dim: C of the encoder.
        num_levels: feature levels of the encoder (NUM_FEATURE_LEVELS), >= len(in_channels).
    """
    if num_levels < len(in_channels):
        raise ValueError(
            f"MODEL.MDQE.NUM_FEATURE_LEVELS={num_levels} is smaller than the {len(in_channels)} "
            "backbone outputs"
        )
    projections = [
        nn.Sequential(nn.Conv2d(c, hidden_dim, kernel_size=1), nn.GroupNorm(32, hidden_dim))
        for c in in_channels
    ]
    extra_in = in_channels[-1]
    for _ in range(num_levels - len(in_channels)):
        projections.append(
            nn.Sequential(
                nn.Conv2d(extra_in, hidden_dim, kernel_size=3, stride=2, padding=1),
                nn.GroupNorm(32, hidden_dim),
            )
        )
        extra_in = hidden_dim
    return nn.ModuleList(projections)


class MDQETransformer(nn.Module):
    """Backbone, input projections, encoder and decoder (`detr` in the original's checkpoints)."""

    @configurable
    def __init__(
        self,
        backbone: BackboneWithPosition,
        transformer_enc: nn.Module,
        transformer_dec: nn.Module,
        num_feature_levels: int = 4,
    ):
        """
        Args:
            backbone: the masked backbone with its position encoding.
            transformer_enc: the pixel encoder (`PIXEL_ENCODER_REGISTRY`), with attribute `dim`.
            transformer_dec: the query decoder (`DECODER_REGISTRY`).
            num_feature_levels: levels seen by the encoder (backbone levels + extra strided convs).
        """
        super().__init__()
        self.transformer_enc = transformer_enc
        self.transformer_dec = transformer_dec
        self.input_proj = input_projections(backbone.num_channels, transformer_enc.dim, num_feature_levels)
        self.backbone = backbone
        # the mask features are at half the stride of the finest level (`MaskHead`)
        self.mask_stride = backbone.feature_strides[0] // 2

    @classmethod
    def from_config(cls, cfg: CfgNode) -> dict[str, Any]:
        position = PositionEmbeddingSine(cfg.MODEL.MDQE.HIDDEN_DIM // 2, normalize=True)
        backbone = BackboneWithPosition(MaskedBackbone(cfg), position)
        return {
            "backbone": backbone,
            "transformer_enc": build_pixel_encoder(cfg, backbone.output_shape()),
            "transformer_dec": build_decoder(cfg),
            "num_feature_levels": cfg.MODEL.MDQE.NUM_FEATURE_LEVELS,
        }

    def encode(self, images: torch.Tensor, image_sizes: torch.Tensor) -> EncodedFrames:
        """Backbone, input projections and encoder on N frames.

        Args:
            images: (N, 3, Hp, Wp) normalised, zero-padded frames.
            image_sizes: (N, 2) int64 unpadded (h, w) of each frame.

        Returns:
            the encoded levels at strides 8, 16, 32, 64 (`EncodedFrames`).
        """
        levels, pos = self.backbone(images, image_sizes)
        srcs, masks = [], []
        for proj, (feat, mask) in zip(self.input_proj, levels):
            srcs.append(proj(feat))
            masks.append(mask)
        last_feat, last_mask = levels[-1]
        extra_input = last_feat
        for proj in self.input_proj[len(levels) :]:
            src = proj(extra_input)
            mask = F.interpolate(last_mask[None].float(), size=src.shape[-2:]).to(torch.bool)[0]
            srcs.append(src)
            masks.append(mask)
            pos.append(self.backbone[1](mask).to(src.dtype))
            extra_input = src
        memory, padding_mask, spatial_shapes = self.transformer_enc(srcs, masks, pos)
        return EncodedFrames(memory, padding_mask, spatial_shapes, [tuple(src.shape[-2:]) for src in srcs])
