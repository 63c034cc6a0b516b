"""Metrics beyond the eight: per-category / per-video / occlusion-level AP, the error breakdown, 2022."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from _ytvis_testing import dataset, gt_annotation, rect, result
from scipy.stats import spearmanr

from mdqe.evaluation.analysis import analyze_ytvis, evaluate_ytvis_2022, split_long_videos
from mdqe.evaluation.occlusion import frame_occlusion, grade, instance_occlusion_scores, top_half_mean
from mdqe.evaluation.ytvis_metrics import _index, evaluate_ytvis

# 101 recall thresholds: precision 1 up to recall 0.5 (51 of them), 2/3 above (50).
AP_ONE_FP_BETWEEN_TWO_TP = (51 + 50 * 2 / 3) / 101
AP_HALF_RECALL = 51 / 101


def random_case(seed: int, num_videos: int = 4, num_categories: int = 3) -> tuple[dict, list[dict]]:
    """Rectangles moving over 3 frames of 12x12 videos; predictions jittered copies (some relabelled) and
    random boxes, with None frames."""
    rng = np.random.default_rng(seed)
    anns, results, videos = [], [], []
    for v in range(1, num_videos + 1):
        videos.append((v, 12, 12, 3))
        for _ in range(int(rng.integers(1, 4))):
            top, left = rng.integers(0, 7, 2)
            size = int(rng.integers(3, 6))
            masks = [rect(12, 12, top, left + f, top + size, left + f + size) for f in range(3)]
            category = int(rng.integers(1, num_categories + 1))
            anns.append(gt_annotation(len(anns) + 1, v, category, masks))
            for _ in range(int(rng.integers(0, 3))):
                dy, dx = rng.integers(-1, 2, 2)
                copy = [
                    rect(12, 12, top + dy, left + f + dx, top + dy + size, left + f + dx + size)
                    for f in range(3)
                ]
                label = category if rng.random() < 0.7 else int(rng.integers(1, num_categories + 1))
                results.append(result(v, label, float(rng.random()), copy))
        for _ in range(int(rng.integers(0, 3))):
            top, left = rng.integers(0, 9, 2)
            masks = [
                rect(12, 12, top, left, top + 3, left + 3),
                None,
                rect(12, 12, top, left, top + 3, left + 3),
            ]
            results.append(result(v, int(rng.integers(1, num_categories + 1)), float(rng.random()), masks))
    return dataset(videos, anns, categories=tuple(range(1, num_categories + 1))), results


@pytest.mark.parametrize("seed", range(4))
def test_official_numbers_are_unchanged_by_the_analysis(seed):
    gt, results = random_case(seed)
    expected = evaluate_ytvis(gt, results)
    found = analyze_ytvis(gt, results).evaluation
    np.testing.assert_array_equal(found.stats, expected.stats)
    np.testing.assert_array_equal(found.precision, expected.precision)


@pytest.mark.parametrize("seed", range(4))
def test_per_category_ap_equals_the_evaluation_restricted_to_that_category(seed):
    gt, results = random_case(seed)
    analysis = analyze_ytvis(gt, results)
    for category_id, ap in analysis.per_category.items():
        only = {**gt, "categories": [c for c in gt["categories"] if c["id"] == category_id]}
        expected = evaluate_ytvis(only, [r for r in results if r["category_id"] == category_id]).metrics["AP"]
        assert (math.isnan(ap) and math.isnan(expected)) or ap == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("seed", range(3))
def test_per_video_ap_equals_the_evaluation_of_that_video_alone(seed):
    gt, results = random_case(seed)
    for video in analyze_ytvis(gt, results).per_video:
        only = {
            **gt,
            "videos": [v for v in gt["videos"] if v["id"] == video["video_id"]],
            "annotations": [a for a in gt["annotations"] if a["video_id"] == video["video_id"]],
        }
        expected = evaluate_ytvis(only, [r for r in results if r["video_id"] == video["video_id"]]).metrics[
            "AP"
        ]
        assert (math.isnan(video["AP"]) and math.isnan(expected)) or video["AP"] == pytest.approx(expected)


def test_best_iou_per_track_is_the_best_same_category_prediction():
    a = rect(8, 8, 0, 0, 4, 4)
    gt = dataset([(1, 8, 8, 1)], [gt_annotation(1, 1, 1, [a])])
    half = rect(8, 8, 0, 0, 4, 2)
    results = [result(1, 1, 0.9, [half]), result(1, 2, 0.8, [a])]
    (track,) = analyze_ytvis(gt, results).per_video[0]["tracks"]
    assert track["best_iou"] == 0.5 and track["matched"] is True


# ---------------------------------------------------------------- occlusion


def test_top_half_mean_and_grades_follow_the_official_ovis_rule():
    assert top_half_mean([0.0, 0.0, 0.75, 0.75]) == 0.75
    assert top_half_mean([0.0, 0.25, 0.0]) == pytest.approx(0.125)  # top ceil(3/2) = 2 scores
    assert [grade(s) for s in (0.0, 0.25, 0.3, 0.5, 0.51)] == [
        "slight",
        "slight",
        "moderate",
        "moderate",
        "heavy",
    ]


def test_ovis_occlusion_labels_give_the_level_ap():
    a, b = rect(8, 8, 0, 0, 3, 3), rect(8, 8, 4, 4, 8, 8)
    anns = [
        gt_annotation(1, 1, 1, [a, a], occlusion=["no_occlusion", "slight_occlusion"]),
        gt_annotation(2, 1, 1, [b, b], occlusion=["severe_occlusion", "severe_occlusion"]),
    ]
    gt = dataset([(1, 8, 8, 2)], anns)
    analysis = analyze_ytvis(gt, [result(1, 1, 0.9, [b, b])])  # finds only the heavily occluded one
    assert analysis.occlusion_scores == {1: 0.25, 2: 0.75}
    assert analysis.occlusion["heavy"] == pytest.approx(100.0) and analysis.occlusion["slight"] == 0.0
    # The official ranges are inclusive at both ends: the 0.25 one is also "moderate".
    assert analysis.occlusion["moderate"] == 0.0


def test_a_level_holding_every_track_has_the_ap_and_an_empty_level_has_none():
    gt, results = random_case(2)
    for ann in gt["annotations"]:
        ann["occlusion"] = ["no_occlusion"] * len(ann["segmentations"])  # all slightly occluded
    analysis = analyze_ytvis(gt, results)
    assert analysis.occlusion["slight"] == pytest.approx(analysis.metrics["AP"])
    assert math.isnan(analysis.occlusion["moderate"]) and math.isnan(analysis.occlusion["heavy"])


def test_mask_occlusion_counts_other_instances_pixels_inside_the_bounding_box():
    # A: the 4x4 square at the origin without its bottom-right 2x2 corner, which B (2x4) covers.
    a = rect(8, 8, 0, 0, 4, 4) & ~rect(8, 8, 2, 2, 4, 4)
    b = rect(8, 8, 2, 2, 4, 6)
    gt = dataset([(1, 8, 8, 1)], [gt_annotation(1, 1, 1, [a]), gt_annotation(2, 1, 2, [b])])
    videos, _ = _index(gt, [])
    scores = instance_occlusion_scores(videos)
    assert scores[1] == pytest.approx(4 / 16)  # 4 of B's pixels in A's box, A has 12
    assert scores[2] == 0.0  # none of A's pixels lies in B's box


@pytest.mark.parametrize("seed", range(3))
def test_mask_occlusion_equals_a_dense_computation(seed):
    # Random blobs over 40 frames (several pycocotools calls per video), some instances absent in some
    # frames: the score of every instance-frame equals the definition computed on decoded masks.
    rng = np.random.default_rng(seed)
    height, width, num_frames = 18, 22, 40
    masks = []
    for _ in range(int(rng.integers(2, 6))):
        top, left = rng.integers(0, 12, 2)
        frames = []
        for _ in range(num_frames):
            if rng.random() < 0.2:
                frames.append(None)
                continue
            m = rect(height, width, top, left, top + int(rng.integers(2, 7)), left + int(rng.integers(2, 9)))
            m &= rng.random((height, width)) < 0.85  # holes, so that boxes and masks differ
            frames.append(m if m.any() else None)
        masks.append(frames)
    anns = [gt_annotation(i + 1, 1, 1, seq) for i, seq in enumerate(masks)]
    videos, _ = _index(dataset([(1, height, width, num_frames)], anns), [])
    tracks = [g.track for gts, _ in videos[1].groups.values() for g in gts]
    per_frame = frame_occlusion(
        [t.frames for t in tracks], [t.rles for t in tracks], [t.areas for t in tracks], (height, width)
    )
    for i, (track, scores) in enumerate(zip(tracks, per_frame)):
        for f, score in zip(track.frames.tolist(), scores.tolist()):
            own = masks[i][f]
            rows, cols = np.nonzero(own)
            box = np.zeros_like(own)
            box[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1] = True
            covered = sum(int((box & m[f]).sum()) for j, m in enumerate(masks) if j != i and m[f] is not None)
            others = min(covered, int(box.sum()) - int(own.sum()))
            assert score == pytest.approx(others / (others + int(own.sum()))), (i, f)


def test_mask_occlusion_grading_agrees_with_the_synthetic_manifest(tmp_path):
    from mdqe.data.synthetic import SplitSpec, write_synthetic_vis

    write_synthetic_vis(str(tmp_path), {"valid": SplitSpec(num_videos=16, min_length=6, max_length=8)})
    gt = json.loads((tmp_path / "valid.json").read_text())
    facts = json.loads((tmp_path / "manifest.json").read_text())["videos"]["valid"]
    videos, _ = _index(gt, [])
    true, estimated, grades = [], [], {}
    scores = instance_occlusion_scores(videos)
    for fact in facts:
        video = videos[fact["video_id"]]
        gts = [g for gts, _ in video.groups.values() for g in gts]
        tracks = [g.track for g in gts]
        per_frame = frame_occlusion(
            [t.frames for t in tracks], [t.rles for t in tracks], [t.areas for t in tracks], video.size
        )
        true.append(fact["max_occlusion"])
        estimated.append(max(p.max(initial=0) for p in per_frame))
        grades[fact["video_id"]] = [grade(scores[g.ann_id]) for g in gts]
    true, estimated = np.array(true), np.array(estimated)
    # The manifest's max_occlusion is the largest hidden fraction of any instance in any frame.
    assert np.corrcoef(true, estimated)[0, 1] > 0.85
    assert spearmanr(true, estimated).correlation > 0.7
    assert np.abs(true - estimated).mean() < 0.12
    # Heavily occluded videos have heavier grades than lightly occluded ones.
    rank = {"slight": 0, "moderate": 1, "heavy": 2}
    heaviest = np.array([max(rank[g] for g in grades[f["video_id"]]) for f in facts])
    assert heaviest[true >= 0.85].mean() > heaviest[true < 0.7].mean()


# ---------------------------------------------------------------- error breakdown


def one_frame_case(gts: list[tuple[int, np.ndarray]], preds: list[tuple[int, float, np.ndarray]]):
    anns = [gt_annotation(i + 1, 1, c, [m]) for i, (c, m) in enumerate(gts)]
    gt = dataset([(1, 10, 10, 1)], anns)
    return gt, [result(1, c, s, [m]) for c, s, m in preds]


A, B, C = rect(10, 10, 0, 0, 4, 4), rect(10, 10, 5, 5, 9, 9), rect(10, 10, 0, 6, 4, 10)
# 4 of A's 16 pixels: IoU 0.25 with A
A_PART = rect(10, 10, 0, 0, 2, 2)


@pytest.mark.parametrize(
    ("gts", "preds", "kind", "ap", "gain"),
    [
        # a prediction on A with the wrong category: AP 0; relabelled, it finds A
        ([(1, A)], [(2, 0.9, A)], "cls", 0.0, 1.0),
        # a second prediction on A between the two true positives
        (
            [(1, A), (1, B)],
            [(1, 0.9, A), (1, 0.8, A), (1, 0.7, B)],
            "dupe",
            AP_ONE_FP_BETWEEN_TWO_TP,
            1 - AP_ONE_FP_BETWEEN_TWO_TP,
        ),
        # B found with IoU 0.25 only: fixed, it finds B
        (
            [(1, A), (1, B)],
            [(1, 0.9, A), (1, 0.8, B & rect(10, 10, 5, 5, 7, 7))],
            "loc",
            AP_HALF_RECALL,
            1 - AP_HALF_RECALL,
        ),
        # a prediction on nothing between the two true positives
        (
            [(1, A), (1, B)],
            [(1, 0.9, A), (1, 0.8, C), (1, 0.7, B)],
            "bkg",
            AP_ONE_FP_BETWEEN_TWO_TP,
            1 - AP_ONE_FP_BETWEEN_TWO_TP,
        ),
        # category 1 predicts a quarter of category 2's B: wrong class and poorly localised
        (
            [(1, A), (1, C), (2, B)],
            [(1, 0.9, A), (1, 0.8, rect(10, 10, 5, 5, 7, 7)), (1, 0.7, C), (2, 0.6, B)],
            "both",
            (AP_ONE_FP_BETWEEN_TWO_TP + 1) / 2,
            (1 - AP_ONE_FP_BETWEEN_TWO_TP) / 2,
        ),
        # B never predicted
        ([(1, A), (1, B)], [(1, 0.9, A)], "missed", AP_HALF_RECALL, 1 - AP_HALF_RECALL),
    ],
)
def test_each_error_type_is_found_and_fixing_it_gains_the_stated_ap(gts, preds, kind, ap, gain):
    gt, results = one_frame_case(gts, preds)
    breakdown = analyze_ytvis(gt, results).breakdown
    assert breakdown.counts[kind] == 1
    assert sum(breakdown.counts.values()) == 1  # no other error
    assert breakdown.ap == pytest.approx(ap * 100)
    assert breakdown.delta_ap[kind] == pytest.approx(gain * 100)
    assert all(v == 0 for k, v in breakdown.delta_ap.items() if k != kind)
    assert evaluate_ytvis(gt, results).metrics["AP50"] == pytest.approx(breakdown.ap)


@pytest.mark.parametrize("seed", range(4))
def test_breakdown_ap_is_the_official_ap50_and_counts_every_false_positive(seed):
    gt, results = random_case(seed)
    analysis = analyze_ytvis(gt, results)
    assert analysis.breakdown.ap == pytest.approx(analysis.metrics["AP50"], abs=1e-9)
    true_positives = sum(t["matched"] for v in analysis.per_video for t in v["tracks"])
    false_positives = sum(n for k, n in analysis.breakdown.counts.items() if k != "missed")
    assert true_positives + false_positives == len(results)


# ---------------------------------------------------------------- YouTube-VIS 2022


def test_2022_scores_split_short_and_long_videos_and_average_their_ap():
    gt, results = random_case(7, num_videos=5)
    short, long = split_long_videos(gt, [4, 5])
    assert [v["id"] for v in short["videos"]] == [1, 2, 3] and [v["id"] for v in long["videos"]] == [4, 5]
    assert {a["video_id"] for a in long["annotations"]} <= {4, 5}
    assert len(short["annotations"]) + len(long["annotations"]) == len(gt["annotations"])
    scores = evaluate_ytvis_2022(short, long, results)
    ap_short = evaluate_ytvis(short, [r for r in results if r["video_id"] <= 3]).metrics["AP"]
    ap_long = evaluate_ytvis(long, [r for r in results if r["video_id"] >= 4]).metrics["AP"]
    assert scores["AP_S"] == pytest.approx(ap_short) and scores["AP_L"] == pytest.approx(ap_long)
    assert scores["AP"] == pytest.approx((ap_short + ap_long) / 2)
    assert {"AP50_S", "AR10_L"} <= set(scores)


def test_2022_rejects_results_of_unknown_videos():
    gt, results = random_case(7, num_videos=3)
    short, long = split_long_videos(gt, [3])
    with pytest.raises(ValueError, match="video_id 9"):
        evaluate_ytvis_2022(short, long, [*results, {**results[0], "video_id": 9}])
    with pytest.raises(ValueError, match="not videos of the ground truth"):
        split_long_videos(gt, [42])


def test_metrics_json_and_scalars_hold_every_analysis():
    gt, results = random_case(1)
    analysis = analyze_ytvis(gt, results)
    content = json.loads(json.dumps(analysis.to_json()))
    assert {"AP", "per_category", "occlusion", "errors", "per_video"} <= set(content)
    assert set(content["errors"]["delta_AP"]) == {"cls", "dupe", "loc", "both", "bkg", "missed"}
    scalars = analysis.scalars()
    assert {"APso", "APmo", "APho", "dAP-cls", "AP-class1"} <= set(scalars)
    assert all(isinstance(v, float) for v in scalars.values())
