"""The YouTube-VIS loader and the dataset registrations."""

from __future__ import annotations

import json

import numpy as np
import pycocotools.mask as mask_util
import pytest
from conftest import TINY_SEED, TINY_SPLITS
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from mdqe.data.datasets import COCO_TO_OVIS, COCO_TO_YTVIS_2019, COCO_TO_YTVIS_2021, load_ytvis_json
from mdqe.data.datasets.ytvis import DatasetNotFoundError
from mdqe.data.frames import read_frame
from mdqe.data.synthetic import DEFAULT_COCO_SPLITS, split_video


def _decode(segm: dict) -> np.ndarray:
    return mask_util.decode(segm).astype(bool)


@pytest.mark.parametrize(("name", "split"), [("test_synth_train", "train"), ("test_synth_val", "valid")])
def test_every_loaded_mask_equals_the_generated_one(synthetic_root, name, split):
    dicts = DatasetCatalog.get(name)
    assert len(dicts) == TINY_SPLITS[split].num_videos
    for index, record in enumerate(dicts):
        video = split_video(split, index, TINY_SEED, TINY_SPLITS[split])
        num, length, height, width = video.masks.shape
        assert (record["length"], record["height"], record["width"]) == (length, height, width)
        # annotation ids are assigned in instance order within a video
        ids = sorted({obj["id"] for frame in record["annotations"] for obj in frame})
        assert len(ids) == num
        for t, frame in enumerate(record["annotations"]):
            by_id = {obj["id"]: obj for obj in frame}
            for n, ann_id in enumerate(ids):
                if not video.masks[n, t].any():
                    assert ann_id not in by_id, f"video {index} frame {t}: absent instance listed"
                    continue
                obj = by_id[ann_id]
                assert np.array_equal(_decode(obj["segmentation"]), video.masks[n, t])
                assert obj["category_id"] == video.category_ids[n] - 1
                assert obj["bbox_mode"] == BoxMode.XYWH_ABS


