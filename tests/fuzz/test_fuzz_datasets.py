"""Fuzzing the readers a stranger's dataset json reaches: `load_ytvis_json` and `validate_ytvis_dataset`
(and tools/validate_dataset.py). Accepted: dataset dicts whose every mask pycocotools decodes at the
video's size, or `DatasetFormatError`; the validator always returns its report."""

from __future__ import annotations

import json

import numpy as np
import pycocotools.mask as mask_util
from _fuzzing import bounded, fuzz, json_text, mutated, mutated_bytes, outcome, scratch_folder
from hypothesis import event, given
from hypothesis import strategies as st

from mdqe.data.datasets.ytvis import DatasetFormatError, load_ytvis_json
from mdqe.data.validation import ValidationReport, validate_ytvis_dataset
from tools import validate_dataset


def _rle(top: int, left: int) -> dict:
    mask = np.zeros((6, 8), np.uint8)
    mask[top : top + 3, left : left + 4] = 1
    rle = mask_util.encode(np.asfortranarray(mask))
    return {"size": [6, 8], "counts": rle["counts"].decode()}


DATASET = {
    "videos": [
        {"id": 1, "file_names": ["a/0.jpg", "a/1.jpg"], "length": 2, "height": 6, "width": 8},
        {"id": 2, "file_names": ["b/0.jpg"], "height": 6, "width": 8},
    ],
    "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
    "annotations": [
        {"id": 1, "video_id": 1, "category_id": 1, "iscrowd": 0, "segmentations": [_rle(0, 0), None],
         "bboxes": [[0, 0, 4, 3], None], "areas": [12, None]},
        {"id": 2, "video_id": 1, "category_id": 2, "iscrowd": 0,
         "segmentations": [{"size": [6, 8], "counts": [2, 3, 43]}, [[1, 1, 5, 1, 5, 4, 1, 4]]]},
        {"id": 3, "video_id": 2, "category_id": 2, "iscrowd": 0, "segmentations": [_rle(2, 3)]},
    ],
}  # fmt: skip

# three cases in four change the json's values, one in four its bytes
DATASET_FILES = st.one_of(*[mutated(DATASET).map(json_text)] * 3, mutated_bytes(json.dumps(DATASET).encode()))


def _decode_every_mask(records: list[dict]) -> None:
    """What the dataset mapper does with each segmentation: it must work at the video's size."""
    for record in records:
        for frame in record.get("annotations", []):
            for obj in frame:
                segm = obj["segmentation"]
                rle = segm if isinstance(segm, dict) else mask_util.merge(
                    mask_util.frPyObjects(segm, record["height"], record["width"])
                )  # fmt: skip
                assert mask_util.decode(rle).shape == (record["height"], record["width"])


@fuzz
@given(DATASET_FILES)
def test_the_loader_gives_decodable_masks_or_one_clear_error(tmp_path, content):
    scratch = scratch_folder(tmp_path)
    path = scratch / "train.json"
    path.write_text(content) if isinstance(content, str) else path.write_bytes(content)
    loaded = bounded(lambda: load_ytvis_json(str(path), str(scratch)), scratch, (DatasetFormatError,))
    event(outcome(loaded))
    if isinstance(loaded, DatasetFormatError):
        assert "\n" not in str(loaded) and str(path) in str(loaded)
    else:
        bounded(lambda: _decode_every_mask(loaded), scratch)


@fuzz
@given(DATASET_FILES, st.booleans())
def test_the_validator_always_reports(tmp_path, content, through_the_tool):
    scratch = scratch_folder(tmp_path)
    path = scratch / "train.json"
    path.write_text(content) if isinstance(content, str) else path.write_bytes(content)
    if through_the_tool:
        argv = ["--json", str(path), "--image-root", str(scratch), "--headers-only", "--workers", "1"]
        assert bounded(lambda: validate_dataset.main(argv), scratch) in (0, 1)
    else:
        report = bounded(lambda: validate_ytvis_dataset(str(path), str(scratch), False, 1), scratch)
        assert isinstance(report, ValidationReport) and all(isinstance(p, str) for p in report.problems)
