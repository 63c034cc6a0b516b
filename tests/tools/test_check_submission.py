"""tools/check_submission.py and mdqe.evaluation.submission: a well-formed submission passes; each kind of
broken file is rejected, naming the video and the problem; an OVIS-scale file is handled."""

from __future__ import annotations

import copy
import importlib.util
import json
import subprocess
import sys
import zipfile

import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis.extra.numpy import arrays
from pycocotools import mask as mask_utils

from tests.conftest import REPO_ROOT

CHECKER = REPO_ROOT / "mdqe" / "evaluation" / "submission.py"


@pytest.fixture(scope="module")
def checker():
    spec = importlib.util.spec_from_file_location("submission_under_test", CHECKER)
    module = importlib.util.module_from_spec(spec)
    sys.modules["submission_under_test"] = module
    spec.loader.exec_module(module)
    return module


def _rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode()}


def make_split(num_videos: int, length: int, height: int, width: int, num_categories: int = 3) -> dict:
    videos = [{"id": v + 1, "height": height, "width": width, "length": length} for v in range(num_videos)]
    categories = [{"id": c + 1, "name": f"c{c + 1}"} for c in range(num_categories)]
    return {"videos": videos, "categories": categories}


def make_results(gt: dict, per_video: int, seed: int = 0) -> list[dict]:
    """`per_video` predictions per video: a moving box per frame (null in the last frame of every other)."""
    rng = np.random.default_rng(seed)
    results = []
    for video in gt["videos"]:
        height, width, length = video["height"], video["width"], video["length"]
        for i in range(per_video):
            masks = []
            for t in range(length):
                if i % 2 and t == length - 1:
                    masks.append(None)
                    continue
                mask = np.zeros((height, width), bool)
                y, x = rng.integers(0, height - 4), rng.integers(0, width - 4)
                mask[y : y + rng.integers(2, height // 2), x : x + rng.integers(2, width // 2)] = True
                masks.append(_rle(mask))
            category = int(rng.integers(1, len(gt["categories"]) + 1))
            results.append(
                {
                    "video_id": video["id"],
                    "category_id": category,
                    "score": float(rng.random()),
                    "segmentations": masks,
                }
            )
    return results


@pytest.fixture(scope="module")
def split() -> tuple[dict, list[dict]]:
    gt = make_split(num_videos=4, length=5, height=24, width=32)
    return gt, make_results(gt, per_video=3)


def test_a_well_formed_submission_passes(checker, split):
    gt, results = split
    report = checker.check_results(results, gt)
    assert report.problems == []
    assert (report.num_predictions, report.num_videos_covered, report.num_videos) == (12, 4, 4)
    assert report.num_masks == 12 * 5 - 4  # one prediction per video has a null last frame


def _broken(results: list[dict], index: int, **changes) -> list[dict]:
    broken = copy.deepcopy(results)
    broken[index].update(changes)
    return broken


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"video_id": 99}, "prediction 4 (video 99): video_id 99 is not a video of the split"),
        ({"category_id": 7}, "prediction 4 (video 2): category_id 7 is not a category of the split"),
        ({"score": float("nan")}, "prediction 4 (video 2): score nan is not a finite number"),
        ({"score": 1.5}, "prediction 4 (video 2): score 1.5 is outside [0, 1]"),
        ({"score": "0.5"}, "prediction 4 (video 2): score '0.5' is not a finite number"),
        ({"segmentations": [None] * 4}, "prediction 4 (video 2): 4 segmentations, the video has 5 frames"),
        ({"segmentations": "rle"}, "prediction 4 (video 2): segmentations is a str, not a list"),
    ],
)
def test_a_broken_prediction_is_named_with_its_video_and_problem(checker, split, change, expected):
    gt, results = split
    report = checker.check_results(_broken(results, 4, **change), gt)
    assert expected in report.problems


def _with_frame(results: list[dict], rle) -> list[dict]:
    broken = copy.deepcopy(results)
    broken[5]["segmentations"][2] = rle
    return broken


@pytest.mark.parametrize(
    ("rle", "expected"),
    [
        ({"size": [24, 33], "counts": "PPYo1"}, "has size [24, 33], the video is [24, 32]"),
        ({"size": [24, 32], "counts": "0"}, "run lengths add up to 0 pixels, not 768"),
        ({"size": [24, 32], "counts": "a"}, "end inside a run length (truncated)"),
        ({"size": [24, 32], "counts": "\u00e9"}, "characters outside the RLE alphabet"),
        ({"size": [24, 32], "counts": [700]}, "uncompressed run lengths adding up to 700, not 768"),
        ([1, 2], "is neither null nor an RLE dict"),
    ],
)
def test_a_mask_that_does_not_decode_is_named_with_its_frame(checker, split, rle, expected):
    gt, results = split
    (problem,) = checker.check_results(_with_frame(results, rle), gt).problems
    assert problem.startswith("prediction 5 (video 2): segmentation of frame 2 ") and expected in problem


def test_a_truncated_rle_string_does_not_decode(checker, split):
    gt, results = split
    counts = results[5]["segmentations"][2]["counts"]
    (problem,) = checker.check_results(
        _with_frame(results, {"size": [24, 32], "counts": counts[:-2]}), gt
    ).problems
    assert "frame 2 does not decode" in problem or "truncated" in problem


def test_missing_videos_are_listed(checker, split):
    gt, results = split
    report = checker.check_results([r for r in results if r["video_id"] not in (2, 4)], gt)
    assert report.problems == ["2 of 4 videos have no prediction: [2, 4]"]


