"""Every kind of bad dataset input gets an error (or a counted warning) naming the file, video and field."""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pycocotools.mask as mask_util
import pytest
from conftest import small_cfg
from PIL import Image

from mdqe.data import YTVISDatasetMapper, load_ytvis_json
from mdqe.data.datasets.ytvis import DatasetFormatError
from mdqe.data.frames import FrameReadError, conversion_counts, read_frame
from mdqe.data.validation import validate_ytvis_dataset

H, W = 12, 16


def _rle(height: int = H, width: int = W) -> dict:
    mask = np.zeros((height, width), np.uint8)
    mask[2:6, 3:9] = 1
    rle = mask_util.encode(np.asfortranarray(mask))
    return {"size": rle["size"], "counts": rle["counts"].decode()}


def _dataset(tmp_path, length: int = 3, mutate=None, frame_modes=None, frame_sizes=None) -> tuple[str, str]:
    """A one-video dataset (video 5, annotation 11) with frames on disk; `mutate(data)` edits the json."""
    root = tmp_path / "JPEGImages"
    os.makedirs(root / "vid", exist_ok=True)
    for t in range(length):
        mode = (frame_modes or {}).get(t, "RGB")
        height, width = (frame_sizes or {}).get(t, (H, W))
        Image.new(mode, (width, height)).save(root / "vid" / f"{t}.png")
    data = {
        "videos": [{"id": 5, "file_names": [f"vid/{t}.png" for t in range(length)], "length": length,
                    "height": H, "width": W}],
        "categories": [{"id": 1, "name": "thing"}],
        "annotations": [{"id": 11, "video_id": 5, "category_id": 1, "iscrowd": 0,
                         "segmentations": [_rle()] * length, "bboxes": [[3, 2, 6, 4]] * length}],
    }  # fmt: skip
    if mutate is not None:
        mutate(data)
    path = tmp_path / "data.json"
    path.write_text(json.dumps(data))
    return str(path), str(root)


def _map_all_frames(json_file: str, image_root: str) -> dict:
    (record,) = load_ytvis_json(json_file, image_root)
    cfg = small_cfg(INPUT__SAMPLING_FRAME_NUM=record["length"], INPUT__SAMPLING_FRAME_RANGE=100)
    return YTVISDatasetMapper(cfg, is_train=False)(record)


def test_missing_frame_names_the_file_and_video(tmp_path):
    json_file, root = _dataset(tmp_path)
    os.remove(os.path.join(root, "vid", "1.png"))
    with pytest.raises(FrameReadError, match=r"video 5, frame 1 \(.*vid/1\.png\): frame file does not exist"):
        _map_all_frames(json_file, root)


def test_undecodable_frame_names_the_file(tmp_path):
    json_file, root = _dataset(tmp_path)
    with open(os.path.join(root, "vid", "2.png"), "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(FrameReadError, match=r"video 5, frame 2 .*cannot decode image"):
        _map_all_frames(json_file, root)


def test_truncated_json_names_the_file(tmp_path):
    json_file, _ = _dataset(tmp_path)
    with open(json_file, "r+") as f:
        f.truncate(len(f.read()) // 2)
    with pytest.raises(DatasetFormatError, match=r"data\.json: malformed json .*truncated"):
        load_ytvis_json(json_file, "")


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda d: d.pop("videos"), "missing field 'videos'"),
        (lambda d: d["videos"][0].pop("height"), "video 5: missing field 'height'"),
        (
            lambda d: d["videos"][0].update(length=4),
            "video 5: field 'file_names' has 3 entries but 'length' is 4",
        ),
        (
            lambda d: d["annotations"][0]["segmentations"].pop(),
            "video 5, annotation 11: field 'segmentations' has 2 entries but the video has 3 frames",
        ),
        (
            lambda d: d["annotations"][0]["bboxes"].append(None),
            "video 5, annotation 11: field 'bboxes' has 4 entries",
        ),
        (
            lambda d: d["annotations"][0]["segmentations"].__setitem__(1, _rle(H + 1, W)),
            r"video 5, annotation 11, frame 1, field 'segmentations': RLE size \[13, 16\] differs from the "
            r"video's frame size \[12, 16\]",
        ),
        (
            lambda d: d["annotations"][0].update(category_id=3),
            r"video 5, annotation 11: unknown category_id 3 \(the json's categories are \[1\]\)",
        ),
        (lambda d: d["annotations"][0]["segmentations"].__setitem__(0, "oops"), "expected RLE dict or list"),
    ],
)
def test_malformed_annotations_name_video_annotation_and_field(tmp_path, mutate, match):
    json_file, root = _dataset(tmp_path, mutate=mutate)
    with pytest.raises(DatasetFormatError, match=match):
        load_ytvis_json(json_file, root)


