"""Checks of a YouTube-VIS / OVIS results file before it is uploaded to an evaluation server.

Everything a server rejects or mis-scores: the archive holds exactly `results.json`; every video of the
split has predictions; each prediction names a video and a category of the split, has a finite score in
[0, 1] and one segmentation per frame of its video (null, or an RLE of the video's height x width whose
run lengths decode and add up to the frame); no prediction is repeated. numpy and the standard library
only (no torch), so `tools/check_submission.py` starts in a fraction of a second.
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

import numpy as np

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
    top-level `results.json`); None, with the reason appended to `problems`, when it cannot be read."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                names = [n for n in archive.namelist() if not n.endswith("/")]
                if names != [RESULTS_NAME]:
                    problems.append(
                        f"{path}: the archive must hold exactly {RESULTS_NAME!r}, it holds {names}"
                    )
                    if RESULTS_NAME not in names:
                        return None
                payload = archive.read(RESULTS_NAME)
        else:
            with open(path, "rb") as f:
                payload = f.read()
            if path.endswith(".zip"):
                problems.append(f"{path}: not a valid zip archive")
                return None
        results = json.loads(payload)
    except (OSError, zipfile.BadZipFile, ValueError) as e:
        problems.append(f"{path}: cannot read the results: {e}")
        return None
    if not isinstance(results, list):
        problems.append(f"{path}: expected a JSON list of predictions, found a {type(results).__name__}")
        return None
    return results


def _decode_runs(codes: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(total pixels, smallest run) of each of the concatenated RLE strings (`codes`: their characters
    minus 48, every string non-empty and ending with a final chunk; `lengths`: characters per string)."""
    n = codes.size
    last = (codes & 0x20) == 0  # the final 5-bit chunk of each run length
    is_start = np.empty(n, dtype=bool)
    is_start[0], is_start[1:] = True, last[:-1]
    chars = np.arange(n, dtype=np.int32)
    position = chars - np.maximum.accumulate(np.where(is_start, chars, 0))  # chunk index within its run
    chunks = (codes & 0x1F).astype(np.int64)
    later = np.flatnonzero(position)  # most run lengths fit one chunk: shift only the others
    chunks[later] <<= 5 * position[later].astype(np.int64)
    values = np.add.reduceat(chunks, np.flatnonzero(is_start))
    ends = np.flatnonzero(last)
    negative = (codes[ends] & 0x10) != 0
    values[negative] -= np.left_shift(1, 5 * (position[ends][negative].astype(np.int64) + 1))
    runs_per_string = np.add.reduceat(last, np.concatenate(([0], np.cumsum(lengths)[:-1])))
    first_run = np.concatenate(([0], np.cumsum(runs_per_string)[:-1]))
    segment = np.repeat(np.arange(lengths.size), runs_per_string)  # string of each run
    index = np.arange(values.size) - first_run[segment]  # run index within its string
    # runs after the third are coded as differences to the run two before: undo by cumulative sums over
    # the runs of one parity (index >= 1), restarted at each string
    runs = values.copy()
    for parity in (0, 1):
        selected = (index >= 1) & (index % 2 == parity)
        cumulative = np.cumsum(np.where(selected, values, 0))
        before = np.concatenate(([0], cumulative))[first_run[segment]]
        runs = np.where(selected, cumulative - before, runs)
    return np.add.reduceat(runs, first_run), np.minimum.reduceat(runs, first_run)


def rle_problems(counts: Sequence[str], pixels: Sequence[int]) -> list[str | None]:
    """For each compressed COCO RLE string, why it does not decode to a frame of `pixels` (= H*W) pixels,
    or None if it does: bad characters, a truncated run length, a negative run, or runs not adding up.

    All strings are decoded together with numpy (pycocotools' decoder does not validate run lengths, and
    a Python loop per string is too slow for a whole OVIS submission).
    """
    reasons: list[str | None] = [None] * len(counts)
    encoded = [c.encode() if c.isascii() else b"\xff" * len(c) for c in counts]  # non-ASCII: invalid
    lengths = np.array([len(c) for c in encoded], dtype=np.int64)
    codes = np.frombuffer(b"".join(encoded), dtype=np.uint8) - np.uint8(48)  # bad characters wrap > 63
    if not codes.size:
        return ["has empty counts"] * len(counts)
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    stop = np.minimum(starts + lengths - 1, codes.size - 1)
    bad_char = np.add.reduceat(codes > 63, np.minimum(starts, codes.size - 1)) * (lengths > 0)
    truncated = (codes[stop] & 0x20) != 0
    for i in np.flatnonzero((lengths == 0) | (bad_char > 0) | truncated):
        reasons[i] = (
            "has empty counts"
            if lengths[i] == 0
            else "has counts with characters outside the RLE alphabet"
            if bad_char[i]
            else "has counts that end inside a run length (truncated)"
        )
    good = np.array([r is None for r in reasons], dtype=bool)
    if not good.any():
        return reasons
    if not good.all():
        codes = codes[np.repeat(good, lengths)]
    total, smallest = _decode_runs(codes, lengths[good])
    for i, total_i, smallest_i in zip(np.flatnonzero(good), total.tolist(), smallest.tolist()):
        if smallest_i < 0:
            reasons[i] = "does not decode: negative run length"
        elif total_i != pixels[i]:
            reasons[i] = f"does not decode: run lengths add up to {total_i} pixels, not {pixels[i]}"
    return reasons


def _check_rle_structure(rle: Any, height: int, width: int) -> str | None:
    """Why `rle` is not an RLE of one height x width frame, apart from decoding its counts string."""
    if not isinstance(rle, Mapping) or "size" not in rle or "counts" not in rle:
        return "is neither null nor an RLE dict with 'size' and 'counts'"
    if list(rle["size"]) != [height, width]:
        return f"has size {list(rle['size'])}, the video is {[height, width]}"
    counts = rle["counts"]
    if isinstance(counts, str):
        return None
    if isinstance(counts, list) and all(isinstance(c, int) and c >= 0 for c in counts):
        if sum(counts) != height * width:
            return f"has uncompressed run lengths adding up to {sum(counts)}, not {height * width}"
        return None
    return "has counts that are neither an RLE string nor a list of run lengths"


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
    if isinstance(video_id, (dict, list)) or video_id not in videos:
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
        reason = None if rle is None else _check_rle_structure(rle, height, width)
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


def split_index(gt: Mapping[str, Any]) -> tuple[dict[Any, tuple[int, int, int]], set]:
    """{video id: (height, width, length)} and the category ids of a YouTube-VIS ground-truth dict."""
    videos = {}
    for video in gt["videos"]:
        length = video.get("length") or len(video.get("file_names", []))
        videos[video["id"]] = (int(video["height"]), int(video["width"]), int(length))
    return videos, {c["id"] for c in gt.get("categories", [])}


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
    covered = {pred.get("video_id") for pred in results if isinstance(pred, Mapping)}
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
