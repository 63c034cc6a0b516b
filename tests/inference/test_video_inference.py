"""Whole-video inference: the original's final results, output format, clip schedule, bounded memory."""

from __future__ import annotations

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from _inference_testing import RecordingTracker, designed_heads, moving_objects_video, postproc_params
from detectron2.config import get_cfg

import mdqe.inference.video as video_module
from mdqe.config import add_mdqe_config
from mdqe.inference import VideoInferenceParams, infer_video
from mdqe.inference.video import clip_starts, merge_window_scores, select_predictions


def _decode(rle, size):
    return np.zeros(size, dtype=np.uint8) if rle is None else mask_util.decode(rle)


@pytest.mark.parametrize("run_name", ["default", "window8"])
def test_final_results_match_original(postproc, run_name):
    run = postproc["runs"][run_name]
    feats = postproc["design"]["mask_feats"]
    num_frames, out_size = (
        postproc["input"]["frames"],
        (postproc["input"]["height"], postproc["input"]["width"]),
    )
    out = infer_video(
        num_frames,
        lambda s, e: designed_heads(postproc, s, e),
        lambda s, e: feats[:, s:e],
        postproc["input"]["frame_size"],
        out_size,
        postproc_params(run),
    )
    assert out["image_size"] == out_size
    assert len(out["pred_scores"]) == run["num_instances"]
    torch.testing.assert_close(torch.tensor(out["pred_scores"]), run["pred_scores"], rtol=1e-6, atol=1e-7)
    assert out["pred_labels"] == run["pred_labels"].tolist()
    for got, expected in zip(out["pred_masks"], run["pred_masks_rle"]):
        assert len(got) == num_frames
        for got_rle, expected_rle in zip(got, expected):
            np.testing.assert_array_equal(_decode(got_rle, out_size), mask_util.decode(expected_rle))


def test_post_processing_under_an_enclosing_autocast_gives_the_float32_results(postproc):
    # AMP inference runs the network under autocast; the tracker's association and the mask products
    # stay in float32 (under bfloat16 autocast they failed: "Index put requires the source and
    # destination dtypes match")
    run = postproc["runs"]["default"]
    feats = postproc["design"]["mask_feats"]
    args = (
        postproc["input"]["frames"],
        lambda s, e: designed_heads(postproc, s, e),
        lambda s, e: feats[:, s:e],
        postproc["input"]["frame_size"],
        (postproc["input"]["height"], postproc["input"]["width"]),
        postproc_params(run),
    )
    expected = infer_video(*args)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = infer_video(*args)
    assert len(expected["pred_scores"]) == run["num_instances"]
    assert got == expected


def test_clip_schedule_is_the_originals(postproc):
    assert clip_starts(12, 4, 1) == [(f[0], f[-1] + 1) for f in postproc["runs"]["default"]["heads_calls"]]
    assert clip_starts(7, 4, 1) == [(0, 4), (1, 5), (2, 6), (3, 7), (4, 7)]
    assert clip_starts(3, 4, 1) == [(0, 3)]
    # The original would stop after (4, 8) without flushing its window; here it is the last clip.
    assert clip_starts(8, 4, 4) == [(0, 4), (4, 8)]
    assert clip_starts(10, 4, 3) == [(0, 4), (3, 7), (6, 10), (9, 10)]


def test_window_scores_merge_as_mean_and_max_with_missing_tracks_as_zero():
    windows = [torch.tensor([[0.4, 0.0]]), torch.tensor([[0.8, 0.2], [0.6, 0.0]])]
    expected = torch.tensor(
        [[0.75 * 0.6 + 0.25 * 0.8, 0.75 * 0.1 + 0.25 * 0.2], [0.75 * 0.3 + 0.25 * 0.6, 0.0]]
    )
    torch.testing.assert_close(merge_window_scores(windows), expected)