def test_top_level_must_be_an_object(tmp_path):
    path = tmp_path / "list.json"
    path.write_text("[]")
    with pytest.raises(DatasetFormatError, match="expected a json object at top level, found list"):
        load_ytvis_json(str(path), "")


def test_video_without_annotations_is_counted(tmp_path, caplog):
    json_file, root = _dataset(tmp_path, mutate=lambda d: d["annotations"].clear())
    with caplog.at_level(logging.WARNING):
        (record,) = load_ytvis_json(json_file, root)
    assert record["annotations"] == [[], [], []]
    assert "1 of 1 videos have no annotation in any frame" in caplog.text


@pytest.mark.parametrize("mode", ["L", "RGBA", "P"])
def test_grayscale_rgba_and_palette_frames_become_rgb_with_a_counted_warning(tmp_path, caplog, mode):
    json_file, root = _dataset(tmp_path, frame_modes={0: mode, 2: mode})
    before = conversion_counts().get(mode, 0)
    out = _map_all_frames(json_file, root)
    assert all(image.shape[0] == 3 for image in out["image"])
    assert conversion_counts()[mode] == before + 2
    if before == 0:
        assert f"video 5, frame 0 ({os.path.join(root, 'vid', '0.png')})" in caplog.text


def test_frame_of_another_size_names_the_file_and_both_sizes(tmp_path):
    json_file, root = _dataset(tmp_path, frame_sizes={2: (H, W + 2)})
    with pytest.raises(
        FrameReadError, match=r"video 5, frame 2 .*frame is 12x18 \(HxW\) but the json says 12x16"
    ):
        _map_all_frames(json_file, root)


def test_read_frame_returns_bgr_on_request(tmp_path):
    path = tmp_path / "red.png"
    Image.new("RGB", (4, 3), (255, 0, 0)).save(path)
    assert read_frame(str(path), "BGR")[0, 0].tolist() == [0, 0, 255]


def _segmentation(frame: int, value):
    return lambda d: d["annotations"][0]["segmentations"].__setitem__(frame, value)


HOSTILE = {
    "huge frame": (
        lambda d: d["videos"][0].update(height=100_000, width=100_000),
        r"video 5: has 100000 x 100000 = 10,000,000,000 pixels per frame, past the limit 67,108,864",
    ),
    "runs past the frame": (
        _segmentation(1, {"size": [H, W], "counts": "0" + "5" * 40}),  # 2100 pixels for a frame of 192
        r"annotation 11, frame 1, field 'segmentations': the RLE does not decode: run lengths add up to",
    ),
    "truncated runs": (_segmentation(0, {"size": [H, W], "counts": "0o"}), "end inside a run length"),
    "uncompressed past the frame": (
        _segmentation(2, {"size": [H, W], "counts": [100, 100]}),
        "has uncompressed run lengths adding up to 200, not 192",
    ),
    "huge polygon": (_segmentation(0, [[0, 0, 1e12, 0, 4, 4]]), "has a polygon coordinate past"),
    "nan polygon": (_segmentation(0, [[0, 0, float("nan"), 0, 4, 4]]), "not a finite number"),
    "video not an object": (lambda d: d["videos"].append([5]), "expected a json object, found list"),
    "names not strings": (lambda d: d["videos"][0].update(file_names=[1, 2, 3]), "not a string"),
    "category id a string": (lambda d: d["categories"][0].update(id="1"), "field 'id' is a str, not a int"),
    "unhashable category": (
        lambda d: d["annotations"][0].update(category_id=[1]),
        r"unknown category_id \[1\]",
    ),
    "bbox not numbers": (
        lambda d: d["annotations"][0]["bboxes"].__setitem__(0, "box"),
        "frame 0: field 'bboxes' is not 4 finite numbers",
    ),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_dataset_json_gets_one_clear_error_before_any_mask_is_decoded(tmp_path, case):
    mutate, match = HOSTILE[case]
    json_file, root = _dataset(tmp_path, mutate=mutate)
    with pytest.raises(DatasetFormatError, match=match) as error:
        load_ytvis_json(json_file, root)
    assert "\n" not in str(error.value)
    # the validator reports the same file as a problem instead of failing
    assert not validate_ytvis_dataset(json_file, root, decode_frames=False).ok
