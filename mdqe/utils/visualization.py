"""Drawing video instance segmentation results: masks, id-consistent colours, class names and scores.

Shared by the video demo and tools/visualize_results.py; drawing is detectron2's Visualizer.
"""

from __future__ import annotations

import colorsys
import os
from collections.abc import Sequence

import cv2
import numpy as np
from detectron2.utils.visualizer import ColorMode, Visualizer
from PIL import Image


def instance_color(instance_id: int) -> tuple[float, float, float]:
    """A distinct RGB colour in [0, 1] for a track id, the same in every frame and every run."""
    hue = (instance_id * 0.618033988749895) % 1.0  # golden-ratio steps spread consecutive ids apart
    return colorsys.hsv_to_rgb(hue, 0.75, 0.95)


def draw_frame(
    image: np.ndarray,
    masks: Sequence[np.ndarray | dict | None],
    labels: Sequence[str],
    instance_ids: Sequence[int],
    alpha: float = 0.5,
) -> np.ndarray:
    """Draw instances onto one frame.

    Args:
        image: (H, W, 3) uint8 RGB frame.
        masks: per instance, a (H, W) bool mask, a COCO RLE dict, or None where absent in this frame.
        labels: per instance, the text to show (e.g. "car 0.87").
        instance_ids: per instance, the track id that picks its colour.
    Returns:
        (H, W, 3) uint8 RGB frame with the instances drawn.
    """
    present = [i for i, m in enumerate(masks) if m is not None]
    if not present:
        return image.copy()
    vis = Visualizer(image, instance_mode=ColorMode.IMAGE)
    out = vis.overlay_instances(
        masks=[masks[i] for i in present],
        labels=[labels[i] for i in present],
        assigned_colors=[instance_color(instance_ids[i]) for i in present],
        alpha=alpha,
    )
    return out.get_image()


def write_video(frames: Sequence[np.ndarray], path: str, fps: float = 6.0) -> None:
    """Write RGB uint8 frames (all the same size) to an .mp4 (mp4v), .avi (MJPG) or .gif file."""
    if not frames:
        raise ValueError(f"no frames to write to {path}")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    ext = os.path.splitext(path)[1].lower()
    if ext == ".gif":
        images = [Image.fromarray(f) for f in frames]
        images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
        return
    codec = {".mp4": "mp4v", ".avi": "MJPG"}.get(ext)
    if codec is None:
        raise ValueError(f"unsupported video extension {ext!r} for {path}: use .mp4, .avi or .gif")
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*codec), fps, (width, height))
    if not writer.isOpened():
        raise OSError(f"OpenCV cannot open a {codec} video writer for {path}")
    try:
        for frame in frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
