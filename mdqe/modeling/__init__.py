"""MDQE's model: importing registers the `MDQE` meta-architecture and the Swin V2 backbone."""

from . import backbone  # noqa: F401  (registers build_swinv2_backbone)
from .meta_arch import MDQE, MDQETransformer

__all__ = ["MDQE", "MDQETransformer"]
