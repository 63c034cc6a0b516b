"""The inference package on the real model's outputs for the 12-frame fixture video (windows of 30 and 8).

The model (R50_ovis_360, gen_weights seed 1) runs once; its clip heads and mask features are recorded
and fed to `infer_video` with both window settings of the fixture. Compared with the original: every
clip's post-processing, the window outputs and the final results.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from _inference_testing import RecordingTracker, probe, window_mask_logits

import mdqe.inference.video as video_module
import mdqe.modeling.meta_arch as meta_arch
from mdqe.inference import infer_video
from mdqe.inference.masks import mask_logits_to_probs

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def recorded_clips(make_reference_model, r50_ovis, r50_ovis_long):
    """(heads per (start, end), mask features per frame, image size) of the model on the long video."""
    model = make_reference_model(r50_ovis).eval()  # the long video's model is the 7-frame fixture's

    heads, feats = {}, {}

    def recording_infer(num_frames, decode_clip, mask_features, image_size, output_size, params):
        def decode(start, end):
            heads[(start, end)] = decode_clip(start, end)
            return heads[(start, end)]

        def masks(start, end):
            out = mask_features(start, end)
            for t in range(start, end):
                feats[t] = out[:, t - start]
            return out

        return infer_video(num_frames, decode, masks, image_size, output_size, params)

    frames = list(r50_ovis_long["frames"])
    with pytest.MonkeyPatch.context() as mp, torch.no_grad():
        mp.setattr(meta_arch, "infer_video", recording_infer)
        model([{"image": frames, "height": 360, "width": 640}])
    return heads, feats, tuple(frames[0].shape[-2:]), model.inference_params


@pytest.mark.parametrize("run_name, window_frames", [("default", 30), ("window8", 8)])
def test_long_video_matches_original(recorded_clips, r50_ovis_long, monkeypatch, run_name, window_frames):
    heads, feats, image_size, params = recorded_clips
    run = r50_ovis_long[run_name]
    RecordingTracker.instances = []
    monkeypatch.setattr(video_module, "OverlapTracker", RecordingTracker)
    out = infer_video(
        12,
        lambda s, e: heads[(s, e)],
        lambda s, e: torch.stack([feats[t] for t in range(s, e)], dim=1),
        image_size,
        (360, 640),
        dataclasses.replace(params, window_frames=window_frames),
    )
    (tracker,) = RecordingTracker.instances

    assert len(tracker.clips) == len(run["clip_results"])
    for (_, clip), expected in zip(tracker.clips, run["clip_results"]):
        assert clip.candidate_idx.tolist() == expected["valid_idx"].tolist()
        assert clip.labels.tolist() == expected["pred_classes"].tolist()
        torch.testing.assert_close(clip.scores, expected["scores"], atol=1e-4, rtol=0)
        got = probe(clip.mask_logits)
        assert got["shape"] == tuple(expected["pred_masks_probe"]["shape"])
        torch.testing.assert_close(got["sample"], expected["pred_masks_probe"]["sample"], atol=1e-4, rtol=0)

    windows = run["window_outputs"]
    assert len(tracker.windows) == len(windows["pred_cls_per_window"])
    for (_, scores), expected in zip(tracker.windows, windows["pred_cls_per_window"]):
        torch.testing.assert_close(scores, expected, atol=1e-4, rtol=0)
    logits = window_mask_logits(tracker, 12, window_frames)
    for window, expected in zip(logits, windows["pred_masks_per_window_probe"]):
        got = probe(mask_logits_to_probs(window, params.match_stride, image_size))
        assert got["shape"] == tuple(expected["shape"])
        torch.testing.assert_close(got["sample"], expected["sample"], atol=1e-4, rtol=0)

    assert len(out["pred_scores"]) == run["num_instances"]
    scores, labels = out["pred_scores"], out["pred_labels"]
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], labels[i]))
    torch.testing.assert_close(
        torch.tensor([scores[i] for i in order]), run["all_scores_sorted"], atol=1e-4, rtol=0
    )
    # Scores equal to 1e-4 can swap places, so compare each label's scores rather than the label order.
    for label in range(run["all_labels_sorted"].max().item() + 1):
        got = sorted((scores[i] for i in order if labels[i] == label), reverse=True)
        expected = run["all_scores_sorted"][run["all_labels_sorted"] == label]
        torch.testing.assert_close(torch.tensor(got), expected, atol=1e-4, rtol=0, check_dtype=False)
    for k, i in enumerate(order[: len(run["pred_masks_rle"])]):
        for mine, ref in zip(out["pred_masks"][i], run["pred_masks_rle"][k]):
            mine_px = np.zeros((360, 640), bool) if mine is None else mask_util.decode(mine).astype(bool)
            # boundary pixels may flip with float rounding of the model's outputs
            assert (mine_px != mask_util.decode(ref).astype(bool)).sum() <= 0.001 * 360 * 640
