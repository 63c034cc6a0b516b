"""Cross-clip tracker: the original's assignments and window outputs, and designed scenarios."""

from __future__ import annotations

import logging

import pytest
import torch
from _dense_reference import DenseTracker
from _inference_testing import (
    RecordingTracker,
    designed_heads,
    make_clip,
    postproc_params,
    probe,
    random_objects_video,
    window_mask_logits,
)

import mdqe.inference.video as video_module
from mdqe.inference import OverlapTracker, VideoInferenceParams, infer_video
from mdqe.inference.masks import mask_logits_to_probs
from mdqe.inference.tracker import bisoftmax_similarity, overlap_mask_iou


@pytest.fixture
def recorded(monkeypatch):
    """Runs `infer_video` with a recording tracker; returns the trackers it built."""
    RecordingTracker.instances = []
    monkeypatch.setattr(video_module, "OverlapTracker", RecordingTracker)
    return RecordingTracker.instances


def _run_postproc(postproc, run_name):
    run = postproc["runs"][run_name]
    feats = postproc["design"]["mask_feats"]
    frames = postproc["input"]["frames"]
    infer_video(
        frames,
        lambda s, e: designed_heads(postproc, s, e),
        lambda s, e: feats[:, s:e],
        postproc["input"]["frame_size"],
        (postproc["input"]["height"], postproc["input"]["width"]),
        postproc_params(run),
    )
    return run


@pytest.mark.parametrize("run_name", ["default", "window8"])
def test_track_assignments_match_original(postproc, recorded, run_name):
    run = _run_postproc(postproc, run_name)
    (tracker,) = recorded
    expected = [(u["frames"][0], u["r_idx"], u["c_idx"]) for u in run["tracker_updates"]]
    assert tracker.updates == expected


@pytest.mark.parametrize("run_name", ["default", "window8"])
def test_window_outputs_match_original(postproc, recorded, run_name):
    run = _run_postproc(postproc, run_name)
    (tracker,) = recorded
    windows = run["window_outputs"]
    assert len(tracker.windows) == len(windows["pred_cls_per_window"])
    for (_, scores), expected in zip(tracker.windows, windows["pred_cls_per_window"]):
        torch.testing.assert_close(scores, expected, rtol=1e-6, atol=1e-7)

    logits = window_mask_logits(tracker, postproc["input"]["frames"], run["window_frame_num_test"])
    for window, expected in zip(logits, windows["pred_masks_per_window_probe"]):
        got = probe(mask_logits_to_probs(window, 4, postproc["input"]["frame_size"]))
        assert got["shape"] == tuple(expected["shape"])
        assert got["sum"] == pytest.approx(expected["sum"], rel=1e-6)
        assert got["min"] == pytest.approx(expected["min"], rel=1e-6)
        assert got["max"] == pytest.approx(expected["max"], rel=1e-6)
        torch.testing.assert_close(got["sample"], expected["sample"], rtol=1e-6, atol=1e-7)


def test_bisoftmax_uses_only_the_sides_with_several_elements():
    logits_pair = torch.tensor([[1.0, 0.0]])  # one track, two instances
    got = bisoftmax_similarity(logits_pair[:, :1], torch.tensor([[3.0], [1.0]]))
    torch.testing.assert_close(got, torch.tensor([[3.0, 1.0]]).softmax(dim=1))
    assert bisoftmax_similarity(torch.ones(1, 2), torch.ones(1, 2)).item() == 1.0
    many = bisoftmax_similarity(torch.eye(3), torch.eye(3) * 2)
    torch.testing.assert_close(many, 0.5 * ((torch.eye(3) * 2).softmax(0) + (torch.eye(3) * 2).softmax(1)))


