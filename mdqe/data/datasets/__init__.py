"""Dataset registration (importing this package registers every predefined dataset) and loaders."""

from . import builtin  # noqa: F401  (registration side effect)
from .categories import COCO_TO_OVIS, COCO_TO_YTVIS_2019, COCO_TO_YTVIS_2021, instances_meta
from .ytvis import DatasetFormatError, DatasetNotFoundError, load_ytvis_json, register_ytvis_instances

__all__ = [
    "COCO_TO_OVIS",
    "COCO_TO_YTVIS_2019",
    "COCO_TO_YTVIS_2021",
    "DatasetFormatError",
    "DatasetNotFoundError",
    "instances_meta",
    "load_ytvis_json",
    "register_ytvis_instances",
]