def test_top_k_keeps_every_pair_above_005_and_at_least_ten():
    scores = torch.zeros(3, 5)
    scores[0, 1], scores[2, 4], scores[1, 1] = 0.5, 0.3, 0.04
    tracks, labels, values = select_predictions(scores)
    assert len(values) == 10
    assert (tracks[:3].tolist(), labels[:3].tolist()) == ([0, 2, 1], [1, 4, 1])
    assert values.tolist() == sorted(values.tolist(), reverse=True)

    many = torch.full((4, 5), 0.06)
    many[3, 0] = 0.9  # one track emitted under several classes
    tracks, labels, _ = select_predictions(many)
    assert len(tracks) == 20 and tracks[0] == 3 and labels[0] == 0
    assert len(select_predictions(torch.rand(1, 3))[0]) == 3


def test_output_masks_are_per_frame_rle_or_none():
    decode_clip, mask_features, _ = moving_objects_video(9)
    params = VideoInferenceParams(clip_len=4, window_frames=4, num_classes=3, apply_cls_thres=0.1)
    out = infer_video(9, decode_clip, mask_features, (96, 160), (120, 200), params)
    assert out["image_size"] == (120, 200)
    # Two tracks x three classes: fewer than ten pairs, all emitted.
    assert len(out["pred_scores"]) == len(out["pred_labels"]) == len(out["pred_masks"]) == 6
    for masks in out["pred_masks"]:
        assert len(masks) == 9
        for rle in masks:
            assert rle is None or (rle["size"] == [120, 200] and mask_util.area(rle) > 0)
    # Both objects are tracked through every frame, across two window hand-overs.
    assert out["pred_labels"][:2] == [1, 2]
    assert all(rle is not None for masks in out["pred_masks"][:2] for rle in masks)


def test_memory_is_bounded_by_the_clip_not_the_video(monkeypatch):
    RecordingTracker.instances = []
    monkeypatch.setattr(video_module, "OverlapTracker", RecordingTracker)
    decode_clip, mask_features, calls = moving_objects_video(60)
    params = VideoInferenceParams(clip_len=4, window_frames=8, num_classes=3, apply_cls_thres=0.1)
    infer_video(60, decode_clip, mask_features, (96, 160), (96, 160), params)
    (tracker,) = RecordingTracker.instances
    assert tracker.max_open_frames <= params.clip_len
    assert tracker.num_open_frames == 0
    assert sorted(f.frame for f in tracker.final_frames) == list(range(60))
    assert max(end - start for start, end in calls) <= params.clip_len
    assert len(tracker.windows) == 8


def test_params_from_config_use_the_original_keys():
    cfg = get_cfg()
    add_mdqe_config(cfg)
    cfg.merge_from_list(["MODEL.MDQE.WINDOW_FRAME_NUM_TEST", 30, "TEST.DETECTIONS_PER_IMAGE", 15])
    params = VideoInferenceParams.build(cfg)
    assert (params.window_frames, params.detections_per_image, params.clip_len) == (30, 15, 5)
    with pytest.raises(ValueError, match="WINDOW_FRAME_NUM_TEST"):
        VideoInferenceParams(clip_len=5, window_frames=4)


def test_wrong_number_of_classes_is_reported():
    decode_clip, mask_features, _ = moving_objects_video(5)
    with pytest.raises(ValueError, match="NUM_CLASSES is 25"):
        infer_video(5, decode_clip, mask_features, (96, 160), (96, 160), VideoInferenceParams(num_classes=25))


def test_video_without_any_mask_gives_no_predictions():
    decode_clip, mask_features, _ = moving_objects_video(6)
    params = VideoInferenceParams(clip_len=4, window_frames=4, num_classes=3)
    blank = lambda s, e: -mask_features(s, e).abs() - 1  # every mask logit negative
    out = infer_video(6, decode_clip, blank, (96, 160), (96, 160), params)
    assert out == {"image_size": (96, 160), "pred_scores": [], "pred_labels": [], "pred_masks": []}
