"""MDQE's model: importing registers the `MDQE` meta-architecture, the backbones and the default pixel
encoder, decoder, criterion and matcher in their registries (`mdqe.modeling.build`)."""

from . import backbone  # noqa: F401  (registers the backbones)
from .build import (
    CRITERION_REGISTRY,
    DECODER_REGISTRY,
    MATCHER_REGISTRY,
    PIXEL_ENCODER_REGISTRY,
    build_criterion,
    build_decoder,
    build_matcher,
    build_pixel_encoder,
)
from .criterion import SetCriterion, loss
from .decoder import QueryDecoder
from .encoder import DeformableEncoder
from .matcher import HungarianMatcher
from .meta_arch import MDQE
from .transformer import MDQETransformer

__all__ = [
    "CRITERION_REGISTRY",
    "DECODER_REGISTRY",
    "MATCHER_REGISTRY",
    "MDQE",
    "PIXEL_ENCODER_REGISTRY",
    "DeformableEncoder",
    "HungarianMatcher",
    "MDQETransformer",
    "QueryDecoder",
    "SetCriterion",
    "build_criterion",
    "build_decoder",
    "build_matcher",
    "build_pixel_encoder",
    "loss",
]
