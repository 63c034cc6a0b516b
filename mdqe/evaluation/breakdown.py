"""Error breakdown of video instance predictions, in the spirit of TIDE (Bolya et al., ECCV 2020).

Every prediction that is a false positive at the foreground threshold t_f (0.5 by default) of the
official matching (area "all", 100 predictions per video and category) gets one type, tested in this
order with its video IoU to the ground-truth tracks of its video (crowd ones left out):

- dupe: IoU >= t_f with a track of its category that a higher-scoring prediction already matched;
- cls: IoU >= t_f with a track of another category;
- loc: t_b <= IoU < t_f with a track of its category (the track IoU is below the threshold);
- both: t_b <= IoU < t_f with a track of another category only;
- bkg: IoU < t_b (0.1) with every track.

(TIDE tests cls before dupe: a duplicate of a matched track of its own category that also overlaps
another category's track is a dupe here, which spares the IoUs with other categories' tracks for
duplicates.)

A ground-truth track that no prediction matches and that no cls or loc error points at is "missed".
The AP gained by fixing a type is AP@t_f (COCO's 101-point AP, averaged over categories, equal to the
official AP50 at t_f = 0.5) with only that type fixed, minus AP@t_f as is:

- cls: the prediction takes the category of its track and becomes its match when no prediction matched
  the track yet (in score order); otherwise it is removed;
- loc: the prediction becomes the match of its track under the same rule, else it is removed;
- dupe, both, bkg: the predictions are removed;
- missed: the missed tracks are removed from the ground truth.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .ytvis_metrics import IOU_THRESHOLDS, GroupMatch, YTVISMatching, _interpolated_precision, _track_ious

__all__ = ["ERROR_TYPES", "ErrorBreakdown", "PredictionError", "error_breakdown"]

ERROR_TYPES = ("cls", "dupe", "loc", "both", "bkg", "missed")


@dataclass(frozen=True)
class PredictionError:
    """One false positive: `result_index` into the results list, its type, and the ground truth it
    points at (annotation id, None for bkg) with their video IoU."""

    video_id: Any
    result_index: int
    category_id: int
    score: float
    kind: str
    target_ann_id: Any
    iou: float


@dataclass
class ErrorBreakdown:
    """Counts and AP gains (percent) by error type at one IoU threshold."""

    iou_threshold: float
    ap: float  # AP at the threshold, percent
    counts: dict[str, int]
    delta_ap: dict[str, float]  # AP gained by fixing each type, percent
    errors: list[PredictionError] = field(default_factory=list)
    missed: list[tuple[Any, Any]] = field(default_factory=list)  # (video id, annotation id)


@dataclass
class _Entry:
    """One counted prediction of one category at the threshold."""

    score: float
    tp: bool
    error: int = -1  # index into the error list, -1 for true positives


def error_breakdown(
    matching: YTVISMatching, iou_threshold: float = 0.5, background_threshold: float = 0.1
) -> ErrorBreakdown:
    """Classify the false positives and missed tracks of a `match_ytvis` matching and fix each type.

    Args:
        matching: the official matching (its records at setting 0, the "all" area range, are used).
        iou_threshold: t_f, one of the official IoU thresholds (0.5, 0.55, ..., 0.95).
        background_threshold: t_b.
    """
    t = int(np.flatnonzero(np.isclose(IOU_THRESHOLDS, iou_threshold))[0])
    entries: dict[int, list[_Entry]] = {c: [] for c in matching.category_ids}
    positives: dict[int, int] = dict.fromkeys(matching.category_ids, 0)
    gt_matched: dict[Any, bool] = {}  # ann id -> matched, for every counted ground truth
    gt_category: dict[Any, int] = {}
    gt_video: dict[Any, Any] = {}
    false_positives: dict[Any, list[tuple[GroupMatch, int, _Entry]]] = {}
    for records in matching.per_category:
        for rec in records:
            counted_gt = ~rec.gt_ignore[0]
            positives[rec.category_id] += int(counted_gt.sum())
            credited = rec.credited[0, t]
            matched = set(rec.match[0, t][credited].tolist())
            for g, gt in enumerate(rec.gts):
                if counted_gt[g]:
                    gt_matched[gt.ann_id] = g in matched
                    gt_category[gt.ann_id], gt_video[gt.ann_id] = rec.category_id, rec.video_id
            for d in np.flatnonzero(~rec.ignored[0, t]).tolist():
                entry = _Entry(float(rec.scores[d]), bool(credited[d]))
                entries[rec.category_id].append(entry)
                if not entry.tp:
                    false_positives.setdefault(rec.video_id, []).append((rec, d, entry))
    errors: list[PredictionError] = []
    for video_id, fps in false_positives.items():
        _classify_video(matching.videos[video_id], fps, t, iou_threshold, background_threshold, errors)
    explained = {e.target_ann_id for e in errors if e.kind in ("cls", "loc")}
    missed = [
        (gt_video[ann_id], ann_id)
        for ann_id, matched in gt_matched.items()
        if not matched and ann_id not in explained
    ]
    base = _mean_ap(entries, positives)
    delta = {kind: _fixed_ap(kind, entries, positives, errors, gt_matched, gt_category, missed) - base
             for kind in ERROR_TYPES}  # fmt: skip
    counts = {kind: sum(e.kind == kind for e in errors) for kind in ERROR_TYPES[:-1]}
    counts["missed"] = len(missed)
    return ErrorBreakdown(
        iou_threshold, base * 100, counts, {k: v * 100 for k, v in delta.items()}, errors, missed
    )


def _classify_video(
    video: Any,
    fps: Sequence[tuple[GroupMatch, int, _Entry]],
    t: int,
    t_f: float,
    t_b: float,
    errors: list[PredictionError],
) -> None:
    """Give each false positive of one video its type (appended to `errors`, linked from its entry).

    The IoUs with other categories' tracks are computed in one batch, for the predictions that are not
    duplicates (those are typed from their own category's IoUs).
    """
    others = [(c, g) for c, (gts, _) in video.groups.items() for g in gts if not g.iscrowd]
    same, used = [], []
    for rec, d, _ in fps:
        valid = ~np.array([g.iscrowd for g in rec.gts], bool).reshape(-1)
        same.append(np.where(valid, rec.ious[d].reshape(-1), -1.0))
        used.append(_used(rec, t))
    needed = [row for row, (s, u) in enumerate(zip(same, used)) if not ((s >= t_f) & u).any()]
    other_ious = np.zeros((len(fps), len(others)))
    if needed and others:
        tracks = [fps[row][0].dts[fps[row][1]].track for row in needed]
        num_pixels = video.size[0] * video.size[1]
        other_ious[needed] = _track_ious(tracks, [g.track for _, g in others], num_pixels)
    for row, (rec, d, entry) in enumerate(fps):
        other = np.where([c != rec.category_id for c, _ in others], other_ious[row], -1.0).reshape(-1)
        kind, target, iou = _classify(same[row], other, used[row], t_f, t_b)
        target_id = None
        if target is not None:
            target_id = (rec.gts[target[1]] if target[0] == "same" else others[target[1]][1]).ann_id
        dt = rec.dts[d]
        errors.append(
            PredictionError(rec.video_id, dt.index, rec.category_id, dt.score, kind, target_id, iou)
        )
        entry.error = len(errors) - 1


def _used(rec: GroupMatch, t: int) -> np.ndarray:
    """(G,) bool: the record's ground truths matched at threshold index t."""
    used = np.zeros(len(rec.gts), bool)
    used[rec.match[0, t][rec.credited[0, t]]] = True
    return used


def _classify(
    same: np.ndarray, other: np.ndarray, used: np.ndarray, t_f: float, t_b: float
) -> tuple[str, tuple[str, int] | None, float]:
    """(type, (which, index) of the ground truth it points at, IoU) of one false positive."""
    best_other = float(other.max()) if len(other) else 0.0
    best_same = float(same.max()) if len(same) else 0.0
    if best_same >= t_f and used[int(same.argmax())]:
        return "dupe", ("same", int(same.argmax())), best_same
    if best_other >= t_f:
        return "cls", ("other", int(other.argmax())), best_other
    if best_same >= t_b:
        return "loc", ("same", int(same.argmax())), best_same
    if best_other >= t_b:
        return "both", ("other", int(other.argmax())), best_other
    return "bkg", None, max(best_same, best_other, 0.0)


def _fixed_ap(
    kind: str,
    entries: dict[int, list[_Entry]],
    positives: dict[int, int],
    errors: Sequence[PredictionError],
    gt_matched: dict[Any, bool],
    gt_category: dict[Any, int],
    missed: Sequence[tuple[Any, Any]],
) -> float:
    """Mean AP with the errors of one type fixed (see the module docstring)."""
    positives = dict(positives)
    if kind == "missed":
        for _, ann_id in missed:
            positives[gt_category[ann_id]] -= 1
        return _mean_ap(entries, positives)
    fixed: dict[int, list[_Entry]] = {c: [] for c in entries}
    taken = {ann_id for ann_id, matched in gt_matched.items() if matched}
    moved: list[tuple[int, _Entry]] = []
    for category_id, category_entries in entries.items():
        for entry in sorted(category_entries, key=lambda e: -e.score):
            error = errors[entry.error] if entry.error >= 0 else None
            if error is None or error.kind != kind:
                fixed[category_id].append(entry)
                continue
            if (
                kind in ("cls", "loc")
                and error.target_ann_id in gt_category
                and error.target_ann_id not in taken
            ):
                taken.add(error.target_ann_id)
                moved.append((gt_category[error.target_ann_id], _Entry(entry.score, True)))
    for category_id, entry in moved:
        fixed[category_id].append(entry)
    return _mean_ap(fixed, positives)


def _mean_ap(entries: dict[int, list[_Entry]], positives: dict[int, int]) -> float:
    """COCO 101-point AP averaged over the categories with ground truth (0 when there are none)."""
    values = []
    for category_id, category_entries in entries.items():
        if positives.get(category_id, 0) <= 0:
            continue
        ordered = sorted(category_entries, key=lambda e: -e.score)
        tp = np.cumsum([e.tp for e in ordered], dtype=np.float64)
        fp = np.cumsum([not e.tp for e in ordered], dtype=np.float64)
        values.append(float(_interpolated_precision(tp[None], fp[None], positives[category_id]).mean()))
    return float(np.mean(values)) if values else 0.0
