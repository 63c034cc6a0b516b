"""Fuzzing the demo's input reader (`mdqe.data.frames.read_frames_input`): videos and images with bytes
changed, cut or replaced, under any name. Accepted: frames of one size (uint8 RGB), or one
`FrameReadError` line naming the input."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from _fuzzing import bounded, fuzz, mutated_bytes, outcome, scratch_folder
from hypothesis import event, given
from hypothesis import strategies as st
from PIL import Image

from mdqe.data.frames import FrameReadError, read_frames_input


def _video(suffix: str, fourcc: str) -> bytes:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = f"{folder}/v{suffix}"
        writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*fourcc), 6, (16, 12))
        for t in range(6):
            writer.write(np.full((12, 16, 3), 40 * t, np.uint8))
        writer.release()
        with open(path, "rb") as f:
            return f.read()


def _image(fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.arange(12 * 16 * 3, dtype=np.uint8).reshape(12, 16, 3)).save(buffer, fmt)
    return buffer.getvalue()


FILES = {
    ".mp4": _video(".mp4", "mp4v"),
    ".avi": _video(".avi", "MJPG"),
    ".png": _image("PNG"),
    ".jpg": _image("JPEG"),
}
INPUTS = st.sampled_from(sorted(FILES)).flatmap(
    lambda suffix: st.tuples(st.sampled_from([suffix, ".mp4", ".png", ""]), mutated_bytes(FILES[suffix]))
)


@pytest.fixture
def frame_limit(monkeypatch) -> None:
    """MAX_VIDEO_BYTES at 16 MiB, so that the case's memory bound checks the reader keeps its limit."""
    monkeypatch.setenv("MDQE_MAX_VIDEO_BYTES", str(16 << 20))


@fuzz
@given(INPUTS, st.booleans())
def test_a_changed_video_or_image_gives_frames_or_one_clear_error(tmp_path, frame_limit, case, as_folder):
    suffix, data = case
    scratch = scratch_folder(tmp_path)
    if as_folder:  # a folder of frames: the changed one beside a good one of the same size
        (scratch / "0.png").write_bytes(FILES[".png"])
        (scratch / f"1{suffix or '.jpg'}").write_bytes(data)
        inputs = [str(scratch)]
    else:
        (scratch / f"input{suffix}").write_bytes(data)
        inputs = [str(scratch / f"input{suffix}")]
    read = bounded(lambda: read_frames_input(inputs), scratch, (FrameReadError,))
    event(outcome(read))
    if isinstance(read, FrameReadError):
        assert "\n" not in str(read) and str(scratch) in str(read), str(read)
    else:
        frames, fps = read
        assert frames and all(f.dtype == np.uint8 and f.shape == frames[0].shape for f in frames)
        assert frames[0].ndim == 3 and frames[0].shape[2] == 3 and 0 < fps <= 1000
