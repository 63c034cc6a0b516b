"""Checks of a YouTube-VIS / OVIS results file before it is uploaded to an evaluation server.

Everything a server rejects or mis-scores: the archive holds exactly `results.json`; every video of the
split has predictions; each prediction names a video and a category of the split, has a finite score in
[0, 1] and one segmentation per frame of its video (null, or an RLE of the video's height x width whose
run lengths decode and add up to the frame); no prediction is repeated. A file past the limits of
`mdqe.utils.bounded_io` (size, json nesting, a zip bomb, a path-named member) is refused before it is
decoded. numpy, pycocotools and the standard library only (no torch), so `tools/check_submission.py`
starts in a fraction of a second.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import zipfile
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mdqe.utils.bounded_io import (
    ZIP_ERRORS,
    UntrustedInputError,
    check_zip_member_names,
    parse_json,
    read_json_file,
    read_zip_member,
)
from mdqe.utils.rle import frame_size_problem, rle_problems, rle_structure_problem

logger = logging.getLogger(__name__)

RESULTS_NAME = "results.json"
REQUIRED_KEYS = ("video_id", "category_id", "score", "segmentations")


@dataclass
class SubmissionReport:
    """What a check found: `problems` (one readable line each; empty = the file is fine) and counts."""

    source: str
    num_predictions: int = 0
    num_videos: int = 0
    num_videos_covered: int = 0
    num_masks: int = 0
    num_empty_predictions: int = 0  # predictions with no mask in any frame: valid, they match nothing
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        verdict = "OK" if self.ok else f"{len(self.problems)} problems"
        empty = (
            f" ({self.num_empty_predictions} with no mask in any frame)" if self.num_empty_predictions else ""
        )
        return (
            f"{self.source}: {self.num_predictions} predictions{empty}, {self.num_videos_covered} of "
            f"{self.num_videos} videos covered, {self.num_masks} masks: {verdict}"
        )


def read_submission(path: str, problems: list[str]) -> list | None:
    """The results list of `results.json` or of a CodaLab `results.zip` (which must hold exactly a
    top-level `results.json`); None, with the reason appended to `problems`, when it cannot be read or
    is past the limits of `mdqe.utils.bounded_io` (size, nesting, a path-named member, a zip bomb)."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                names = [n for n in check_zip_member_names(archive, path) if not n.endswith("/")]
                if names != [RESULTS_NAME]:
                    problems.append(
                        f"{path}: the archive must hold exactly {RESULTS_NAME!r}, it holds {names}"
                    )
                    if RESULTS_NAME not in names:
                        return None
                results = parse_json(read_zip_member(archive, RESULTS_NAME, path), f"{path}: {RESULTS_NAME}")
        elif path.endswith(".zip"):
            open(path, "rb").close()  # a missing file is reported as such
            problems.append(f"{path}: not a valid zip archive")
            return None
        else:
            results = read_json_file(path)
    except UntrustedInputError as e:
        problems.append(str(e))
        return None
    except (OSError, ValueError, *ZIP_ERRORS) as e:
        problems.append(f"{path}: cannot read the results: {e}")
        return None
    if not isinstance(results, list):
        problems.append(f"{path}: expected a JSON list of predictions, found a {type(results).__name__}")
        return None
    return results


@dataclass
class _RLEJobs:
    """Compressed RLE strings to decode in one batch, with where each comes from."""

    counts: list[str] = field(default_factory=list)
    pixels: list[int] = field(default_factory=list)
    where: list[tuple[int, str, int]] = field(default_factory=list)  # (prediction, its label, frame)


def _check_prediction(index: int, pred: Any, videos: Mapping, categories: set, jobs: _RLEJobs) -> list[str]:
    """Problems of one prediction (at position `index` of the list); its RLE strings are added to `jobs`."""
    if not isinstance(pred, Mapping):
        return [f"prediction {index}: not a JSON object"]
    missing = [k for k in REQUIRED_KEYS if k not in pred]
    if missing:
        return [f"prediction {index} (video {pred.get('video_id')}): missing keys {missing}"]
    video_id = pred["video_id"]
    where = f"prediction {index} (video {video_id})"
    if not _is_id(video_id) or video_id not in videos:
        return [f"{where}: video_id {video_id!r} is not a video of the split"]
    problems = []
    category = pred["category_id"]
    if isinstance(category, (dict, list)) or category not in categories:
        problems.append(f"{where}: category_id {category!r} is not a category of the split")
    score = pred["score"]
    if isinstance(score, bool) or not isinstance(score, numbers.Real) or not math.isfinite(score):
        problems.append(f"{where}: score {score!r} is not a finite number")
    elif not 0.0 <= score <= 1.0:
        problems.append(f"{where}: score {score} is outside [0, 1]")
    height, width, length = videos[video_id]
    masks = pred["segmentations"]
    if not isinstance(masks, list):
        return [*problems, f"{where}: segmentations is a {type(masks).__name__}, not a list"]
    if len(masks) != length:
        problems.append(f"{where}: {len(masks)} segmentations, the video has {length} frames")
    for t, rle in enumerate(masks):
        reason = None if rle is None else rle_structure_problem(rle, height, width)
        if reason:
            problems.append(f"{where}: segmentation of frame {t} {reason}")
        elif rle is not None and isinstance(rle["counts"], str):
            jobs.counts.append(rle["counts"])
            jobs.pixels.append(height * width)
            jobs.where.append((index, where, t))
    return problems


