"""Reading video frames with errors that name the file, the video and the frame, and the demo's input (a
video file, a folder of frames or a list of images) with its memory bounded.

All frames of a demo input are held in memory (the model segments the whole video at once), so their
decoded size is capped by MAX_VIDEO_BYTES (raise it with the environment variable MDQE_MAX_VIDEO_BYTES):
checked against a video's declared frame count and an image's header before decoding, and against the
frames actually decoded (a header may lie). The demo holds about three times this at its peak (the
frames, the resized model input, the drawn output).
"""

from __future__ import annotations

import logging
import math
import os
from collections import Counter

import cv2
import numpy as np
from detectron2.data.detection_utils import convert_PIL_to_numpy
from PIL import Image, ImageOps, UnidentifiedImageError

from ..utils.bounded_io import limit, open_image

logger = logging.getLogger(__name__)

__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_VIDEO_BYTES",
    "FrameReadError",
    "conversion_counts",
    "read_frame",
    "read_frames_input",
    "read_images",
    "read_video",
]

# 2 GiB of RGB frames: about 330 frames of 1080p, 780 of 720p, 2300 of 480p.
MAX_VIDEO_BYTES = 2 << 30
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
_DEFAULT_FPS = 6.0  # YouTube-VIS frames are sampled at 6 fps

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
        with open_image(file_name) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as e:
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


class _FrameBudget:
    """Counts the bytes of decoded frames against MAX_VIDEO_BYTES."""

    def __init__(self, source: str) -> None:
        self.source, self.cap, self.used = source, limit("MAX_VIDEO_BYTES", MAX_VIDEO_BYTES), 0

    def check(self, nbytes: int, what: str = "decoded frames") -> None:
        if self.used + nbytes > self.cap:
            raise FrameReadError(
                f"{self.source}: {what} take more than {self.cap:,} bytes, the limit on a demo input "
                "(raise it with the environment variable MDQE_MAX_VIDEO_BYTES, or pass fewer frames)"
            )

    def take(self, nbytes: int) -> None:
        self.check(nbytes)
        self.used += nbytes


def read_video(path: str) -> tuple[list[np.ndarray], float]:
    """The frames ((H, W, 3) uint8 RGB, all of one size) and the frame rate of a video file, decoded with
    OpenCV within MAX_VIDEO_BYTES. Raises FrameReadError for a file that is not a video, holds no
    decodable frame, changes its frame size, or is past the limit."""
    capture = cv2.VideoCapture(path)
    try:
        if not capture.isOpened():
            raise FrameReadError(f"{path}: OpenCV cannot open it as a video")
        budget = _FrameBudget(path)
        declared = [
            capture.get(p)
            for p in (cv2.CAP_PROP_FRAME_COUNT, cv2.CAP_PROP_FRAME_HEIGHT, cv2.CAP_PROP_FRAME_WIDTH)
        ]
        if all(math.isfinite(v) and v > 0 for v in declared):
            count, height, width = (int(v) for v in declared)
            budget.check(count * height * width * 3, f"its {count} frames of {width}x{height} declared")
        fps = capture.get(cv2.CAP_PROP_FPS)
        fps = fps if math.isfinite(fps) and 0 < fps <= 1000 else _DEFAULT_FPS
        frames: list[np.ndarray] = []
        while True:
            ok, frame = capture.read()
            if not ok or frame is None:
                break
            budget.take(frame.nbytes)
            if frames and frame.shape != frames[0].shape:
                raise FrameReadError(
                    f"{path}: frame {len(frames)} is {frame.shape[1]}x{frame.shape[0]}, the first is "
                    f"{frames[0].shape[1]}x{frames[0].shape[0]}"
                )
            frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    finally:
        capture.release()
    if not frames:
        raise FrameReadError(f"{path}: no frame could be decoded")
    return frames, fps


def read_images(paths: list[str]) -> list[np.ndarray]:
    """Images as (H, W, 3) uint8 RGB frames of one size, within MAX_VIDEO_BYTES (each image's size is
    read from its header before it is decoded). Raises FrameReadError naming the image."""
    budget = _FrameBudget(paths[0] if len(paths) == 1 else f"{len(paths)} images ({paths[0]}, ...)")
    frames: list[np.ndarray] = []
    for path in paths:
        try:
            budget.check(os.path.getsize(path), "the image files")
            with open_image(path) as image:
                width, height = image.size
                budget.take(width * height * 3)
                frame = np.asarray(image.convert("RGB"))
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            raise FrameReadError(f"{path}: cannot read the image ({e})") from None
        if frames and frame.shape != frames[0].shape:
            raise FrameReadError(
                f"{path}: the image is {frame.shape[1]}x{frame.shape[0]}, the first is "
                f"{frames[0].shape[1]}x{frames[0].shape[0]}; all frames of a video must have one size"
            )
        frames.append(frame)
    return frames


def read_frames_input(inputs: list[str]) -> tuple[list[np.ndarray], float]:
    """Frames (RGB uint8) and a frame rate from a video file, a folder of frames (sorted by name) or a
    list of images, within MAX_VIDEO_BYTES. Raises FrameReadError naming the input."""
    for path in inputs:
        if not os.path.exists(path):
            raise FrameReadError(f"{path}: input not found")
    if len(inputs) == 1 and os.path.isdir(inputs[0]):
        names = sorted(n for n in os.listdir(inputs[0]) if n.lower().endswith(IMAGE_EXTENSIONS))
        if not names:
            raise FrameReadError(f"{inputs[0]}: no images ({', '.join(IMAGE_EXTENSIONS)}) in the folder")
        return read_images([os.path.join(inputs[0], n) for n in names]), _DEFAULT_FPS
    if len(inputs) == 1 and not inputs[0].lower().endswith(IMAGE_EXTENSIONS):
        return read_video(inputs[0])
    return read_images(inputs), _DEFAULT_FPS