def test_duplicate_predictions_are_reported(checker, split):
    gt, results = split
    report = checker.check_results([*results, copy.deepcopy(results[7])], gt)
    category = results[7]["category_id"]
    assert report.problems == [f"video 3: 2 identical predictions (category {category}, same masks)"]


def test_predictions_without_any_mask_are_counted_not_reported_as_duplicates(checker, split):
    gt, results = split
    empty = copy.deepcopy(results[7])
    empty["segmentations"] = [None] * len(empty["segmentations"])
    report = checker.check_results([*results, empty, copy.deepcopy(empty)], gt)
    assert report.ok and report.num_empty_predictions == 2
    assert "(2 with no mask in any frame)" in report.summary()


def _write_zip(path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def _cli(*args) -> subprocess.CompletedProcess:
    tool = REPO_ROOT / "tools" / "check_submission.py"
    return subprocess.run(
        [sys.executable, str(tool), *map(str, args)], capture_output=True, text=True, timeout=120
    )


def test_cli_accepts_a_good_zip_and_rejects_an_archive_with_other_files(split, tmp_path):
    gt, results = split
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    payload = json.dumps(results).encode()
    _write_zip(tmp_path / "good.zip", {"results.json": payload})
    ok = _cli("--results", tmp_path / "good.zip", "--gt", tmp_path / "gt.json")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "12 predictions, 4 of 4 videos covered, 56 masks: OK" in ok.stdout
    _write_zip(tmp_path / "nested.zip", {"out/results.json": payload})
    _write_zip(tmp_path / "extra.zip", {"results.json": payload, "notes.txt": b"x"})
    for name, expected in [
        ("nested.zip", "must hold exactly 'results.json', it holds ['out/results.json']"),
        ("extra.zip", "must hold exactly 'results.json', it holds ['results.json', 'notes.txt']"),
    ]:
        bad = _cli("--results", tmp_path / name, "--gt", tmp_path / "gt.json")
        assert bad.returncode == 1 and expected in bad.stdout, bad.stdout + bad.stderr


def test_cli_rejects_a_file_that_is_not_a_results_list(split, tmp_path):
    gt, _ = split
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "results.json").write_text('{"video_id": 1}')
    bad = _cli("--results", tmp_path / "results.json", "--gt", tmp_path / "gt.json")
    assert bad.returncode == 1 and "expected a JSON list of predictions, found a dict" in bad.stdout
    (tmp_path / "results.zip").write_bytes(b"not a zip")
    bad = _cli("--results", tmp_path / "results.zip", "--gt", tmp_path / "gt.json")
    assert bad.returncode == 1 and "not a valid zip archive" in bad.stdout


@pytest.mark.slow
def test_an_ovis_scale_submission_is_checked(checker):
    """140 videos of 60 frames at 720x1280, 30 predictions each (4200); the time is printed by
    `pytest --durations`, see the helper's report for the figure."""
    gt = make_split(num_videos=140, length=60, height=720, width=1280, num_categories=25)
    small = make_results(make_split(1, 60, 720, 1280, 25), per_video=30)
    results = [dict(pred, video_id=video["id"]) for video in gt["videos"] for pred in small]
    for i, pred in enumerate(results):  # distinct predictions
        pred["category_id"] = 1 + i % 25
    report = checker.check_results(results, gt)
    assert report.num_predictions == 4200 and report.num_videos_covered == 140
    assert report.problems == []


def test_what_the_evaluator_writes_passes_the_check_and_is_checked(checker, tmp_path, caplog):
    import logging

    import torch
    from detectron2.data import MetadataCatalog

    from mdqe.evaluation import YTVISEvaluator

    gt = make_split(num_videos=2, length=3, height=6, width=8, num_categories=2)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    name = "test_check_submission_evaluator"
    MetadataCatalog.get(name).set(
        json_file=str(tmp_path / "gt.json"),
        thing_dataset_id_to_contiguous_id={1: 0, 2: 1},
        thing_classes=["a", "b"],
    )
    try:
        evaluator = YTVISEvaluator(name, distributed=False, output_dir=str(tmp_path / "out"))
        evaluator.reset()
        for video_id in (1, 2):
            masks = torch.zeros(2, 3, 6, 8, dtype=torch.bool)
            masks[0, :, 1:4, video_id : video_id + 3] = True
            masks[1, 0, 4:6, 0:5] = True  # empty in frames 1 and 2
            output = {
                "image_size": (6, 8),
                "pred_scores": [0.9, 0.4],
                "pred_labels": [0, 1],
                "pred_masks": masks,
            }
            video = {"video_id": video_id, "length": 3, "height": 6, "width": 8, "file_names": ["x"] * 3}
            evaluator.process([video], [output])
        with caplog.at_level(logging.INFO, logger="mdqe.evaluation.submission"):
            evaluator.evaluate()
    finally:
        MetadataCatalog.remove(name)
    assert "Submission check: " in caplog.text and "4 predictions, 2 of 2 videos covered" in caplog.text
    report = checker.check_submission(str(tmp_path / "out" / "results.zip"), gt)
    assert report.ok, report.problems


@given(arrays(np.bool_, st.tuples(st.integers(1, 24), st.integers(1, 24))))
@settings(max_examples=200, deadline=None)
def test_every_pycocotools_rle_decodes_and_a_wrong_frame_size_does_not(checker, mask):
    counts = _rle(mask)["counts"]
    pixels = mask.size
    assert checker.rle_problems([counts, counts, counts], [pixels, pixels + 1, pixels - 1]) == [
        None,
        f"does not decode: run lengths add up to {pixels} pixels, not {pixels + 1}",
        f"does not decode: run lengths add up to {pixels} pixels, not {pixels - 1}",
    ]