def test_loaded_frames_match_generated_pixels_up_to_jpeg(synthetic_root):
    record = DatasetCatalog.get("test_synth_val")[0]
    video = split_video("valid", 0, TINY_SEED, TINY_SPLITS["valid"])
    for t, path in enumerate(record["file_names"]):
        frame = read_frame(path, "RGB").astype(np.float32)
        # JPEG noise cancels out over 4x4 blocks
        blocks = lambda x: x.reshape(x.shape[0] // 4, 4, x.shape[1] // 4, 4, 3).mean((1, 3))
        assert np.abs(blocks(frame) - blocks(video.frames[t].astype(np.float32))).mean() < 2.0


def _write(path, data) -> str:
    path.write_text(json.dumps(data))
    return str(path)


def test_polygons_uncompressed_rle_and_missing_bboxes(tmp_path):
    rle = mask_util.encode(np.asfortranarray(np.pad(np.ones((2, 3), np.uint8), ((1, 1), (2, 0)))))
    uncompressed = {"size": [4, 5], "counts": [5, 2, 2, 2, 2, 2, 5]}
    video = {"id": 3, "file_names": ["v/0.jpg", "v/1.jpg", "v/2.jpg"], "length": 3, "height": 4, "width": 5}
    last = {"size": [4, 5], "counts": rle["counts"].decode()}
    data = {
        "videos": [video],
        "categories": [{"id": 7, "name": "a"}, {"id": 9, "name": "b"}],
        "annotations": [
            {"id": 1, "video_id": 3, "category_id": 9, "iscrowd": 0,
             "segmentations": [[[0, 0, 4, 0, 4, 3]], None, last]},
            {"id": 2, "video_id": 3, "category_id": 7, "iscrowd": 0,
             "segmentations": [uncompressed, [[1, 2]], None], "bboxes": [[1, 1, 2, 2], [0, 0, 1, 1], None]},
        ],
    }  # fmt: skip
    (record,) = load_ytvis_json(_write(tmp_path / "a.json", data), "/root")
    assert record["file_names"][0] == "/root/v/0.jpg"
    frame0 = {o["id"]: o for o in record["annotations"][0]}
    assert frame0[1]["segmentation"] == [[0, 0, 4, 0, 4, 3]] and frame0[1]["category_id"] == 1
    assert frame0[1]["bbox"] == [0.0, 0.0, 4.0, 3.0]  # derived from the polygon: no 'bboxes' field
    assert isinstance(frame0[2]["segmentation"]["counts"], bytes) and frame0[2]["category_id"] == 0
    # frame 1: instance 1 absent (null), instance 2's only polygon is invalid (< 3 points) -> dropped
    assert record["annotations"][1] == []
    assert [o["id"] for o in record["annotations"][2]] == [1]
    assert np.array_equal(
        _decode(record["annotations"][2][0]["segmentation"]), mask_util.decode(rle).astype(bool)
    )


def test_test_split_without_annotations_has_no_annotation_field(tmp_path):
    data = {
        "videos": [{"id": 1, "file_names": ["a.jpg"], "length": 1, "height": 2, "width": 2}],
        "categories": [],
    }
    (record,) = load_ytvis_json(_write(tmp_path / "t.json", data), "")
    assert "annotations" not in record and record["video_id"] == 1


def test_original_names_are_registered_with_their_category_tables():
    expected = {"ytvis_2019": (40, "person", "tennis_racket"), "ytvis_2021": (40, "airplane", "zebra"),
                "ytvis_ovis": (25, "Person", "Vehical")}  # fmt: skip
    for prefix, (num, first, last) in expected.items():
        for split in ("train", "val", "test", "dev"):
            meta = MetadataCatalog.get(f"{prefix}_{split}")
            assert meta.evaluator_type == "ytvis"
            assert len(meta.thing_classes) == num and len(meta.thing_colors) == num
            assert (meta.thing_classes[0], meta.thing_classes[-1]) == (first, last)
            assert meta.thing_dataset_id_to_contiguous_id == {i + 1: i for i in range(num)}
    assert MetadataCatalog.get("ytvis_2019_train").json_file.endswith("ytvis_2019/train_sub.json")
    assert MetadataCatalog.get("ytvis_2019_dev").json_file.endswith("ytvis_2019/valid_sub.json")
    assert MetadataCatalog.get("ytvis_ovis_val").image_root.endswith("ovis/valid/JPEGImages")
    for target in ("ytvis2019", "ytvis2021", "ovis"):
        for split in ("train", "val"):
            meta = MetadataCatalog.get(f"coco2{target}_{split}")
            assert meta.evaluator_type == "coco" and len(meta.thing_classes) == 80
            assert meta.json_file.endswith(f"coco/annotations/coco2{target}_{split}.json")
    assert MetadataCatalog.get("ytvis_2021_val").thing_colors[2] == [255, 109, 65]  # bird


def test_coco_maps_point_at_existing_categories():
    assert COCO_TO_OVIS[3] == COCO_TO_OVIS[6] == COCO_TO_OVIS[8] == 25  # car, bus, truck -> Vehical
    assert 16 not in COCO_TO_OVIS  # as released: no COCO bird
    assert COCO_TO_YTVIS_2021[16] == 3 and COCO_TO_YTVIS_2019[1] == 1
    for table, num in ((COCO_TO_YTVIS_2019, 40), (COCO_TO_YTVIS_2021, 40), (COCO_TO_OVIS, 25)):
        assert all(1 <= v <= num for v in table.values())


def test_missing_dataset_gives_one_line_naming_path_dataset_and_remedy(tmp_path, monkeypatch):
    with pytest.raises(DatasetNotFoundError) as info:
        DatasetCatalog.get("ytvis_ovis_val")
    message = str(info.value)
    assert "\n" not in message
    assert "ovis/valid.json" in message and "ytvis_ovis_val" in message and "datasets/README.md" in message


def test_synthetic_registrations_have_their_metadata():
    for name, folder in (
        ("synthetic_vis_train", "synthetic_vis"),
        ("synthetic_vis_val", "synthetic_vis"),
        ("synthetic_coco_train", "synthetic_coco"),
        ("synthetic_coco_val", "synthetic_coco"),
    ):
        meta = MetadataCatalog.get(name)
        assert meta.thing_classes == ["circle", "square", "triangle", "star", "ring"]
        assert f"{folder}/" in meta.json_file
    assert MetadataCatalog.get("synthetic_vis_val").evaluator_type == "ytvis"
    assert MetadataCatalog.get("synthetic_coco_train").evaluator_type == "coco"
    assert MetadataCatalog.get("synthetic_coco_val").evaluator_type == "coco"


@pytest.mark.slow
def test_synthetic_vis_val_is_generated_on_first_use_and_round_trips():
    # generates the default dataset under $DETECTRON2_DATASETS on first use (a few seconds)
    record = DatasetCatalog.get("synthetic_vis_val")[0]
    video = split_video("valid", 0)
    ids = sorted({obj["id"] for frame in record["annotations"] for obj in frame})
    assert len(ids) == len(video.masks) and record["length"] == video.masks.shape[1]
    for t, frame in enumerate(record["annotations"]):
        for obj in frame:
            assert np.array_equal(_decode(obj["segmentation"]), video.masks[ids.index(obj["id"]), t])


@pytest.mark.slow
def test_synthetic_coco_splits_load_coco_format_images():
    # generates the image pre-training set under $DETECTRON2_DATASETS on first use (about a minute)
    for name, split in (("synthetic_coco_train", "train"), ("synthetic_coco_val", "val")):
        records = DatasetCatalog.get(name)
        assert len(records) == DEFAULT_COCO_SPLITS[split]
        first = records[0]
        assert f"synthetic_coco/{split}/" in first["file_name"] and "file_names" not in first
        assert first["annotations"] and all("segmentation" in obj for obj in first["annotations"])
        assert len({r["image_id"] for r in records}) == len(records)
