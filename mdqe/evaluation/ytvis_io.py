"""Reading YouTube-VIS / OVIS ground-truth and results files that others made, for evaluation.

A file is read with bounded work (`mdqe.utils.bounded_io`: size, json nesting, zip bombs and path-named
zip members refused before decoding), then checked until the metric code can trust it: ids are integers
or strings, frame sizes within MAX_MASK_PIXELS, segmentations that pycocotools' operations can read
within bounds (`mdqe.utils.rle.segmentation_problems`: polygons and uncompressed RLE in full, compressed
RLE strings for the run-based operations the metrics use, which never write a mask: decoding every run
would double the evaluation time; the report checks the runs of each mask it decodes), scores are
finite numbers. The first problem raises `YTVISFileError`, one line naming the file, the video or
annotation and the field.

numpy, pycocotools and the standard library only (no torch), for tools/eval_ytvis.py.
"""

from __future__ import annotations

import math
import numbers
import zipfile
from collections.abc import Mapping, Sequence
from typing import Any

from mdqe.utils.bounded_io import (
    ZIP_ERRORS,
    UntrustedInputError,
    check_zip_member_names,
    parse_json,
    read_json_file,
    read_zip_member,
)
from mdqe.utils.rle import segmentation_problems

from .occlusion import OCCLUSION_LABEL_SCORES
from .submission import REQUIRED_KEYS, split_index

__all__ = [
    "YTVISFileError",
    "check_ground_truth",
    "check_results",
    "load_ground_truth",
    "load_results",
    "read_ytvis_json",
]


class YTVISFileError(ValueError):
    """A ground-truth or results file that cannot be evaluated: the message names the file and why."""


def read_ytvis_json(path: str, what: str) -> Any:
    """The json content of `path`, or of the one member named `*results.json` of a `.zip`."""
    try:
        if not path.endswith(".zip"):
            return read_json_file(path)
        with zipfile.ZipFile(path) as archive:
            names = [n for n in check_zip_member_names(archive, path) if n.endswith("results.json")]
            if len(names) != 1:
                raise YTVISFileError(
                    f"{path}: expected one results.json in the zip, found {archive.namelist()}"
                )
            return parse_json(read_zip_member(archive, names[0], path), f"{path}: {names[0]}")
    except (YTVISFileError, UntrustedInputError) as e:
        raise YTVISFileError(str(e)) from None
    except FileNotFoundError:
        raise YTVISFileError(f"{path}: {what} file not found") from None
    except (OSError, *ZIP_ERRORS) as e:
        raise YTVISFileError(f"{path}: cannot read the {what} file ({e})") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, an integer of too many digits
        raise YTVISFileError(f"{path}: the {what} file is not valid JSON ({e})") from None


def _is_id(value: Any) -> bool:
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _check_segmentations(
    tracks: Sequence[tuple[str, Any, list]], sizes: Mapping[Any, tuple[int, int, int]], path: str
) -> None:
    """`tracks`: (where, video id, segmentations) of every track; the first that cannot be decoded raises."""
    flat, frame_sizes, owners = [], [], []
    for where, video_id, segmentations in tracks:
        height, width, _ = sizes[video_id]
        flat += segmentations
        frame_sizes += [(height, width)] * len(segmentations)
        owners += [(where, t) for t in range(len(segmentations))]
    for (where, t), reason in zip(owners, segmentation_problems(flat, frame_sizes, decode_runs=False)):
        if reason:
            raise YTVISFileError(f"{path}: {where}: segmentation of frame {t} {reason}")


