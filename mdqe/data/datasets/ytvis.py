"""YouTube-VIS json files (YouTube-VIS 2019/2021, OVIS and the synthetic set) as detectron2 dataset dicts.

A YouTube-VIS json holds `videos` (id, file_names, length, height, width), `categories` (id, name) and,
except for test splits, `annotations`: one per instance track, with per-frame lists `segmentations`
(RLE or polygons), `bboxes` (XYWH) and `areas`, null in frames where the instance is absent.

Every structural problem is reported with the file, video id, annotation id and field it concerns
(`DatasetFormatError`); a missing file or folder gives `DatasetNotFoundError`, one line saying what to do.
A json from others is read with bounded work (`mdqe.utils.bounded_io`) and every segmentation is checked
until pycocotools can decode it safely (`mdqe.utils.rle`: frame size, run lengths, polygon extent).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import defaultdict
from typing import Any, Callable

import numpy as np
import pycocotools.mask as mask_util
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from ...utils.bounded_io import UntrustedInputError, read_json_file
from ...utils.rle import frame_size_problem, polygon_problem, rle_problems, rle_structure_problem

logger = logging.getLogger(__name__)

__all__ = [
    "DatasetFormatError",
    "DatasetNotFoundError",
    "check_dataset_paths",
    "load_ytvis_json",
    "read_json",
    "register_ytvis_instances",
]

_HELP = "see datasets/README.md for the download links and the expected layout under $DETECTRON2_DATASETS"


class DatasetNotFoundError(FileNotFoundError):
    """A registered dataset's json file or image folder does not exist."""


class DatasetFormatError(ValueError):
    """A dataset file is malformed or inconsistent; the message names the file, video and field."""


def check_dataset_paths(dataset_name: str, json_file: str, image_root: str) -> None:
    """Raise `DatasetNotFoundError` (one line: path, dataset, what to do) if either path is missing."""
    for kind, path, exists in (
        ("annotation file", json_file, os.path.isfile),
        ("image folder", image_root, os.path.isdir),
    ):
        if not exists(path):
            raise DatasetNotFoundError(
                f"{kind} {path!r} of dataset '{dataset_name}' does not exist "
                f"(DETECTRON2_DATASETS={os.environ.get('DETECTRON2_DATASETS', 'datasets')!r}); {_HELP}"
            )


def read_json(json_file: str) -> dict[str, Any]:
    """Parse a dataset json file with bounded work (`mdqe.utils.bounded_io`: size and nesting limits),
    turning decoding errors into a `DatasetFormatError` naming the file."""
    try:
        data = read_json_file(json_file)
    except json.JSONDecodeError as e:
        raise DatasetFormatError(
            f"{json_file}: malformed json ({e.msg} at line {e.lineno}, column {e.colno}); "
            "the file may be truncated or corrupted"
        ) from e
    except UnicodeDecodeError as e:
        raise DatasetFormatError(f"{json_file}: not a UTF-8 json file ({e})") from e
    except UntrustedInputError as e:
        raise DatasetFormatError(str(e)) from e
    except ValueError as e:  # e.g. an integer of more digits than Python converts
        raise DatasetFormatError(f"{json_file}: cannot parse the json ({e})") from e
    if not isinstance(data, dict):
        raise DatasetFormatError(
            f"{json_file}: expected a json object at top level, found {type(data).__name__}"
        )
    return data


def _require(obj: Any, key: str, where: str, kind: type | tuple[type, ...] | None = None) -> Any:
    """`obj[key]`, which must exist (and be a `kind`); else a DatasetFormatError naming `where`."""
    if not isinstance(obj, dict):
        raise DatasetFormatError(f"{where}: expected a json object, found {type(obj).__name__}")
    if key not in obj:
        raise DatasetFormatError(f"{where}: missing field '{key}'")
    value = obj[key]
    if kind is not None and (not isinstance(value, kind) or isinstance(value, bool)):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise DatasetFormatError(f"{where}: field '{key}' is a {type(value).__name__}, not a {names}")
    return value


def _check_video(video: Any, json_file: str) -> None:
    vid = video.get("id", "?") if isinstance(video, dict) else "?"
    where = f"{json_file}: video {vid!r:.40}"
    _require(video, "id", where, (int, str))
    file_names = _require(video, "file_names", where, list)
    if not all(isinstance(name, str) for name in file_names):
        raise DatasetFormatError(f"{where}: field 'file_names' holds a name that is not a string")
    problem = frame_size_problem(_require(video, "height", where), _require(video, "width", where))
    if problem:
        raise DatasetFormatError(f"{where}: {problem} (fields 'height' / 'width')")
    length = video.get("length", len(file_names))
    if len(file_names) != length:
        raise DatasetFormatError(
            f"{where}: field 'file_names' has {len(file_names)} entries but 'length' is {length!r:.40}"
        )