def test_overlap_mask_iou_is_zero_for_empty_masks():
    saved = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    incoming = torch.tensor([[1, 0, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    iou = overlap_mask_iou(saved, incoming)
    torch.testing.assert_close(iou, torch.tensor([[0.5, 0.0], [0.0, 0.0]]), atol=1e-5, rtol=0)


def _tracker(**kwargs) -> OverlapTracker:
    args = dict(clip_len=4, clip_stride=1, window_frames=30, num_classes=3, embed_dim=8)
    args.update(max_num_instances=10, apply_cls_thres=0.1)
    args.update(kwargs)
    return OverlapTracker(**args)


EMBED = torch.eye(8) * 4  # distinct instances: orthogonal embeddings
BOX_A, BOX_B = (0, 0, 6, 6), (9, 9, 16, 16)


def _track_of(tracker: OverlapTracker, start: int, clip) -> dict[int, int]:
    track_ids, clip_idx = tracker.update(start, clip)
    return dict(zip(clip_idx.tolist(), track_ids.tolist()))


def test_instance_occluded_for_a_clip_keeps_its_id():
    tracker = _tracker(clip_len=2, clip_stride=2)
    assert _track_of(tracker, 0, make_clip([BOX_A, BOX_B], EMBED[:2], [0.9, 0.8], num_frames=2)) == {
        0: 0,
        1: 1,
    }
    # A is occluded during frames 2-3: only B is detected.
    assert _track_of(tracker, 2, make_clip([BOX_B], EMBED[1:2], [0.8], num_frames=2)) == {0: 1}
    # A reappears elsewhere (no mask overlap with anything saved); B listed first.
    moved_a = (0, 9, 6, 16)
    clip = make_clip([BOX_B, moved_a], torch.stack([EMBED[1], EMBED[0]]), [0.8, 0.9], num_frames=2)
    assert _track_of(tracker, 4, clip) == {0: 1, 1: 0}
    assert tracker.num_tracks == 2


def test_two_similar_instances_are_not_merged():
    # Near-identical embeddings (cosine ~0.98): the masks tell the two instances apart.
    base = torch.ones(8)
    embeds = torch.stack([base, base + 0.3 * torch.eye(8)[0]])
    tracker = _tracker()
    assert _track_of(tracker, 0, make_clip([BOX_A, BOX_B], embeds, [0.9, 0.8])) == {0: 0, 1: 1}
    for start in range(1, 6):
        clip = make_clip([BOX_B, BOX_A], embeds.flip(0), [0.8, 0.9])
        assert _track_of(tracker, start, clip) == {0: 1, 1: 0}
    assert tracker.num_tracks == 2


def test_weak_unmatched_instance_does_not_open_a_track():
    tracker = _tracker()
    _track_of(tracker, 0, make_clip([BOX_A], EMBED[:1], [0.9]))
    # B: a new object with score 0.15 <= 2 * APPLY_CLS_THRES; C: 0.25 opens a track.
    clip = make_clip([BOX_A, BOX_B, (0, 9, 6, 16)], EMBED[:3], [0.9, 0.15, 0.25])
    assert _track_of(tracker, 1, clip) == {0: 0, 2: 1}


def test_repeated_detection_of_a_tracked_instance_is_dropped():
    tracker = _tracker()
    _track_of(tracker, 0, make_clip([BOX_A, BOX_B], EMBED[:2], [0.9, 0.9]))
    # A second detection of A (same mask, other embedding) is neither matched nor a new track.
    clip = make_clip([BOX_A, BOX_B, BOX_A], EMBED[[0, 1, 5]], [0.9, 0.9, 0.9])
    assert _track_of(tracker, 1, clip) == {0: 0, 1: 1}


def test_window_hand_over_keeps_ids_and_averages_scores():
    tracker = _tracker(window_frames=4)
    window_scores = []
    for start in range(0, 9):
        clip = make_clip([BOX_A], EMBED[:1], [0.5 + 0.05 * start])
        assert _track_of(tracker, start, clip) == {0: 0}
        if start + 1 >= 4 * (len(window_scores) + 1):
            window_scores.append(tracker.end_window(is_last=False))
        tracker.pop_final_frames(start + 1)
    assert tracker.window_start == 8
    # Window 0: clips 0-3; window 1: the hand-over slot (window 0's mean, as A reaches into it) + clips 4-7.
    mean0 = sum(0.5 + 0.05 * s for s in range(4)) / 4
    mean1 = (mean0 + sum(0.5 + 0.05 * s for s in range(4, 8))) / 5
    torch.testing.assert_close(window_scores[0][0, 0], torch.tensor(mean0))
    torch.testing.assert_close(window_scores[1][0, 0], torch.tensor(mean1))


def test_track_cap_drops_new_instances_with_a_warning(caplog):
    tracker = _tracker(max_num_instances=2)
    boxes = [BOX_A, BOX_B, (0, 9, 6, 16)]
    with caplog.at_level(logging.WARNING):
        assert _track_of(tracker, 0, make_clip(boxes, EMBED[:3], [0.9, 0.8, 0.7])) == {0: 0, 1: 1}
    assert "MAX_NUM_INSTANCES=2" in caplog.text
    assert _track_of(tracker, 1, make_clip(boxes, EMBED[:3], [0.9, 0.8, 0.7])) == {0: 0, 1: 1}
    assert tracker.num_tracks == 2


def test_final_frames_average_the_clips_that_covered_them():
    tracker = _tracker(clip_len=2)
    clip0 = make_clip([BOX_A], EMBED[:1], [0.9], num_frames=2)
    clip1 = make_clip([BOX_A], EMBED[:1], [0.9], num_frames=2)
    clip1.mask_logits = clip1.mask_logits * 0.5
    tracker.update(0, clip0)
    tracker.update(1, clip1)
    frames = tracker.pop_final_frames(2)
    assert [f.frame for f in frames] == [0, 1]
    torch.testing.assert_close(frames[0].mask_logits, clip0.mask_logits[:, 0])
    torch.testing.assert_close(frames[1].mask_logits, 0.75 * clip0.mask_logits[:, 1])
    assert tracker.num_open_frames == 1


@pytest.mark.parametrize(
    "clip_len, clip_stride, window_frames, num_frames, seed",
    [
        (4, 1, 8, 21, 0),
        (3, 2, 5, 17, 1),
        (5, 3, 6, 20, 2),
        (2, 2, 4, 9, 3),
        (4, 4, 8, 16, 4),
        (3, 1, 3, 14, 5),
    ],
)
def test_sparse_memory_equals_the_dense_memory_of_the_original(
    recorded, clip_len, clip_stride, window_frames, num_frames, seed
):
    params = VideoInferenceParams(
        clip_len=clip_len,
        clip_stride=clip_stride,
        window_frames=window_frames,
        max_num_instances=64,
        apply_cls_thres=0.1,
        num_classes=4,
    )
    decode_clip, mask_features = random_objects_video(num_frames, seed)
    infer_video(num_frames, decode_clip, mask_features, (48, 80), (48, 80), params)
    (tracker,) = recorded
    dense = DenseTracker(clip_len, clip_stride, window_frames, 4, 8, (12, 20), 0.1)
    expected_cls, expected_logits = [], []
    for i, (start, clip) in enumerate(tracker.clips):
        rows, cols = dense.update(start, clip)
        assert tracker.updates[i] == (start, rows, cols)
        if i in tracker.window_after_update:
            cls, logits = dense.window(is_last=i == len(tracker.clips) - 1)
            expected_cls.append(cls)
            expected_logits.append(logits)
    assert tracker.num_tracks >= 3
    assert len(tracker.windows) == len(expected_cls) > 1
    for (_, cls), expected in zip(tracker.windows, expected_cls):
        torch.testing.assert_close(cls, expected, rtol=1e-6, atol=1e-7)
    for logits, expected in zip(window_mask_logits(tracker, num_frames, window_frames), expected_logits):
        torch.testing.assert_close(logits, expected, rtol=1e-6, atol=1e-6)
