"""The YouTube-VIS metric code: hand-computed cases and hypothesis properties."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
from _ytvis_testing import dataset, dense_video_iou, gt_annotation, rect, result, rle, sequence
from hypothesis import given, settings
from hypothesis import strategies as st

from mdqe.evaluation.ytvis_metrics import METRIC_NAMES, evaluate_ytvis, format_summary, video_iou

# pycocotools' decode under numpy 2 (used by the dense oracle).
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

# 101 recall thresholds: precision 1 up to recall 0.5 (51 of them), 2/3 above (50).
AP_ONE_FP_BETWEEN_TWO_TP = (51 + 50 * 2 / 3) / 101


def metrics(gt: dict, results: list[dict]) -> dict[str, float]:
    return evaluate_ytvis(gt, results).metrics


def assert_metrics(found: dict[str, float], expected: dict[str, float]) -> None:
    for name, value in expected.items():
        if math.isnan(value):
            assert math.isnan(found[name]), (name, found[name])
        else:
            assert found[name] == pytest.approx(value, abs=1e-9), (name, found[name])


def test_video_iou_sums_over_frames_and_counts_missing_frames_as_empty():
    d = [rect(4, 4, 0, 0, 2, 2), None, rect(4, 4, 0, 0, 4, 4)]
    g_long = [rect(4, 4, 1, 1, 3, 3), rect(4, 4, 0, 0, 2, 2), None]
    g_short = [rect(4, 4, 0, 0, 2, 2)]
    ious = video_iou([sequence(d)], [sequence(g_long), sequence(g_short)])
    # Frame 0: 1 px shared of 7; frame 1: only gt (4 px); frame 2: only the prediction (16 px).
    assert ious[0, 0] == pytest.approx(1 / 27)
    # Frames are paired up to the shorter sequence: only frame 0 counts.
    assert ious[0, 1] == 1.0


def test_video_iou_of_empty_sequences_is_zero():
    empty = [None, rle(np.zeros((3, 3), bool))]
    assert video_iou([empty], [empty])[0, 0] == 0.0


def two_video_gt() -> dict:
    anns = [
        gt_annotation(1, 1, 1, [rect(8, 8, 0, 0, 4, 4), rect(8, 8, 1, 1, 5, 5)]),
        gt_annotation(2, 1, 2, [None, rect(8, 8, 4, 4, 8, 8)]),
        gt_annotation(3, 2, 1, [rect(6, 10, 0, 0, 6, 3), rect(6, 10, 0, 2, 6, 5), None]),
    ]
    return dataset([(1, 8, 8, 2), (2, 6, 10, 3)], anns)


def perfect_results(gt: dict, score: float = 0.9) -> list[dict]:
    out = []
    for ann in gt["annotations"]:
        size = next(s["size"] for s in ann["segmentations"] if s)
        masks = [None if s is None else _decode(s, size) for s in ann["segmentations"]]
        out.append(result(ann["video_id"], ann["category_id"], score, masks))
    return out


def _decode(segm: dict, size: list[int]) -> np.ndarray:
    import pycocotools.mask as mask_util

    return mask_util.decode(mask_util.frPyObjects(segm, *size)).astype(bool)


def test_perfect_predictions_score_100():
    gt = two_video_gt()
    found = metrics(gt, perfect_results(gt))
    expected = dict.fromkeys(METRIC_NAMES, 100.0)
    expected.update(APm=math.nan, APl=math.nan)  # only small objects
    assert_metrics(found, expected)


def test_no_predictions_score_0():
    found = metrics(two_video_gt(), [])
    assert_metrics(found, {"AP": 0, "AP50": 0, "AP75": 0, "APs": 0, "AR1": 0, "AR10": 0, "APl": math.nan})


def crowd_case(iscrowd: int) -> tuple[dict, list[dict]]:
    regular = [rect(8, 8, 0, 0, 3, 3)]
    crowd = [rect(8, 8, 4, 4, 8, 8)]
    gt = dataset(
        [(1, 8, 8, 1)], [gt_annotation(1, 1, 1, regular), gt_annotation(2, 1, 1, crowd, iscrowd=iscrowd)]
    )
    results = [result(1, 1, 0.9, crowd), result(1, 1, 0.8, crowd), result(1, 1, 0.5, regular)]
    return gt, results


def test_predictions_on_crowd_ground_truth_are_ignored_however_many():
    found = metrics(*crowd_case(iscrowd=1))
    assert_metrics(found, {"AP": 100, "AR1": 0, "AR10": 100})


def test_same_case_without_crowd_has_a_false_positive():
    found = metrics(*crowd_case(iscrowd=0))
    assert_metrics(found, {"AP": 100 * AP_ONE_FP_BETWEEN_TWO_TP, "AR1": 50, "AR10": 100})


def test_null_frames_count_in_the_union():
    box = rect(8, 8, 0, 0, 4, 4)
    gt = dataset([(1, 8, 8, 3)], [gt_annotation(1, 1, 1, [box, box, None])])
    # The prediction also covers frame 2 (16 px), where the ground truth is null: IoU = 32 / 48 = 2/3,
    # a match at IoU 0.50, 0.55, 0.60, 0.65 and none above.
    found = metrics(gt, [result(1, 1, 0.7, [box, box, rect(8, 8, 4, 4, 8, 8)])])
    assert_metrics(found, {"AP": 40, "AP50": 100, "AP75": 0, "AR10": 40})


def test_area_ranges_use_the_stored_ground_truth_areas():
    box = rect(8, 8, 0, 0, 4, 4)
    # 16-pixel masks, but stored areas say medium (null and 0 entries are left out of the mean).
    ann = gt_annotation(1, 1, 1, [box, box, box], areas=[20000, None, 0])
    found = metrics(dataset([(1, 8, 8, 3)], [ann]), [result(1, 1, 0.9, [box, box, box])])
    assert_metrics(found, {"AP": 100, "APs": math.nan, "APm": 100, "APl": math.nan})


def test_area_range_bounds_are_inclusive():
    box = rect(8, 8, 0, 0, 4, 4)
    ann = gt_annotation(1, 1, 1, [box], areas=[128**2])
    found = metrics(dataset([(1, 8, 8, 1)], [ann]), [result(1, 1, 0.9, [box])])
    assert_metrics(found, {"APs": 100, "APm": 100, "APl": math.nan})


def test_unmatched_prediction_outside_an_area_range_is_ignored_there():
    small = rect(300, 300, 0, 0, 10, 10)
    gt = dataset([(1, 300, 300, 1)], [gt_annotation(1, 1, 1, [small])])
    full = np.ones((300, 300), bool)  # 90000 px: large
    found = metrics(gt, [result(1, 1, 0.9, [full]), result(1, 1, 0.5, [small])])
    # All areas: a false positive ranked first halves the precision at full recall.
    assert_metrics(found, {"AP": 50, "APs": 100, "APl": math.nan})


def test_max_dets_count_per_video_and_category():
    a, b = rect(8, 8, 0, 0, 3, 3), rect(8, 8, 4, 4, 8, 8)
    gt = dataset([(1, 8, 8, 1)], [gt_annotation(1, 1, 1, [a]), gt_annotation(2, 1, 1, [b])])
    found = metrics(gt, [result(1, 1, 0.9, [a]), result(1, 1, 0.8, [b])])
    assert_metrics(found, {"AP": 100, "AR1": 50, "AR10": 100})


def test_match_to_ground_truth_id_0_counts_as_unmatched_like_the_official_code():
    box = rect(8, 8, 0, 0, 4, 4)
    gt = dataset([(1, 8, 8, 1)], [gt_annotation(0, 1, 1, [box])])
    assert_metrics(metrics(gt, [result(1, 1, 0.9, [box])]), {"AP": 0, "AR10": 0})


def test_results_of_unknown_categories_are_ignored():
    gt = two_video_gt()
    extra = result(1, 99, 1.0, [rect(8, 8, 0, 0, 4, 4), None])
    assert metrics(gt, [*perfect_results(gt), extra]) == metrics(gt, perfect_results(gt))


def test_result_for_a_video_not_in_the_ground_truth_is_an_error():
    with pytest.raises(ValueError, match="video_id 7"):
        evaluate_ytvis(two_video_gt(), [result(7, 1, 0.5, [None])])


def test_mask_of_the_wrong_size_is_an_error_naming_the_result():
    with pytest.raises(ValueError, match=r"results\[0\].*frame 0.*\[8, 8\]"):
        evaluate_ytvis(two_video_gt(), [result(1, 1, 0.5, [rect(4, 4, 0, 0, 2, 2), None])])


def test_summary_lists_the_twelve_numbers_and_the_metrics():
    text = format_summary(evaluate_ytvis(two_video_gt(), []))
    assert text.count("Average Precision") == 6 and text.count("Average Recall") == 6
    assert "AP50" in text and "AR10" in text


# ---- properties ----------------------------------------------------------------------------------


@st.composite
def mask_sequences(draw, height: int, width: int, count: int):
    out = []
    for _ in range(count):
        length = draw(st.integers(1, 4))
        seq = []
        for _ in range(length):
            if draw(st.booleans()) and draw(st.booleans()):
                seq.append(None)
            else:
                bits = draw(st.lists(st.booleans(), min_size=height * width, max_size=height * width))
                seq.append(rle(np.array(bits).reshape(height, width)))
        out.append(seq)
    return out


@st.composite
def iou_inputs(draw):
    height, width = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    return (
        draw(mask_sequences(height, width, draw(st.integers(1, 3)))),
        draw(mask_sequences(height, width, draw(st.integers(1, 3)))),
    )


@settings(max_examples=60, deadline=None)
@given(iou_inputs())
def test_video_iou_equals_dense_oracle_is_symmetric_and_bounded(inputs):
    dt, gt = inputs
    ious = video_iou(dt, gt)
    assert ious.shape == (len(dt), len(gt))
    np.testing.assert_array_equal(ious, dense_video_iou(dt, gt))
    np.testing.assert_array_equal(ious, video_iou(gt, dt).T)
    assert ((ious >= 0) & (ious <= 1)).all()


def random_case_mask(rng: np.random.Generator, height: int, width: int) -> np.ndarray | None:
    return None if rng.random() < 0.2 else rng.random((height, width)) < rng.uniform(0.2, 0.8)


def random_case(seed: int) -> tuple[dict, list[dict]]:
    """A small random case with crowd and null frames; scores are distinct."""
    rng = np.random.default_rng(seed)
    videos, anns, results = [], [], []
    for video_id in range(1, int(rng.integers(2, 5))):
        height, width, length = int(rng.integers(3, 7)), int(rng.integers(3, 7)), int(rng.integers(1, 4))
        videos.append((video_id, height, width, length))

        gt_masks = []
        for _ in range(int(rng.integers(0, 4))):
            masks = [random_case_mask(rng, height, width) for _ in range(length)]
            gt_masks.append(masks)
            crowd = int(rng.random() < 0.15)
            anns.append(gt_annotation(len(anns) + 1, video_id, int(rng.integers(1, 3)), masks, iscrowd=crowd))
        for _ in range(int(rng.integers(0, 6))):
            if gt_masks and rng.random() < 0.6:
                source = gt_masks[int(rng.integers(len(gt_masks)))]
                masks = [
                    m if m is None or rng.random() < 0.5 else m ^ (rng.random(m.shape) < 0.2) for m in source
                ]
            else:
                masks = [random_case_mask(rng, height, width) for _ in range(length)]
            results.append(result(video_id, int(rng.integers(1, 3)), 0.0, masks))
    for score, res in zip(rng.permutation(len(results)) / max(len(results), 1) + 0.01, results):
        res["score"] = float(score)
    return dataset(videos, anns), results


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_stats_do_not_depend_on_video_or_result_order(seed):
    gt, results = random_case(seed)
    expected = evaluate_ytvis(gt, results).stats
    rng = np.random.default_rng(seed)
    shuffled_gt = copy.deepcopy(gt)
    rng.shuffle(shuffled_gt["videos"])
    shuffled_results = [results[i] for i in rng.permutation(len(results))]
    np.testing.assert_array_equal(evaluate_ytvis(shuffled_gt, shuffled_results).stats, expected)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_stats_only_depend_on_the_score_ranking(seed):
    gt, results = random_case(seed)
    rescaled = [dict(r, score=r["score"] * 0.5 + 0.25) for r in results]
    np.testing.assert_array_equal(evaluate_ytvis(gt, rescaled).stats, evaluate_ytvis(gt, results).stats)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 2))
def test_an_empty_prediction_ranked_last_changes_nothing(seed, category):
    gt, results = random_case(seed)
    video = gt["videos"][0]
    empty = result(video["id"], category, 0.0, [None] * video["length"])
    np.testing.assert_array_equal(
        evaluate_ytvis(gt, [*results, empty]).stats, evaluate_ytvis(gt, results).stats
    )


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_stats_are_fractions_or_minus_one(seed):
    stats = evaluate_ytvis(*random_case(seed)).stats
    assert (((stats >= 0) & (stats <= 1)) | (stats == -1)).all()
