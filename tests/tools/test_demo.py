import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model

from mdqe import add_mdqe_config

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "tools" / "demo.py"
TINY = ROOT / "configs" / "synthetic" / "tiny.yaml"
H, W, T = 72, 96, 12


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> Path:
    cfg = get_cfg()
    add_mdqe_config(cfg)
    cfg.merge_from_file(str(TINY))
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "tiny.pth"
    torch.save({"model": build_model(cfg).state_dict()}, path)
    return path


def _write_video(path: Path) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 6, (W, H))
    for t in range(T):
        frame = np.full((H, W, 3), 30, np.uint8)
        cv2.circle(frame, (20 + 4 * t, 36), 12, (40, 200, 60), -1)
        writer.write(frame)
    writer.release()


def _demo(*args) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(DEMO), "--config-file", str(TINY), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)


def test_demo_writes_a_playable_mp4_with_every_frame_at_the_input_size(tmp_path, tiny_weights):
    _write_video(tmp_path / "in.mp4")
    out = tmp_path / "out.mp4"
    result = _demo(
        "--input", tmp_path / "in.mp4", "--output", out, "--frames-dir", tmp_path / "frames",
        "--confidence-threshold", "0.0", "--opts", "MODEL.WEIGHTS", tiny_weights,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    video = cv2.VideoCapture(str(out))
    frames = []
    while True:
        ok, frame = video.read()
        if not ok:
            break
        frames.append(frame)
    assert len(frames) == T
    assert all(f.shape == (H, W, 3) for f in frames)
    assert len(list((tmp_path / "frames").glob("*.jpg"))) == T


@pytest.mark.parametrize("case", ["missing", "unreadable"])
def test_demo_rejects_bad_video_input_with_one_line(tmp_path, tiny_weights, case):
    src = tmp_path / "in.mp4"
    if case == "unreadable":
        src.write_bytes(b"this is not a video")
    result = _demo("--input", src, "--output", tmp_path / "o.mp4", "--opts", "MODEL.WEIGHTS", tiny_weights)
    assert result.returncode != 0
    assert "error:" in result.stderr and "Traceback" not in result.stderr


def test_demo_rejects_weights_that_do_not_fit_the_config(tmp_path):
    _write_video(tmp_path / "in.mp4")
    torch.save({"model": {"detr.input_proj.0.0.weight": torch.zeros(7, 7, 1, 1)}}, tmp_path / "w.pth")
    result = _demo(
        "--input",
        tmp_path / "in.mp4",
        "--output",
        tmp_path / "o.mp4",
        "--opts",
        "MODEL.WEIGHTS",
        tmp_path / "w.pth",
    )
    assert result.returncode != 0
    assert "does not fit the model" in result.stderr and "Traceback" not in result.stderr
