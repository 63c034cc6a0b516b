"""mdqe.evaluation.ytvis_io: a ground truth or results file the metric code cannot trust is refused with one
line naming the file, the annotation or prediction and the field, before pycocotools sees it. (Run lengths
that do not fill the frame are left to the code that decodes masks: tests/security, the report.)"""

from __future__ import annotations

import copy
import json
import zipfile

import pytest
from _ytvis_testing import dataset, gt_annotation, rect, result

from mdqe.evaluation.ytvis_io import YTVISFileError, check_ground_truth, check_results, load_results

A = rect(8, 8, 0, 0, 4, 4)
GT = dataset([(1, 8, 8, 2)], [gt_annotation(1, 1, 1, [A, A]), gt_annotation(2, 1, 2, [A, None])])
RESULTS = [result(1, 1, 0.9, [A, A]), result(1, 2, 0.8, [A, None])]


def test_good_files_pass_and_give_the_video_sizes():
    assert check_ground_truth(copy.deepcopy(GT), "gt.json") == {1: (8, 8, 2)}
    check_results(copy.deepcopy(RESULTS), {1: (8, 8, 2)}, "results.json")


def _set(path: str, value):
    def change(data):
        *keys, last = path.split(".")
        target = data
        for key in keys:
            target = target[int(key) if key.isdigit() else key]
        target[int(last) if last.isdigit() else last] = value
        return data

    return change


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_set("videos.0.height", 10**8), "gt.json: video 1 has 100000000 x 8 = 800,000,000 pixels per frame"),
        (_set("videos.0.width", 0), "not positive"),
        (_set("videos.0.id", [1]), "videos[0] is not a video object with an integer or string id"),
        (_set("annotations.0.category_id", {"a": 1}), "annotation 1 (annotations[0]): 'category_id' is not"),
        (_set("annotations.1.areas", ["big"]), "'areas' is not a list of numbers and nulls"),
        (_set("annotations.1.occlusion", ["hidden"]), "'occlusion' is not a list of no_occlusion"),
        (
            _set("annotations.0.segmentations.0", {"size": [8, 8], "counts": "0o"}),
            "annotation 1 (annotations[0]): segmentation of frame 0 has counts that end inside a run length",
        ),
        (
            _set("annotations.0.segmentations.1", [[0, 0, 1e30, 0, 5, 5]]),
            "segmentation of frame 1 has a polygon coordinate past",
        ),
        (_set("annotations", "all"), "gt.json: 'annotations' is not a list"),
    ],
)
def test_a_ground_truth_the_metrics_cannot_trust_is_refused_with_one_line(change, message):
    with pytest.raises(YTVISFileError) as error:
        check_ground_truth(change(copy.deepcopy(GT)), "gt.json")
    assert message in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_set("0.score", float("nan")), "results[0]: 'score' nan is not a finite number"),
        (_set("0.score", "0.9"), "'score' '0.9' is not a finite number"),
        (_set("1.video_id", [1]), "results[1]: 'video_id' or 'category_id' is not an integer or a string"),
        (_set("0.segmentations", {"0": None}), "results[0]: 'segmentations' is not a list"),
        (
            _set("0.segmentations.0", {"size": [8, 8], "counts": "0\u00e9"}),
            "results[0] (video 1): segmentation of frame 0 has counts with characters outside the RLE",
        ),
        (_set("0.segmentations.1", {"size": [9, 8], "counts": "P8"}), "has size [9, 8], the video is [8, 8]"),
    ],
)
def test_results_the_metrics_cannot_trust_are_refused_with_one_line(change, message):
    with pytest.raises(YTVISFileError) as error:
        check_results(change(copy.deepcopy(RESULTS)), {1: (8, 8, 2)}, "results.json")
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_results_zip_with_a_path_named_member_is_refused(tmp_path):
    with zipfile.ZipFile(tmp_path / "results.zip", "w") as archive:
        archive.writestr("../../results.json", json.dumps(RESULTS))
    with pytest.raises(
        YTVISFileError, match=r"member '\.\./\.\./results\.json' is a path out of the archive"
    ):
        load_results(str(tmp_path / "results.zip"), {1: (8, 8, 2)})
