"""MDQE: Mining Discriminative Query Embeddings to Segment Occluded Instances on Challenging Videos.

Importing this package registers the `MDQE` meta-architecture, the Swin backbone and the video
datasets with detectron2's registries and catalogs, when torch and detectron2 are installed. Without
them (or with the environment variable MDQE_LIGHT_IMPORT=1, which the torch-free command-line tools set
so that they start fast) nothing is registered, and the torch-free parts, such as the metric code in
`mdqe.evaluation.ytvis_metrics`, still import.
"""

import importlib.util
import os

__all__ = ["add_mdqe_config"]
__version__ = "0.1.0"


def _heavy_stack_importable() -> bool:
    """torch and detectron2 can be imported (a finder that refuses them counts as absent)."""
    try:
        return all(importlib.util.find_spec(name) is not None for name in ("torch", "detectron2"))
    except (ImportError, ValueError):
        return False


if os.environ.get("MDQE_LIGHT_IMPORT") != "1" and _heavy_stack_importable():
    from .utils import compat  # noqa: F401  # isort: skip  (Pillow >= 10 shim; before detectron2.data)
    from . import data, modeling  # noqa: F401  (registration side effects)
    from .config import add_mdqe_config
else:

    def __getattr__(name: str):
        if name == "add_mdqe_config":  # needs detectron2: imported on use
            from .config import add_mdqe_config

            return add_mdqe_config
        raise AttributeError(f"module 'mdqe' has no attribute {name!r}")