def _check_annotation(index: int, ann: Any, path: str) -> str:
    """Where annotation `index` is (for messages), after checking its fields' types."""
    if not isinstance(ann, Mapping):
        raise YTVISFileError(f"{path}: annotations[{index}] is not an object")
    ann_id = ann.get("id")
    where = f"annotation {ann_id!r:.40} (annotations[{index}])"
    for key in ("id", "video_id", "category_id"):
        if not _is_id(ann.get(key)):
            raise YTVISFileError(f"{path}: {where}: '{key}' is not an integer or a string")
    if not isinstance(ann.get("segmentations"), list):
        raise YTVISFileError(f"{path}: {where}: 'segmentations' is not a list")
    areas = ann.get("areas", [])
    if not isinstance(areas, list) or not all(a is None or _is_number(a) for a in areas):
        raise YTVISFileError(f"{path}: {where}: 'areas' is not a list of numbers and nulls")
    if not isinstance(ann.get("iscrowd", 0), (int, float)):
        raise YTVISFileError(f"{path}: {where}: 'iscrowd' is not a number")
    occlusion = ann.get("occlusion")
    if occlusion is not None and (
        not isinstance(occlusion, list)
        or not all(o is None or (isinstance(o, str) and o in OCCLUSION_LABEL_SCORES) for o in occlusion)
    ):
        raise YTVISFileError(
            f"{path}: {where}: 'occlusion' is not a list of {', '.join(OCCLUSION_LABEL_SCORES)} and nulls"
        )
    return where


def check_ground_truth(gt: Any, path: str) -> dict[Any, tuple[int, int, int]]:
    """Check a ground-truth dict (videos, categories, annotations); returns {video id: (H, W, length)}."""
    try:
        sizes, _ = split_index(gt, path)
    except ValueError as e:
        raise YTVISFileError(str(e)) from None
    annotations = gt.get("annotations")
    if not annotations:
        raise YTVISFileError(f"{path} has no annotations: nothing to evaluate against")
    if not isinstance(annotations, list):
        raise YTVISFileError(f"{path}: 'annotations' is not a list")
    tracks = []
    for i, ann in enumerate(annotations):
        where = _check_annotation(i, ann, path)
        if ann["video_id"] in sizes:
            tracks.append((where, ann["video_id"], ann["segmentations"]))
    _check_segmentations(tracks, sizes, path)
    return sizes


def load_ground_truth(path: str) -> tuple[dict, dict[Any, tuple[int, int, int]]]:
    """The ground truth at `path`, checked, and its {video id: (H, W, length)} (`check_ground_truth`)."""
    gt = read_ytvis_json(path, "ground-truth")
    if not isinstance(gt, dict):
        raise YTVISFileError(
            f"{path}: expected a YouTube-VIS ground-truth object, got a JSON {type(gt).__name__}"
        )
    return gt, check_ground_truth(gt, path)


def check_results(results: Any, sizes: Mapping[Any, tuple[int, int, int]], path: str) -> None:
    """Check a results list against the videos `sizes` ({video id: (H, W, length)}) of the ground truth."""
    if not isinstance(results, list):
        raise YTVISFileError(
            f"{path}: expected a JSON list of prediction objects, got a JSON {type(results).__name__}"
        )
    tracks, unknown = [], set()
    for i, res in enumerate(results):
        if not isinstance(res, dict) or not all(key in res for key in REQUIRED_KEYS):
            raise YTVISFileError(
                f"{path}: results[{i}] is not a prediction object with {', '.join(REQUIRED_KEYS)} "
                f"(got {type(res).__name__} {str(res)[:80]})"
            )
        video_id = res["video_id"]
        if not _is_id(video_id) or not _is_id(res["category_id"]):
            raise YTVISFileError(
                f"{path}: results[{i}]: 'video_id' or 'category_id' is not an integer or a string"
            )
        if not _is_number(res["score"]):
            raise YTVISFileError(f"{path}: results[{i}]: 'score' {res['score']!r:.40} is not a finite number")
        if not isinstance(res["segmentations"], list):
            raise YTVISFileError(f"{path}: results[{i}]: 'segmentations' is not a list")
        if video_id in sizes:
            tracks.append((f"results[{i}] (video {video_id})", video_id, res["segmentations"]))
        else:
            unknown.add(video_id)
    if unknown:
        shown = sorted(unknown, key=str)[:5]
        raise YTVISFileError(f"{path}: {len(unknown)} video id(s) not in the ground truth, e.g. {shown}")
    _check_segmentations(tracks, sizes, path)


def load_results(path: str, sizes: Mapping[Any, tuple[int, int, int]]) -> list:
    """The results at `path` (results.json or a CodaLab .zip), checked (`check_results`)."""
    results = read_ytvis_json(path, "results")
    check_results(results, sizes, path)
    return results
