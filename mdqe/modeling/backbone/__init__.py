"""Backbones registered in detectron2's BACKBONE_REGISTRY on import (ResNets are detectron2's own)."""

from .resnet import build_narrow_resnet_backbone
from .swin import SwinTransformerV2, build_swinv2_backbone

__all__ = ["SwinTransformerV2", "build_narrow_resnet_backbone", "build_swinv2_backbone"]
