"""mdqe.data.frames.read_frames_input, the demo's input reader: a non-video, truncated or mixed-size input
gets one clear error, and a long video or a huge image is refused within MAX_VIDEO_BYTES, before more
than that is decoded."""

from __future__ import annotations

import io
import struct
import time
import tracemalloc
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from mdqe.data import frames as frames_module
from mdqe.data.frames import FrameReadError, read_frames_input


def write_video(path, num_frames: int, size: int = 16) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30, (size, size))
    for t in range(num_frames):
        writer.write(np.full((size, size, 3), t % 250, np.uint8))
    writer.release()


def test_a_video_is_read_with_its_frame_rate(tmp_path):
    write_video(tmp_path / "in.mp4", 12)
    frames, fps = read_frames_input([str(tmp_path / "in.mp4")])
    assert len(frames) == 12 and frames[0].shape == (16, 16, 3) and frames[0].dtype == np.uint8
    assert fps == pytest.approx(30)


@pytest.mark.parametrize("kind", ["text", "truncated", "empty"])
def test_a_file_that_is_not_a_whole_video_gets_one_clear_error_or_its_decodable_frames(tmp_path, kind):
    path = tmp_path / "in.mp4"
    write_video(path, 40)
    data = {"text": b"this is not a video", "truncated": path.read_bytes()[:3000], "empty": b""}[kind]
    path.write_bytes(data)
    try:
        frames, _ = read_frames_input([str(path)])
    except FrameReadError as e:
        assert str(path) in str(e) and "\n" not in str(e)
    else:
        assert kind == "truncated" and 0 < len(frames) <= 40
        assert all(frame.shape == frames[0].shape for frame in frames)


_VideoCapture = cv2.VideoCapture


class _HiddenLength:
    """A capture whose container does not say how many frames it holds (a header can lie or be absent)."""

    def __init__(self, path: str) -> None:
        self._capture = _VideoCapture(path)

    def get(self, prop: int) -> float:
        return 0.0 if prop == cv2.CAP_PROP_FRAME_COUNT else self._capture.get(prop)

    def __getattr__(self, name: str):
        return getattr(self._capture, name)


@pytest.mark.parametrize("declared", [True, False])
def test_a_video_of_thousands_of_frames_is_refused_within_the_memory_limit(tmp_path, monkeypatch, declared):
    write_video(tmp_path / "long.mp4", 3000)  # 2.3 MB of frames; the limit is set to 256 KiB
    monkeypatch.setenv("MDQE_MAX_VIDEO_BYTES", str(256 << 10))
    if not declared:
        monkeypatch.setattr(frames_module.cv2, "VideoCapture", _HiddenLength)
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(FrameReadError) as error:
            read_frames_input([str(tmp_path / "long.mp4")])
        seconds, peak = time.perf_counter() - start, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    reason = "its 3000 frames of 16x16 declared" if declared else "decoded frames"
    assert f"{reason} take more than 262,144 bytes" in str(error.value)
    assert "MDQE_MAX_VIDEO_BYTES" in str(error.value)
    assert peak < 512 << 10 and seconds < 5  # not the 2.3 MB of the whole video


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height pixels and holds one row: a decompression bomb's header."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0"))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("side", "limit", "message"),
    [(30_000, None, "could be decompression bomb"), (9_000, 1 << 20, "take more than 1,048,576 bytes")],
)
def test_a_huge_image_is_refused_from_its_header(tmp_path, monkeypatch, side, limit, message):
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header_only(side, side))
    if limit is not None:
        monkeypatch.setenv("MDQE_MAX_VIDEO_BYTES", str(limit))
    tracemalloc.start()
    try:
        with pytest.raises(FrameReadError, match=message):
            read_frames_input([str(path)])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20  # nothing of the 243 MB / 2.7 GB the header declares is allocated


def test_frames_of_different_sizes_are_refused(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "0.png")
    Image.new("RGB", (8, 9)).save(tmp_path / "1.png")
    with pytest.raises(FrameReadError, match=r"1\.png: the image is 8x9, the first is 8x8"):
        read_frames_input([str(tmp_path)])


def test_a_png_chunk_stating_a_huge_length_allocates_nothing(tmp_path, monkeypatch):
    # found by tests/fuzz: a 16x12 PNG whose image-data chunk states 83,886,128 bytes made Pillow read
    # the rest of it with one file read, which Python allocates in full first
    data = bytearray(_png_bytes())
    at = data.index(b"IDAT") - 4
    data[at : at + 4] = (0x05000030).to_bytes(4, "big")
    (tmp_path / "frame.png").write_bytes(bytes(data))
    tracemalloc.start()
    try:
        frames, _ = read_frames_input([str(tmp_path / "frame.png")])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert frames[0].shape == (12, 16, 3) and peak < 1 << 20


def _png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((12, 16, 3), np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()
