"""Registries and builders of MDQE's swappable parts, each chosen by a config key.

| part          | registry                  | config key                    | default             |
| ------------- | ------------------------- | ----------------------------- | ------------------- |
| backbone      | detectron2's BACKBONE     | MODEL.BACKBONE.NAME           | (per config)        |
| pixel encoder | `PIXEL_ENCODER_REGISTRY`  | MODEL.MDQE.ENCODER_NAME       | "DeformableEncoder" |
| decoder       | `DECODER_REGISTRY`        | MODEL.MDQE.DECODER_NAME       | "QueryDecoder"      |
| criterion     | `CRITERION_REGISTRY`      | MODEL.MDQE.CRITERION_NAME     | "SetCriterion"      |
| matcher       | `MATCHER_REGISTRY`        | MODEL.MDQE.MATCHER_NAME       | "HungarianMatcher"  |

Every registered class is built as `cls(cfg)` (a detectron2 `@configurable` class) and the pixel
encoder as `cls(cfg, input_shape)`, with the backbone's output `ShapeSpec`s. docs/extending.md shows
how to add each part.
"""

from __future__ import annotations

import math

from detectron2.config import CfgNode
from detectron2.layers import ShapeSpec
from detectron2.utils.registry import Registry
from torch import nn

__all__ = [
    "CRITERION_REGISTRY",
    "DECODER_REGISTRY",
    "MATCHER_REGISTRY",
    "PIXEL_ENCODER_REGISTRY",
    "attention_dims",
    "build_criterion",
    "build_decoder",
    "build_matcher",
    "build_pixel_encoder",
    "check_feature_strides",
    "num_grid_queries",
]

PIXEL_ENCODER_REGISTRY = Registry("MDQE_PIXEL_ENCODER")
PIXEL_ENCODER_REGISTRY.__doc__ = """Pixel encoders: `cls(cfg, input_shape)`, input_shape the backbone's
output ShapeSpecs; `forward(srcs, masks, pos)` -> (memory (N, S, C), padding mask (N, S), spatial_shapes
(L, 2)) as `DeformableEncoder`; attribute `dim` (C)."""

DECODER_REGISTRY = Registry("MDQE_DECODER")
DECODER_REGISTRY.__doc__ = """Query decoders: `cls(cfg)` with the interface of `QueryDecoder`."""

CRITERION_REGISTRY = Registry("MDQE_CRITERION")
CRITERION_REGISTRY.__doc__ = """Training criteria: `cls(cfg)`; `forward(outputs, targets)` -> weighted
loss dict (`SetCriterion`)."""

MATCHER_REGISTRY = Registry("MDQE_MATCHER")
MATCHER_REGISTRY.__doc__ = """Matchers: `cls(cfg)`; `forward(pred_logits, pred_boxes, pred_masks, targets)`
-> per clip (query_idx, gt_idx) (`HungarianMatcher`)."""


def build_pixel_encoder(cfg: CfgNode, input_shape: dict[str, ShapeSpec]) -> nn.Module:
    """The pixel encoder `MODEL.MDQE.ENCODER_NAME` for a backbone with outputs `input_shape`."""
    return PIXEL_ENCODER_REGISTRY.get(cfg.MODEL.MDQE.ENCODER_NAME)(cfg, input_shape)


def build_decoder(cfg: CfgNode) -> nn.Module:
    """The query decoder `MODEL.MDQE.DECODER_NAME`."""
    return DECODER_REGISTRY.get(cfg.MODEL.MDQE.DECODER_NAME)(cfg)


def build_criterion(cfg: CfgNode) -> nn.Module:
    """The training criterion `MODEL.MDQE.CRITERION_NAME`."""
    return CRITERION_REGISTRY.get(cfg.MODEL.MDQE.CRITERION_NAME)(cfg)


def build_matcher(cfg: CfgNode) -> nn.Module:
    """The query-to-target matcher `MODEL.MDQE.MATCHER_NAME`."""
    return MATCHER_REGISTRY.get(cfg.MODEL.MDQE.MATCHER_NAME)(cfg)


def attention_dims(cfg: CfgNode) -> dict[str, int]:
    """The sizes the pixel encoder and the decoder share: channels `dim`, `n_heads`, feature `n_levels`."""
    mdqe = cfg.MODEL.MDQE
    return {"dim": mdqe.HIDDEN_DIM, "n_heads": mdqe.NHEADS, "n_levels": mdqe.NUM_FEATURE_LEVELS}


def num_grid_queries(cfg: CfgNode) -> int:
    """MODEL.MDQE.NUM_OBJECT_QUERIES rounded down to a square, as the original (200 -> 196 = 14 x 14)."""
    return math.isqrt(cfg.MODEL.MDQE.NUM_OBJECT_QUERIES) ** 2


def check_feature_strides(backbone_name: str, input_shape: dict[str, ShapeSpec], expected: list[int]) -> None:
    """Raise one ValueError naming the backbone when its output strides (in output order) are not `expected`.

    Args:
        backbone_name: MODEL.BACKBONE.NAME, for the message.
        input_shape: the backbone's `output_shape()`.
        expected: the strides the consumer needs, finest first.
    """
    found = [spec.stride for spec in input_shape.values()]
    if found != list(expected):
        raise ValueError(
            f"backbone {backbone_name} (MODEL.BACKBONE.NAME) outputs {list(input_shape)} at strides {found}, "
            f"but the pixel encoder expects strides {list(expected)}"
        )