def _decode_jobs(jobs: _RLEJobs, batch: int = 4096) -> dict[int, list[str]]:
    """{prediction index: problems} of the RLE strings that do not decode."""
    found: dict[int, list[str]] = {}
    for start in range(0, len(jobs.counts), batch):
        stop = start + batch
        reasons = rle_problems(jobs.counts[start:stop], jobs.pixels[start:stop])
        for (index, where, t), reason in zip(jobs.where[start:stop], reasons):
            if reason:
                found.setdefault(index, []).append(f"{where}: segmentation of frame {t} {reason}")
    return found


def split_index(gt: Any, source: str = "the ground truth") -> tuple[dict[Any, tuple[int, int, int]], set]:
    """{video id: (height, width, length)} and the category ids of a YouTube-VIS ground-truth dict.

    Raises ValueError naming `source` and the video or category when `gt` is not a split: "videos" with
    integer or string ids and a frame size masks can be decoded at (`frame_size_problem`), "categories"
    with ids.
    """
    if not isinstance(gt, Mapping) or not isinstance(gt.get("videos"), list):
        raise ValueError(f"{source}: not a YouTube-VIS split (no 'videos' list)")
    videos = {}
    for i, video in enumerate(gt["videos"]):
        video_id = video.get("id") if isinstance(video, Mapping) else None
        if not _is_id(video_id):
            raise ValueError(f"{source}: videos[{i}] is not a video object with an integer or string id")
        problem = frame_size_problem(video.get("height"), video.get("width"))
        if problem:
            raise ValueError(f"{source}: video {video_id} {problem}")
        length = video.get("length") or len(video.get("file_names") or [])
        if not isinstance(length, int) or isinstance(length, bool) or length < 0:
            raise ValueError(f"{source}: video {video_id} has length {length!r:.40}, not a frame count")
        videos[video_id] = (video["height"], video["width"], length)
    categories = gt.get("categories", [])
    if not isinstance(categories, list) or not all(
        isinstance(c, Mapping) and _is_id(c.get("id")) for c in categories
    ):
        raise ValueError(f"{source}: 'categories' is not a list of objects with integer or string ids")
    return videos, {c["id"] for c in categories}


def _is_id(value: Any) -> bool:
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _duplicate_key(pred: Mapping) -> tuple:
    """(video, category, masks) of a valid prediction; RLE sizes are the video's, so counts suffice."""
    frames = tuple(
        "" if m is None else m["counts"] if isinstance(m["counts"], str) else json.dumps(m["counts"])
        for m in pred["segmentations"]
    )
    return pred["video_id"], pred["category_id"], frames


def check_results(results: Sequence, gt: Mapping[str, Any], source: str = "results") -> SubmissionReport:
    """Check a results list against the split described by ground-truth dict `gt` (its "videos" with
    id/height/width/length and its "categories"; annotations are not needed)."""
    videos, categories = split_index(gt)
    report = SubmissionReport(source, num_predictions=len(results), num_videos=len(videos))
    jobs = _RLEJobs()
    problems = [_check_prediction(i, pred, videos, categories, jobs) for i, pred in enumerate(results)]
    for index, found in _decode_jobs(jobs).items():
        problems[index] += found
    valid = []
    for pred, found in zip(results, problems):
        report.problems += found
        if isinstance(pred, Mapping) and isinstance(pred.get("segmentations"), list):
            report.num_masks += sum(m is not None for m in pred["segmentations"])
        if not found:
            valid.append(pred)
    covered = {
        pred.get("video_id") for pred in results if isinstance(pred, Mapping) and _is_id(pred.get("video_id"))
    }
    report.num_videos_covered = len(covered & videos.keys())
    missing = [v for v in videos if v not in covered]
    if missing:
        report.problems.append(f"{len(missing)} of {len(videos)} videos have no prediction: {missing}")
    # A track whose masks are empty in every frame (its mask never passes 0.5) is emitted under each of
    # its top classes (the multi-label top-k of the post-processing): identical entries that cannot match
    # anything, so they are counted, not reported as duplicates.
    has_mask = [any(m is not None for m in pred["segmentations"]) for pred in valid]
    report.num_empty_predictions = has_mask.count(False)
    counts = Counter(_duplicate_key(pred) for pred, masked in zip(valid, has_mask) if masked)
    for (video_id, category_id, _), n in counts.items():
        if n > 1:
            report.problems.append(
                f"video {video_id}: {n} identical predictions (category {category_id}, same masks)"
            )
    return report


def check_submission(path: str, gt: Mapping[str, Any]) -> SubmissionReport:
    """Read `path` (results.json or results.zip) and check it against ground-truth dict `gt`."""
    problems: list[str] = []
    results = read_submission(path, problems)
    report = check_results(results, gt, source=path) if results is not None else SubmissionReport(path)
    report.problems[:0] = problems
    return report


def log_submission_check(path: str, gt: Mapping[str, Any], max_lines: int = 20) -> SubmissionReport:
    """Check a written results file and log the summary (a warning with the first problems if any)."""
    report = check_submission(path, gt)
    if report.ok:
        logger.info("Submission check: %s", report.summary())
    else:
        shown = "\n  ".join(report.problems[:max_lines])
        more = (
            f"\n  ... and {len(report.problems) - max_lines} more" if len(report.problems) > max_lines else ""
        )
        logger.warning("Submission check: %s\n  %s%s", report.summary(), shown, more)
    return report
