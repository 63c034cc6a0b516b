"""Backbones registered in detectron2's BACKBONE_REGISTRY on import (ResNets are detectron2's own)."""

from .swin import SwinTransformerV2, build_swinv2_backbone

__all__ = ["SwinTransformerV2", "build_swinv2_backbone"]
