"""`VideoPredictor`: whole-video MDQE inference on raw frames, for demos and scripts."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog
from detectron2.data import transforms as T
from detectron2.modeling import build_model

from .checkpoint import load_for_inference

__all__ = ["VideoPredictor", "check_frames", "prepare_frames"]


class VideoPredictor:
    """Build the model of `cfg`, load MODEL.WEIGHTS (refusing weights that do not fit) and segment videos.

    Loading is strict: a checkpoint of another class count, clip length or backbone, or a truncated file,
    raises a `mdqe.checkpoint.CheckpointError` naming the checkpoint and `config_name` before any frame is
    read. Frames are resized as the test mapper does (ResizeShortestEdge to INPUT.MIN_SIZE_TEST); results come
    back at the frames' original size, in the model's per-video output format.
    """

    def __init__(self, cfg: CfgNode, config_name: str = "the given config"):
        self.cfg = cfg.clone()
        self.model = build_model(self.cfg)
        self.model.eval()
        if cfg.MODEL.WEIGHTS:
            load_for_inference(self.model, cfg.MODEL.WEIGHTS, self.cfg, config_name)
        self.resize = T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
        self.input_format = cfg.INPUT.FORMAT
        name = cfg.DATASETS.TEST[0] if len(cfg.DATASETS.TEST) else "__unused"
        self.metadata = MetadataCatalog.get(name)

    @property
    def class_names(self) -> list[str]:
        """Category names of the config's first test dataset (empty if it has none)."""
        return list(self.metadata.get("thing_classes", []))

    def __call__(self, frames: Sequence[np.ndarray], video_id: int = 0) -> dict:
        """Segment a video.

        Args:
            frames: T frames, (H, W, 3) uint8 RGB, all the same size.
        Returns:
            the model's per-video output: {"image_size", "pred_scores", "pred_labels", "pred_masks"}.
        """
        check_frames(frames, type(self).__name__)
        height, width = frames[0].shape[:2]
        inputs = {
            "image": prepare_frames(frames, self.resize, self.input_format),
            "height": height,
            "width": width,
            "length": len(frames),
            "video_id": video_id,
        }
        with torch.no_grad():
            return self.model([inputs])


def check_frames(frames: Sequence[np.ndarray], who: str) -> None:
    """Raise one TypeError / ValueError naming `who` and the first bad frame unless `frames` is a
    non-empty list or tuple of (H, W, 3) uint8 arrays of one size."""
    if not isinstance(frames, (list, tuple)):
        raise TypeError(f"{who} takes a list of (H, W, 3) uint8 RGB frames, got a {type(frames).__name__}")
    if not frames:
        raise ValueError(f"{who} needs at least one frame")
    for i, frame in enumerate(frames):
        if not isinstance(frame, np.ndarray):
            raise TypeError(
                f"{who}: frame {i} is a {type(frame).__name__}, expected an (H, W, 3) uint8 numpy array"
            )
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(
                f"{who}: frame {i} is {frame.dtype} of shape {frame.shape}, expected (H, W, 3) uint8 RGB"
            )
        if frame.shape != frames[0].shape:
            raise ValueError(
                f"{who}: all frames of a video must have the same size; frame 0 is {frames[0].shape}, "
                f"frame {i} is {frame.shape}"
            )


def prepare_frames(
    frames: Sequence[np.ndarray], resize: T.Augmentation, input_format: str
) -> list[torch.Tensor]:
    """The model inputs of checked RGB frames: resized as the test mapper does (one transform for the
    video), channels flipped for a "BGR" model -> T (3, h, w) uint8 tensors."""
    transform = resize.get_transform(frames[0])
    images = []
    for frame in frames:
        image = transform.apply_image(frame)
        if input_format == "BGR":
            image = image[:, :, ::-1]
        images.append(torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1))))
    return images
