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

import pycocotools.mask as mask_util
from PIL import Image

from .datasets.ytvis import DatasetFormatError, _frame_segmentation, read_json
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
        if key not in data:
            report.problems.append(f"{json_file}: missing field '{key}'")
    if report.problems:
        return report

    category_ids = Counter(c.get("id") for c in data["categories"])
    for cat_id, n in category_ids.items():
        if n > 1:
            report.problems.append(f"{json_file}: category id {cat_id} appears {n} times in 'categories'")
    videos = {}
    for video in data["videos"]:
        vid = video.get("id")
        where = f"{json_file}: video {vid}"
        missing = [k for k in ("id", "file_names", "height", "width") if k not in video]
        if missing:
            report.problems.append(f"{where}: missing field(s) {missing}")
            continue
        if vid in videos:
            report.problems.append(f"{where}: duplicate video id")
        length = video.get("length", len(video["file_names"]))
        if len(video["file_names"]) != length:
            report.problems.append(
                f"{where}: field 'file_names' has {len(video['file_names'])} entries but 'length' is {length}"
            )
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
    for ann in annotations:
        ann_id, vid = ann.get("id"), ann.get("video_id")
        where = f"{json_file}: video {vid}, annotation {ann_id}"
        if ann_id in seen_ids:
            report.problems.append(f"{where}: duplicate annotation id")
        seen_ids.add(ann_id)
        if vid not in videos:
            report.problems.append(f"{where}: field 'video_id' refers to no video of the json")
            continue
        video = videos[vid]
        if ann.get("category_id") not in category_ids:
            report.problems.append(f"{where}: unknown category_id {ann.get('category_id')}")
        length = len(video["file_names"])
        segms = ann.get("segmentations")
        if segms is None:
            report.problems.append(f"{where}: missing field 'segmentations'")
            continue
        for key in ("segmentations", "bboxes", "areas"):
            if ann.get(key) is not None and len(ann[key]) != length:
                report.problems.append(
                    f"{where}: field '{key}' has {len(ann[key])} entries but the video has {length}"
                )
        visible = 0
        for t, segm in enumerate(segms[:length]):
            if segm is None:
                continue
            frame_where = f"{where}, frame {t}, field 'segmentations'"
            try:
                segm = _frame_segmentation(segm, video, frame_where)
                if segm is None:
                    report.warnings.append(f"{frame_where}: no valid polygon (needs >= 3 points); ignored")
                    continue
                rle = segm if isinstance(segm, dict) else mask_util.merge(
                    mask_util.frPyObjects(segm, video["height"], video["width"])
                )  # fmt: skip
                if mask_util.area(rle) == 0:
                    report.warnings.append(f"{frame_where}: empty mask (use null for absent instances)")
                    continue
            except DatasetFormatError as e:
                report.problems.append(str(e))
                continue
            except (ValueError, TypeError) as e:
                report.problems.append(f"{frame_where}: does not decode ({e})")
                continue
            visible += 1
        if visible == 0:
            report.warnings.append(f"{where}: the instance is absent (null) in every frame")
        tracks_per_video[vid] += 1
        instances_per_category[ann.get("category_id")] += 1
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
