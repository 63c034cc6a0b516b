"""Metrics beyond the official eight: AP per category, per video and per occlusion level, the error
breakdown, and the YouTube-VIS 2022 short/long-video protocol. numpy + pycocotools only.

Everything is computed from one official matching (`match_ytvis`), so the official numbers come out of
the same pass and the per-category and occlusion APs are those of the official accumulation restricted
to a category or to ground truth of one occlusion level (the OVIS "AP_so / AP_mo / AP_ho").

YouTube-VIS 2022 (the CodaLab scoring program of the 2022 challenge, as distributed with DVIS++ and
VidEoMT as `yt2022_evaluate.py`): the validation set is the 2021 one plus long videos; one results file
is scored twice with the official evaluation, against `gt_short.json` (the 2021 videos) and against
`gt_long.json` (the long videos), and the challenge AP is the mean of the two APs.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .breakdown import ERROR_TYPES, ErrorBreakdown, error_breakdown
from .occlusion import OCCLUSION_LEVELS, grade, instance_occlusion_scores, level_masks
from .ytvis_metrics import (
    IOU_THRESHOLDS,
    MAX_DETS,
    METRIC_NAMES,
    YTVISEvalResult,
    YTVISMatching,
    _accumulate,
    evaluate_ytvis,
    match_ytvis,
    summarize_matching,
)

__all__ = [
    "OCCLUSION_METRICS",
    "YTVISAnalysis",
    "analyze_ytvis",
    "evaluate_ytvis_2022",
    "split_long_videos",
]

# OVIS's names of the AP of slightly / moderately / heavily occluded ground truth
OCCLUSION_METRICS = dict(zip(OCCLUSION_LEVELS, ("APso", "APmo", "APho")))


def _percent(values: np.ndarray) -> float:
    defined = values[values > -1]
    return float(defined.mean() * 100) if len(defined) else math.nan


@dataclass
class YTVISAnalysis:
    """The official evaluation and the analysis around it (APs in percent, NaN where undefined).

    Attributes:
        evaluation: the official result.
        category_names: {category id: name}.
        per_category: {category id: AP}.
        occlusion: {level: AP of the ground truth of that level}; occlusion_scores {ann id: score}.
        per_video: one dict per video: video_id, AP, and "tracks": ann_id, category_id, occlusion
            score and level, best_iou (the best same-category prediction's video IoU), matched (at 0.5).
        breakdown: the error breakdown, or None.
        pr_curves: {"0.50", "0.75", "0.50:0.95"}: (R,) precision at the recall thresholds, averaged over
            the categories with ground truth (area all, 100 predictions).
    """

    evaluation: YTVISEvalResult
    category_names: dict[int, str]
    per_category: dict[int, float]
    occlusion: dict[str, float]
    occlusion_scores: dict[Any, float]
    per_video: list[dict]
    breakdown: ErrorBreakdown | None
    pr_curves: dict[str, np.ndarray]

    @property
    def metrics(self) -> dict[str, float]:
        return self.evaluation.metrics

    def scalars(self) -> dict[str, float]:
        """Flat numbers for EventStorage / detectron2's results dict: the eight metrics, "AP-<class>",
        APso / APmo / APho and "dAP-<error type>"."""
        out = dict(self.metrics)
        out.update({f"AP-{self.category_names[c]}": ap for c, ap in self.per_category.items()})
        out.update({OCCLUSION_METRICS[level]: ap for level, ap in self.occlusion.items()})
        if self.breakdown is not None:
            out.update({f"dAP-{kind}": self.breakdown.delta_ap[kind] for kind in ERROR_TYPES})
        return out

    def to_json(self) -> dict:
        """The metrics.json content: the eight metrics at the top level, then the analysis."""
        out: dict[str, Any] = {k: _json_number(v) for k, v in self.metrics.items()}
        out["per_category"] = {self.category_names[c]: _json_number(v) for c, v in self.per_category.items()}
        counts = dict.fromkeys(OCCLUSION_LEVELS, 0)
        for score in self.occlusion_scores.values():
            counts[grade(score)] += 1
        out["occlusion"] = {OCCLUSION_METRICS[k]: _json_number(v) for k, v in self.occlusion.items()}
        out["occlusion"]["num_ground_truth"] = counts
        if self.breakdown is not None:
            out["errors"] = {
                "iou_threshold": self.breakdown.iou_threshold,
                "AP": _json_number(self.breakdown.ap),
                "counts": self.breakdown.counts,
                "delta_AP": {k: _json_number(v) for k, v in self.breakdown.delta_ap.items()},
            }
        out["per_video"] = [{**v, "AP": _json_number(v["AP"])} for v in self.per_video]
        return out


def _json_number(value: float) -> float | None:
    return None if math.isnan(value) else value


def analyze_ytvis(
    gt: Mapping[str, Any], results: Sequence[Mapping[str, Any]], *, breakdown: bool = True
) -> YTVISAnalysis:
    """The official evaluation of `results` (see `evaluate_ytvis`) with the per-category, per-video and
    occlusion-level APs and, with `breakdown`, the error breakdown at IoU 0.5."""
    occlusion_scores: dict[Any, float] = {}
    partial: list[int] = []  # levels holding some, not all, of the non-crowd ground truth

    def occlusion_rows(videos: Mapping[Any, Any]) -> dict[Any, np.ndarray]:
        occlusion_scores.update(instance_occlusion_scores(videos))
        ids = list(occlusion_scores)
        outside = level_masks(np.array([occlusion_scores[i] for i in ids], np.float64).reshape(-1))  # (L, N)
        crowd = {g.ann_id for v in videos.values() for gts, _ in v.groups.values() for g in gts if g.iscrowd}
        counted = outside[:, [i not in crowd for i in ids]]
        partial.extend(k for k in range(len(OCCLUSION_LEVELS)) if counted[k].any() and not counted[k].all())
        return {ann_id: outside[partial, j] for j, ann_id in enumerate(ids)}

    matching = match_ytvis(gt, results, occlusion_rows)
    evaluation = summarize_matching(matching)
    names = {c["id"]: str(c.get("name", c["id"])) for c in gt["categories"]}
    per_category = {
        c: _percent(evaluation.precision[:, :, k, 0, -1]) for k, c in enumerate(evaluation.category_ids)
    }
    return YTVISAnalysis(
        evaluation=evaluation,
        category_names={c: names.get(c, str(c)) for c in evaluation.category_ids},
        per_category=per_category,
        occlusion=_occlusion_ap(matching, evaluation, occlusion_scores, partial),
        occlusion_scores=occlusion_scores,
        per_video=_per_video(matching, occlusion_scores),
        breakdown=error_breakdown(matching) if breakdown else None,
        pr_curves=_pr_curves(evaluation.precision),
    )


def _occlusion_ap(
    matching: YTVISMatching, evaluation: YTVISEvalResult, scores: Mapping[Any, float], partial: Sequence[int]
) -> dict[str, float]:
    """AP of each occlusion level: from the extra setting rows for the `partial` levels; a level with all
    the (non-crowd) ground truth is the "all" setting, one with none has no AP."""
    num_area = evaluation.precision.shape[3]
    rows = range(num_area, num_area + len(partial))
    precision, _ = (
        _accumulate(matching.per_category, settings=rows, max_dets=(MAX_DETS[-1],))
        if partial
        else (None, None)
    )
    counts = dict.fromkeys(OCCLUSION_LEVELS, 0)
    for score in scores.values():
        for level, (low, high) in OCCLUSION_LEVELS.items():
            counts[level] += low <= score <= high
    out = {}
    for k, level in enumerate(OCCLUSION_LEVELS):
        if k in partial:
            out[level] = _percent(precision[:, :, :, list(partial).index(k), 0])
        else:
            out[level] = _percent(evaluation.precision[:, :, :, 0, -1]) if counts[level] else math.nan
    return out


def _pr_curves(precision: np.ndarray) -> dict[str, np.ndarray]:
    """Category-averaged precision at the recall thresholds (area all, 100 predictions)."""
    curves = {}
    for label, rows in (("0.50", [0]), ("0.75", [5]), ("0.50:0.95", list(range(len(IOU_THRESHOLDS))))):
        values = precision[rows][:, :, :, 0, -1]  # (t, R, K)
        defined = (values > -1).all(axis=(0, 1))
        curves[label] = (
            values[:, :, defined].mean(axis=(0, 2)) if defined.any() else np.zeros(values.shape[1])
        )
    return curves


def _per_video(matching: YTVISMatching, occlusion_scores: Mapping[Any, float]) -> list[dict]:
    """AP (official accumulation over the video's records alone) and per-track facts of every video."""
    by_video: dict[Any, list] = {}
    for records in matching.per_category:
        for rec in records:
            by_video.setdefault(rec.video_id, []).append(rec)
    out = []
    for video_id in sorted(matching.videos):
        records = by_video.get(video_id, [])
        precision, _ = _accumulate([[rec] for rec in records], settings=(0,), max_dets=(MAX_DETS[-1],))
        tracks = []
        for rec in records:
            best = rec.ious.max(axis=0) if len(rec.dts) else np.zeros(len(rec.gts))
            matched = set(rec.match[0, 0][rec.credited[0, 0]].tolist())
            for g, instance in enumerate(rec.gts):
                score = occlusion_scores.get(instance.ann_id, 0.0)
                tracks.append(
                    {
                        "ann_id": instance.ann_id,
                        "category_id": rec.category_id,
                        "occlusion": round(score, 4),
                        "occlusion_level": grade(score),
                        "best_iou": round(float(best[g]), 4),
                        "matched": g in matched,
                    }
                )
        num_predictions = sum(len(rec.dts) for rec in records)
        out.append(
            {
                "video_id": video_id,
                "AP": _percent(precision),
                "num_predictions": num_predictions,
                "tracks": tracks,
            }
        )
    return out


def split_long_videos(gt: Mapping[str, Any], long_video_ids: Collection[Any]) -> tuple[dict, dict]:
    """(short, long) ground truth of a YouTube-VIS dict: the videos (and their annotations) not in /
    in `long_video_ids`, as gt_short.json and gt_long.json of the 2022 release."""
    long_ids = set(long_video_ids)
    unknown = long_ids - {v["id"] for v in gt["videos"]}
    if unknown:
        raise ValueError(f"long video ids {sorted(unknown)[:5]} are not videos of the ground truth")
    parts = []
    for keep_long in (False, True):
        videos = [v for v in gt["videos"] if (v["id"] in long_ids) == keep_long]
        ids = {v["id"] for v in videos}
        anns = [a for a in gt.get("annotations") or [] if a["video_id"] in ids]
        parts.append({**gt, "videos": videos, "annotations": anns})
    return parts[0], parts[1]


def evaluate_ytvis_2022(
    gt_short: Mapping[str, Any], gt_long: Mapping[str, Any], results: Sequence[Mapping[str, Any]]
) -> dict[str, float]:
    """The YouTube-VIS 2022 scores: the eight metrics on the short videos ("AP_S", "AP50_S", ...) and
    on the long ones ("AP_L", ...), and "AP", the mean of AP_S and AP_L (the challenge's ranking
    number). A result whose video is in neither ground truth is an error."""
    short_ids = {v["id"] for v in gt_short["videos"]}
    long_ids = {v["id"] for v in gt_long["videos"]}
    unknown = [i for i, r in enumerate(results) if r["video_id"] not in short_ids | long_ids]
    if unknown:
        raise ValueError(
            f"results[{unknown[0]}]: video_id {results[unknown[0]]['video_id']} is a video of neither "
            "the short- nor the long-video ground truth"
        )
    out: dict[str, float] = {}
    for suffix, gt, ids in (("S", gt_short, short_ids), ("L", gt_long, long_ids)):
        metrics = evaluate_ytvis(gt, [r for r in results if r["video_id"] in ids]).metrics
        out.update({f"{name}_{suffix}": metrics[name] for name in METRIC_NAMES})
    return {"AP": (out["AP_S"] + out["AP_L"]) / 2, **out}
