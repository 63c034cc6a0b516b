"""Checking a YouTube-VIS format dataset before a long training run (tools/validate_dataset.py).

Unlike the loader, which stops at the first structural error, `validate_ytvis_dataset` goes through the
whole dataset and collects every problem, each naming the file, video id, annotation id and field.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pycocotools.mask as mask_util
from PIL import Image

from ..utils.rle import rle_problems
from .datasets.ytvis import (
    DatasetFormatError,
    _check_video,
    _frame_segmentation,
    _is_finite_number,
    read_json,
)
from .frames import FrameReadError, read_frame

__all__ = ["ValidationReport", "validate_ytvis_dataset"]

logger = logging.getLogger(__name__)


@dataclass
class ValidationReport:
    """Problems (the dataset would break or mislead training), warnings (it would train, but check them)
    and summary counts."""

    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    summary: dict[str, object] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems


def _check_frame(
    path: str, video_id: object, frame_idx: int, size: tuple[int, int], decode: bool
) -> str | None:
    """None if the frame is fine, else the problem; non-RGB frames give "mode:<mode>"."""
    try:
        if decode:
            read_frame(path, "RGB", video_id=video_id, frame_idx=frame_idx, expected_size=size)
        with Image.open(path) as img:
            if not decode and (img.height, img.width) != tuple(size):
                return (
                    f"video {video_id}, frame {frame_idx} ({path}): frame is {img.height}x{img.width} (HxW) "
                    f"but the json says {size[0]}x{size[1]}"
                )
            if img.mode != "RGB":
                return f"mode:{img.mode}"
    except FrameReadError as e:
        return str(e)
    except OSError as e:
        return f"video {video_id}, frame {frame_idx} ({path}): cannot open image ({e})"
    return None


def validate_ytvis_dataset(
    json_file: str, image_root: str, decode_frames: bool = True, num_workers: int = 4
) -> ValidationReport:
    """Check a YouTube-VIS format dataset: frames exist and decode at the json's size, segmentations
    have one entry per frame and decode to the frame size, category and video ids are known.

    Args:
        decode_frames: fully decode every frame (else only read image headers: much faster).
        num_workers: threads reading frames.
    """
    report = ValidationReport()
    try:
        data = read_json(json_file)
    except (DatasetFormatError, OSError) as e:
        report.problems.append(str(e))
        return report
    for key in ("videos", "categories"):
        if not isinstance(data.get(key), list):
            report.problems.append(f"{json_file}: missing field '{key}' (a list)")
    if report.problems:
        return report

    categories = [c for c in data["categories"] if isinstance(c, dict) and _is_id(c.get("id"))]
    if len(categories) != len(data["categories"]):
        report.problems.append(f"{json_file}: a category is not an object with an integer or string id")
    category_ids = Counter(c["id"] for c in categories)
    for cat_id, n in category_ids.items():
        if n > 1:
            report.problems.append(f"{json_file}: category id {cat_id} appears {n} times in 'categories'")
    videos = {}
    for video in data["videos"]:
        try:
            _check_video(video, json_file)
        except DatasetFormatError as e:
            report.problems.append(str(e))
            continue
        vid = video["id"]
        if vid in videos:
            report.problems.append(f"{json_file}: video {vid}: duplicate video id")
        videos[vid] = video

    _check_annotations(data.get("annotations"), videos, set(category_ids), json_file, report)
    _check_frames(videos, image_root, decode_frames, num_workers, report)

    lengths = [len(v["file_names"]) for v in videos.values()]
    report.summary.update(
        videos=len(videos),
        frames=sum(lengths),
        video_length_min_mean_max=(min(lengths), round(sum(lengths) / len(lengths), 1), max(lengths))
        if lengths
        else None,
        frame_sizes=dict(Counter(f"{v['height']}x{v['width']}" for v in videos.values()).most_common(5)),
        categories=len(category_ids),
    )
    return report


def _is_id(value: object) -> bool:
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _is_box(box: object) -> bool:
    return isinstance(box, list) and len(box) == 4 and all(map(_is_finite_number, box))


def _check_annotations(
    annotations, videos: dict, category_ids: set, json_file: str, report: ValidationReport
):
    if annotations is None:
        report.warnings.append(f"{json_file}: no 'annotations' field (a test split?)")
        return
    tracks_per_video: Counter = Counter()
    instances_per_category: Counter = Counter()
    seen_ids: set = set()
    num_objects = 0
    if not isinstance(annotations, list):
        report.problems.append(f"{json_file}: field 'annotations' is not a list")
        return
    for ann in annotations:
        if not isinstance(ann, dict):
            report.problems.append(f"{json_file}: an annotation is a {type(ann).__name__}, not an object")
            continue
        ann_id, vid = ann.get("id"), ann.get("video_id")
        where = f"{json_file}: video {vid!r:.40}, annotation {ann_id!r:.40}"
        if not _is_id(ann_id) or not _is_id(vid):
            report.problems.append(f"{where}: field 'id' or 'video_id' is not an integer or a string")
            continue
        if ann_id in seen_ids:
            report.problems.append(f"{where}: duplicate annotation id")
        seen_ids.add(ann_id)
        if vid not in videos:
            report.problems.append(f"{where}: field 'video_id' refers to no video of the json")
            continue
        video = videos[vid]
        category_id = ann.get("category_id")
        if not _is_id(category_id) or category_id not in category_ids:
            report.problems.append(f"{where}: unknown category_id {category_id!r:.40}")
        length = len(video["file_names"])
        segms = ann.get("segmentations")
        if not isinstance(segms, list):
            report.problems.append(f"{where}: missing field 'segmentations' (a list)")
            continue
        for key in ("segmentations", "bboxes", "areas"):
            values = ann.get(key)
            if values is not None and (not isinstance(values, list) or len(values) != length):
                found = f"{len(values)} entries" if isinstance(values, list) else f"a {type(values).__name__}"
                report.problems.append(f"{where}: field '{key}' has {found} but the video has {length}")
        bboxes = ann.get("bboxes")
        if isinstance(bboxes, list):
            bad = [t for t, box in enumerate(bboxes) if box is not None and not _is_box(box)]
            if bad:
                report.problems.append(f"{where}, frame {bad[0]}: field 'bboxes' is not 4 finite numbers")
        visible = _check_track(segms[:length], video, where, report)
        if visible == 0:
            report.warnings.append(f"{where}: the instance is absent (null) in every frame")
        tracks_per_video[vid] += 1
        instances_per_category[category_id if _is_id(category_id) else None] += 1
        num_objects += visible
    empty = [vid for vid in videos if tracks_per_video[vid] == 0]
    if empty:
        shown = ", ".join(str(v) for v in empty[:10]) + (" ..." if len(empty) > 10 else "")
        report.warnings.append(f"{json_file}: {len(empty)} videos without annotations (ids {shown})")
    report.summary.update(
        instance_tracks=sum(tracks_per_video.values()),
        frame_objects=num_objects,
        tracks_per_category=dict(sorted(instances_per_category.items(), key=lambda kv: str(kv[0]))),
    )


def _check_track(segms: list, video: dict, where: str, report: ValidationReport) -> int:
    """Check the per-frame segmentations of one track; returns in how many frames it is visible."""
    masks: dict[int, Any] = {}
    for t, segm in enumerate(segms):
        if segm is None:
            continue
        frame_where = f"{where}, frame {t}, field 'segmentations'"
        try:
            segm = _frame_segmentation(segm, video, frame_where)
        except DatasetFormatError as e:
            report.problems.append(str(e))
            continue
        if segm is None:
            report.warnings.append(f"{frame_where}: no valid polygon (needs >= 3 points); ignored")
            continue
        masks[t] = segm
    height, width = video["height"], video["width"]
    strings = [t for t, m in masks.items() if isinstance(m, dict) and isinstance(m["counts"], str)]
    reasons = rle_problems([masks[t]["counts"] for t in strings], [height * width] * len(strings))
    for t, reason in zip(strings, reasons):
        if reason:  # pycocotools would read or write past the mask: never hand it such a string
            report.problems.append(f"{where}, frame {t}, field 'segmentations': the RLE {reason}")
            del masks[t]
    visible = 0
    for t, segm in masks.items():
        rle = segm if isinstance(segm, dict) else mask_util.merge(mask_util.frPyObjects(segm, height, width))
        if mask_util.area(rle) == 0:
            report.warnings.append(
                f"{where}, frame {t}, field 'segmentations': empty mask (use null for absent instances)"
            )
            continue
        visible += 1
    return visible


def _check_frames(videos: dict, image_root: str, decode: bool, num_workers: int, report: ValidationReport):
    jobs = [
        (os.path.join(image_root, name), vid, t, (video["height"], video["width"]))
        for vid, video in videos.items()
        for t, name in enumerate(video["file_names"])
    ]
    modes: Counter = Counter()
    with ThreadPoolExecutor(max(1, num_workers)) as pool:
        for result in pool.map(lambda job: _check_frame(*job, decode), jobs):
            if result is None:
                continue
            if result.startswith("mode:"):
                modes[result[5:]] += 1
            else:
                report.problems.append(result)
    for mode, n in modes.items():
        report.warnings.append(f"{n} frames are mode {mode!r}, not RGB (converted to RGB when loaded)")
