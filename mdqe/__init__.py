"""MDQE: Mining Discriminative Query Embeddings to Segment Occluded Instances on Challenging Videos.

Importing this package registers the `MDQE` meta-architecture, the Swin backbone and the video
datasets with detectron2's registries and catalogs.
"""

from .utils import compat  # noqa: F401  # isort: skip  (Pillow >= 10 shim; before detectron2.data)
from . import data, modeling  # noqa: F401  (registration side effects)
from .config import add_mdqe_config

__all__ = ["add_mdqe_config"]
__version__ = "0.1.0"
