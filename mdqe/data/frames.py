"""Reading video frames with errors that name the file, the video and the frame."""

from __future__ import annotations

import logging
import os
from collections import Counter

import numpy as np
from detectron2.data.detection_utils import convert_PIL_to_numpy
from PIL import Image, ImageOps, UnidentifiedImageError

logger = logging.getLogger(__name__)

__all__ = ["FrameReadError", "conversion_counts", "read_frame"]

# modes PIL converts to RGB without losing what the model sees; the count is reported, not hidden
_CONVERTIBLE_MODES = {
    "L": "grayscale",
    "LA": "grayscale+alpha",
    "RGBA": "RGBA",
    "P": "palette",
    "CMYK": "CMYK",
    "I;16": "16-bit grayscale",
    "I": "32-bit grayscale",
}
_conversions: Counter = Counter()


class FrameReadError(OSError):
    """A frame is missing, cannot be decoded, or does not have the size its json declares."""


def conversion_counts() -> dict[str, int]:
    """How many frames of each non-RGB mode this process converted, e.g. {"RGBA": 3}."""
    return dict(_conversions)


def _where(file_name: str, video_id: object, frame_idx: int | None) -> str:
    parts = [
        f"video {video_id}" if video_id is not None else None,
        f"frame {frame_idx}" if frame_idx is not None else None,
    ]
    prefix = ", ".join(p for p in parts if p)
    return f"{prefix} ({file_name})" if prefix else file_name


def read_frame(
    file_name: str,
    image_format: str = "RGB",
    *,
    video_id: object = None,
    frame_idx: int | None = None,
    expected_size: tuple[int, int] | None = None,
) -> np.ndarray:
    """Read one frame as an (H, W, 3) uint8 array in `image_format` ("RGB" or "BGR").

    Grayscale, palette and RGBA frames are converted to RGB (alpha dropped) with a warning, counted in
    `conversion_counts()`. Raises `FrameReadError` for a missing or undecodable file, or when the frame
    size differs from `expected_size` = (height, width) of the json.
    """
    where = _where(file_name, video_id, frame_idx)
    if not os.path.isfile(file_name):
        raise FrameReadError(f"{where}: frame file does not exist")
    try:
        with Image.open(file_name) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise FrameReadError(f"{where}: cannot decode image ({e})") from e
    if img.mode != "RGB":
        if img.mode not in _CONVERTIBLE_MODES:
            raise FrameReadError(f"{where}: unsupported image mode {img.mode!r}")
        _conversions[img.mode] += 1
        if _conversions[img.mode] == 1:
            logger.warning(
                f"{where}: {_CONVERTIBLE_MODES[img.mode]} frame converted to RGB (each such conversion is "
                "counted in mdqe.data.frames.conversion_counts())"
            )
        img = img.convert("RGB")
    if expected_size is not None and (img.height, img.width) != tuple(expected_size):
        raise FrameReadError(
            f"{where}: frame is {img.height}x{img.width} (HxW) but the json says "
            f"{expected_size[0]}x{expected_size[1]} for field 'height'/'width'"
        )
    return convert_PIL_to_numpy(img, image_format)
