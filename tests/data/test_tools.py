"""tools/validate_dataset.py and tools/convert_coco_to_ytvis_categories.py."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from mdqe.data.datasets.convert import restrict_coco_to_categories, split_train_sub
from mdqe.data.validation import validate_ytvis_dataset
from tools import convert_coco_to_ytvis_categories, make_synthetic_vis, validate_dataset


def test_validator_passes_the_synthetic_dataset(synthetic_root, capsys):
    code = validate_dataset.main(
        ["--json", f"{synthetic_root}/valid.json", "--image-root", f"{synthetic_root}/valid/JPEGImages"]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "videos: 3" in out and "0 problems" in out


@pytest.fixture
def broken_copy(synthetic_root, tmp_path) -> tuple[str, str]:
    root = tmp_path / "valid"
    shutil.copytree(f"{synthetic_root}/valid/JPEGImages", root)
    with open(f"{synthetic_root}/valid.json") as f:
        data = json.load(f)
    first = data["videos"][0]
    os.remove(root / first["file_names"][1])  # missing frame
    (root / first["file_names"][2]).write_bytes(b"\xff\xd8 not a jpeg")  # undecodable frame
    data["annotations"][0]["segmentations"][0] = {"size": [1, 1], "counts": "1"}  # wrong RLE size
    data["annotations"][1]["category_id"] = 99  # unknown category
    data["annotations"][2]["segmentations"].pop()  # one entry short
    json_file = tmp_path / "valid.json"
    json_file.write_text(json.dumps(data))
    return str(json_file), str(root)


def test_validator_lists_every_problem_and_exits_1(broken_copy, capsys):
    json_file, root = broken_copy
    report = validate_ytvis_dataset(json_file, root)
    problems = "\n".join(report.problems)
    assert "frame 1" in problems and "frame file does not exist" in problems
    assert "frame 2" in problems and "cannot decode image" in problems
    assert "RLE size [1, 1] differs from the video's frame size" in problems
    assert "unknown category_id 99" in problems
    assert "field 'segmentations' has" in problems
    assert validate_dataset.main(["--json", json_file, "--image-root", root, "--headers-only"]) == 1
    assert "PROBLEM:" in capsys.readouterr().out


def test_validator_reports_a_truncated_json(tmp_path):
    path = tmp_path / "cut.json"
    path.write_text('{"videos": [')
    report = validate_ytvis_dataset(str(path), str(tmp_path))
    assert not report.ok and "malformed json" in report.problems[0]


def _coco() -> dict:
    return {
        "images": [{"id": 1, "file_name": "a.jpg", "height": 4, "width": 4}],
        "categories": [{"id": i, "name": str(i)} for i in (1, 3, 16, 90)],
        "annotations": [{"id": i, "image_id": 1, "category_id": c} for i, c in enumerate((1, 3, 16, 90))],
    }


def test_coco_restriction_keeps_only_mapped_classes(tmp_path):
    out = restrict_coco_to_categories(_coco(), {1: 1, 3: 25})
    assert [a["category_id"] for a in out["annotations"]] == [1, 3]
    assert out["categories"] == _coco()["categories"] and out["images"] == _coco()["images"]
    os.makedirs(tmp_path / "coco" / "annotations")
    (tmp_path / "coco/annotations/instances_val2017.json").write_text(json.dumps(_coco()))
    convert_coco_to_ytvis_categories.main(
        ["--root", str(tmp_path), "coco", "--targets", "ovis", "--splits", "val"]
    )
    with open(tmp_path / "coco/annotations/coco2ovis_val.json") as f:
        assert [a["category_id"] for a in json.load(f)["annotations"]] == [
            1,
            3,
        ]  # bird (16) has no OVIS entry


def test_train_sub_split_follows_the_original_quota():
    # 20 videos, 2 categories: quota = 2 * int(20 * 0.1) // 2 = 2, and "count <= quota" admits 3 per class
    videos = [{"id": i} for i in range(20)]
    anns = [
        {"id": i, "video_id": i, "category_id": 1 + i % 2, "segmentations": [None] * 5} for i in range(20)
    ]
    anns[0]["segmentations"] = [None] * 101  # too long for valid_sub
    train_sub, valid_sub = split_train_sub({"videos": videos, "annotations": anns, "categories": [{}, {}]})
    assert [v["id"] for v in valid_sub["videos"]] == [1, 2, 3, 4, 5, 6]
    assert len(train_sub["videos"]) == 14 and {a["video_id"] for a in train_sub["annotations"]} >= {0, 7}
    assert train_sub["categories"] == valid_sub["categories"] == [{}, {}]


def test_make_synthetic_vis_writes_a_custom_dataset(tmp_path, capsys):
    make_synthetic_vis.main(
        [
            "--root",
            str(tmp_path),
            "--train-videos",
            "2",
            "--val-videos",
            "1",
            "--coco-images",
            "1",
            "--max-length",
            "9",
        ]
    )
    out = capsys.readouterr().out
    assert "train: 2 videos" in out and "valid: 1 videos" in out
    report = validate_ytvis_dataset(
        f"{tmp_path}/synthetic_vis/train.json", f"{tmp_path}/synthetic_vis/train/JPEGImages"
    )
    assert report.ok and not report.warnings
