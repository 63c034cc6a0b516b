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
        if not frames:
            raise ValueError("VideoPredictor needs at least one frame")
        height, width = frames[0].shape[:2]
        if any(f.shape != frames[0].shape for f in frames):
            raise ValueError(f"all frames of a video must have the same size; the first is {frames[0].shape}")
        transform = self.resize.get_transform(frames[0])
        images = []
        for frame in frames:
            image = transform.apply_image(frame)
            if self.input_format == "BGR":
                image = image[:, :, ::-1]
            images.append(torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1))))
        inputs = {
            "image": images,
            "height": height,
            "width": width,
            "length": len(frames),
            "video_id": video_id,
        }
        with torch.no_grad():
            return self.model([inputs])
