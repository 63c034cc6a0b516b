"""Whole-video inference of the tiny synthetic config with the Triton kernel (interpreted on CPU, compiled on
a GPU) gives the results of the C++ kernel."""

from __future__ import annotations

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.config import get_cfg

from mdqe import add_mdqe_config
from mdqe.layers import msda_backend
from mdqe.predictor import VideoPredictor

TINY = "configs/synthetic/tiny.yaml"


def crossing_squares(num_frames: int = 6, size: tuple[int, int] = (64, 80)) -> list[np.ndarray]:
    """(H, W, 3) uint8 RGB frames: a green and a red square moving towards each other."""
    frames = []
    for t in range(num_frames):
        frame = np.full((*size, 3), 30, np.uint8)
        frame[20:40, 5 + 6 * t : 25 + 6 * t] = (40, 200, 60)
        frame[30:50, 50 - 3 * t : 70 - 3 * t] = (200, 50, 50)
        frames.append(frame)
    return frames


@pytest.mark.slow
def test_triton_whole_video_inference_equals_the_cpp_kernel(monkeypatch):
    cfg = get_cfg()
    add_mdqe_config(cfg)
    cfg.merge_from_file(TINY)
    cfg.MODEL.DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
    cfg.MODEL.MDQE.APPLY_CLS_THRES = 0.0  # every query reaches the tracker: a seeded, untrained model
    torch.manual_seed(0)
    predictor = VideoPredictor(cfg)
    frames = crossing_squares()
    results = {}
    for backend in ("cuda", "triton"):
        monkeypatch.setenv(msda_backend.ENV_VAR, backend)
        results[backend] = predictor(frames)
    msda_backend._select.cache_clear()
    cpp, triton = results["cuda"], results["triton"]
    assert len(cpp["pred_scores"]) == 10
    assert triton["image_size"] == cpp["image_size"]
    assert triton["pred_labels"] == cpp["pred_labels"]
    np.testing.assert_allclose(triton["pred_scores"], cpp["pred_scores"], rtol=1e-4, atol=1e-6)
    foreground = 0
    for got, expected in zip(triton["pred_masks"], cpp["pred_masks"]):
        for got_rle, expected_rle in zip(got, expected):
            decoded = [
                np.zeros(cpp["image_size"], np.uint8) if r is None else mask_util.decode(r)
                for r in (got_rle, expected_rle)
            ]
            assert (decoded[0] != decoded[1]).mean() <= 0.001
            foreground += int(decoded[1].sum())
    assert foreground > 10_000  # the masks compared are not empty