def _frame_segmentation(segm: Any, video: dict, where: str) -> Any:
    """Validate one frame's segmentation; returns compressed RLE or the list of valid polygons
    (None if no polygon is valid). The run lengths of a compressed RLE string are not decoded here:
    pass them to `rle_problems` (in one batch) before pycocotools decodes them."""
    height, width = video["height"], video["width"]
    if isinstance(segm, dict):
        size = _require(segm, "size", where)
        if not isinstance(size, list) or size != [height, width]:
            raise DatasetFormatError(
                f"{where}: RLE size {size!r:.40} differs from the video's frame size [{height}, {width}]"
            )
        problem = rle_structure_problem(segm, height, width)
        if problem:
            raise DatasetFormatError(f"{where}: the RLE {problem}")
        if isinstance(segm["counts"], list):
            # uncompressed RLE -> compressed, the form pycocotools decodes fastest
            segm = mask_util.frPyObjects(segm, height, width)
        return segm
    if isinstance(segm, list):
        polygons = [p for p in segm if isinstance(p, list) and len(p) % 2 == 0 and len(p) >= 6]
        problem = next((p for p in map(polygon_problem, polygons) if p), None)
        if problem:
            raise DatasetFormatError(f"{where}: {problem}")
        return polygons or None
    raise DatasetFormatError(f"{where}: expected RLE dict or list of polygons, found {type(segm).__name__}")


def load_ytvis_json(
    json_file: str,
    image_root: str,
    dataset_name: str | None = None,
    extra_annotation_keys: list[str] | None = None,
) -> list[dict]:
    """Load a YouTube-VIS format json into detectron2 video dicts.

    Args:
        json_file: path of the json file.
        image_root: folder the json's `file_names` are relative to.
        dataset_name: if given, the category ids of the json are checked against (or, if the dataset has
            none yet, stored into) its metadata `thing_dataset_id_to_contiguous_id` / `thing_classes`.
        extra_annotation_keys: annotation fields to copy besides iscrowd, category_id and id.

    Returns:
        One dict per video, sorted by video id: `file_names` (list[str], absolute), `height`, `width`,
        `length`, `video_id`, and (if the json has annotations) `annotations`: a list of `length` lists,
        one per frame, of dicts with `id`, `category_id` (contiguous), `iscrowd`, `bbox` (XYWH_ABS),
        `bbox_mode`, `segmentation` (compressed RLE dict or list of polygons). An instance is listed in a
        frame only when its segmentation and box there are non-null.
    """
    data = read_json(json_file)
    videos = _require(data, "videos", json_file, list)
    categories = _require(data, "categories", json_file, list)
    for video in videos:
        _check_video(video, json_file)
    if len({video["id"] for video in videos}) != len(videos) or len({type(v["id"]) for v in videos}) > 1:
        raise DatasetFormatError(f"{json_file}: the video ids are not unique ids of one type")

    cat_ids = sorted(_require(c, "id", f"{json_file}: category", int) for c in categories)
    id_map = {cat_id: i for i, cat_id in enumerate(cat_ids)}
    if dataset_name is not None:
        _sync_metadata(dataset_name, json_file, categories, id_map)

    has_annotations = "annotations" in data
    anns_per_video: dict[Any, list[dict]] = defaultdict(list)
    for ann in _require(data, "annotations", json_file, list) if has_annotations else []:
        where = f"{json_file}: annotation {ann.get('id', '?') if isinstance(ann, dict) else '?'!r:.40}"
        anns_per_video[_require(ann, "video_id", where, (int, str))].append(ann)
    video_ids = {v["id"] for v in videos}
    num_orphans = sum(len(anns) for vid, anns in anns_per_video.items() if vid not in video_ids)
    if num_orphans:
        logger.warning(f"{json_file}: {num_orphans} annotations refer to video ids absent from 'videos'")

    ann_keys = ["iscrowd", "category_id", "id", *(extra_annotation_keys or [])]
    num_invalid_polygons = 0
    num_empty_videos = 0
    dataset_dicts = []
    rle_strings: list[tuple[str, dict, str]] = []  # (where, RLE, counts) to check before decoding
    for video in sorted(videos, key=lambda v: v["id"]):
        length = video.get("length", len(video["file_names"]))
        record = {
            "file_names": [os.path.join(image_root, name) for name in video["file_names"]],
            "height": video["height"],
            "width": video["width"],
            "length": length,
            "video_id": video["id"],
        }
        if has_annotations:
            frames: list[list[dict]] = [[] for _ in range(length)]
            for ann in anns_per_video.get(video["id"], []):
                num_invalid_polygons += _add_track(
                    ann, video, length, id_map, ann_keys, frames, json_file, rle_strings
                )
            if not any(frames):
                num_empty_videos += 1
            record["annotations"] = frames
        dataset_dicts.append(record)

    _check_rle_strings(rle_strings)
    logger.info(f"Loaded {len(dataset_dicts)} videos in YouTube-VIS format from {json_file}")
    if num_empty_videos:
        logger.warning(
            f"{json_file}: {num_empty_videos} of {len(videos)} videos have no annotation in any frame"
        )
    if num_invalid_polygons:
        logger.warning(
            f"{json_file}: dropped {num_invalid_polygons} frame segmentations without a valid polygon "
            "(a polygon needs an even number >= 6 of coordinates)"
        )
    return dataset_dicts


