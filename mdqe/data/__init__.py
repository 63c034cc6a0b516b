"""Data: dataset registration (on import), YouTube-VIS loading, clip mappers, augmentations, loaders."""

from . import datasets  # noqa: F401  (registers every predefined dataset)
from .augmentation import build_augmentation, build_pseudo_augmentation
from .build import build_test_loader, build_train_loader, get_train_dataset_dicts
from .dataset_mapper import CocoClipDatasetMapper, YTVISDatasetMapper
from .datasets import DatasetFormatError, DatasetNotFoundError, load_ytvis_json, register_ytvis_instances
from .frames import FrameReadError, read_frame

__all__ = [
    "CocoClipDatasetMapper",
    "DatasetFormatError",
    "DatasetNotFoundError",
    "FrameReadError",
    "YTVISDatasetMapper",
    "build_augmentation",
    "build_pseudo_augmentation",
    "build_test_loader",
    "build_train_loader",
    "get_train_dataset_dicts",
    "load_ytvis_json",
    "read_frame",
    "register_ytvis_instances",
]