def _add_track(
    ann: dict,
    video: dict,
    length: int,
    id_map: dict,
    ann_keys: list,
    frames: list[list[dict]],
    json_file: str,
    rle_strings: list[tuple[str, dict, str]],
) -> int:
    """Append the per-frame objects of one annotation track to `frames` (and its compressed RLE strings,
    to be checked, to `rle_strings`); returns the number of frames dropped for having no valid polygon."""
    where = f"{json_file}: video {video['id']}, annotation {ann.get('id', '?')!r:.40}"
    category_id = _require(ann, "category_id", where)
    if not isinstance(category_id, int) or category_id not in id_map:
        raise DatasetFormatError(
            f"{where}: unknown category_id {category_id!r:.40} (the json's categories are {sorted(id_map)})"
        )
    segms = _require(ann, "segmentations", where, list)
    bboxes = ann.get("bboxes")
    if bboxes is not None and not isinstance(bboxes, list):
        raise DatasetFormatError(f"{where}: field 'bboxes' is a {type(bboxes).__name__}, not a list")
    for field, values in (("segmentations", segms), ("bboxes", bboxes)):
        if values is not None and len(values) != length:
            raise DatasetFormatError(
                f"{where}: field '{field}' has {len(values)} entries but the video has {length} frames"
            )
    dropped = 0
    obj_base = {key: ann[key] for key in ann_keys if key in ann}
    obj_base["category_id"] = id_map[category_id]
    for frame_idx, segm in enumerate(segms):
        if segm is None or (bboxes is not None and bboxes[frame_idx] is None):
            continue
        frame_where = f"{where}, frame {frame_idx}, field 'segmentations'"
        original = segm
        segm = _frame_segmentation(segm, video, frame_where)
        if segm is None:
            dropped += 1
            continue
        if isinstance(original, dict) and isinstance(original["counts"], str):
            rle_strings.append((frame_where, segm, original["counts"]))
        if bboxes is not None:
            bbox = bboxes[frame_idx]
            if not (isinstance(bbox, list) and len(bbox) == 4 and all(map(_is_finite_number, bbox))):
                raise DatasetFormatError(
                    f"{where}, frame {frame_idx}: field 'bboxes' is not 4 finite numbers"
                )
        else:
            bbox = _segmentation_box(segm)
        frames[frame_idx].append(
            {**obj_base, "bbox": bbox, "bbox_mode": BoxMode.XYWH_ABS, "segmentation": segm}
        )
    return dropped


def _is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_rle_strings(rle_strings: list[tuple[str, dict, str]]) -> None:
    """Decode the run lengths of every compressed RLE string at once (`rle_problems`): a string whose
    runs do not add up to its frame would make pycocotools write past its mask."""
    pixels = [rle["size"][0] * rle["size"][1] for _, rle, _ in rle_strings]
    for (where, _, _), reason in zip(rle_strings, rle_problems([c for _, _, c in rle_strings], pixels)):
        if reason:
            raise DatasetFormatError(f"{where}: the RLE {reason}")


def _segmentation_box(segm: Any) -> list[float]:
    """XYWH box of a compressed RLE or of the points of a list of polygons."""
    if isinstance(segm, dict):
        return mask_util.toBbox(segm).tolist()
    points = np.concatenate([np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in segm])
    (x0, y0), (x1, y1) = points.min(0), points.max(0)
    return [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]


def _sync_metadata(dataset_name: str, json_file: str, categories: list[dict], id_map: dict[int, int]) -> None:
    meta = MetadataCatalog.get(dataset_name)
    registered = meta.get("thing_dataset_id_to_contiguous_id")
    if registered is None:
        names = {c["id"]: str(c.get("name", c["id"])) for c in categories}
        meta.thing_classes = [names[i] for i in sorted(id_map)]
        meta.thing_dataset_id_to_contiguous_id = id_map
        return
    if set(registered) != set(id_map):
        raise DatasetFormatError(
            f"{json_file}: category ids {sorted(id_map)} differ from those registered for dataset "
            f"'{dataset_name}' ({sorted(registered)})"
        )


def register_json_dataset(
    name: str,
    load_json: Callable[[str, str, str], list[dict]],
    metadata: dict,
    json_file: str,
    image_root: str,
    evaluator_type: str,
) -> None:
    """Register `name`, read lazily by `load_json(json_file, image_root, name)` on `DatasetCatalog.get`
    (a missing file raises `DatasetNotFoundError`), with `metadata`, the paths and `evaluator_type`."""

    def load() -> list[dict]:
        check_dataset_paths(name, json_file, image_root)
        return load_json(json_file, image_root, name)

    DatasetCatalog.register(name, load)
    MetadataCatalog.get(name).set(
        json_file=json_file, image_root=image_root, evaluator_type=evaluator_type, **metadata
    )


def register_ytvis_instances(name: str, metadata: dict, json_file: str, image_root: str) -> None:
    """Register a YouTube-VIS format dataset under `name` (`evaluator_type` "ytvis").

    The json is read lazily, on `DatasetCatalog.get(name)`; a missing file raises `DatasetNotFoundError`.
    """
    register_json_dataset(name, load_ytvis_json, metadata, json_file, image_root, "ytvis")
