"""Occlusion level of every ground-truth instance: slight, moderate or heavy, as OVIS grades them.

The official OVIS evaluation (the `OVISeval` of the OVIS authors, distributed with their cocoapi fork and
with DVIS++) grades an instance from the per-frame occlusion labels of its annotation ("occlusion":
"no_occlusion" / "slight_occlusion" / "severe_occlusion", scored 0 / 0.25 / 0.75): its score is the mean
of the highest half (rounded up) of its frame scores, and AP is reported for the ranges
slight [0, 0.25], moderate [0.25, 0.5] and heavy [0.5, 1] (both ends inclusive; a ground truth outside
the range is ignored, as one outside an area range). The OVIS paper's MBOR (mean bounding-box overlap
ratio) describes how occluded a whole dataset is; the per-instance grading is this one.

Annotations without such labels (YouTube-VIS, the synthetic set) are graded the same way from a frame
score computed from the masks (our definition, not OVIS's): in frame f, instance i's score is

    X / (X + |M_i|),  X = pixels of the other instances' masks inside i's bounding box (summed over
                          the other instances, at most the box's pixels outside M_i),

an estimate of the fraction of i hidden by the others, since ground-truth masks hold the visible part
only. An instance absent from a frame has no score there; one that is never present scores 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pycocotools.mask as mask_util

from .ytvis_metrics import _intersections, _Track

__all__ = [
    "OCCLUSION_LABEL_SCORES",
    "OCCLUSION_LEVELS",
    "frame_occlusion",
    "grade",
    "instance_occlusion_scores",
    "level_masks",
    "top_half_mean",
]

OCCLUSION_LABEL_SCORES = {"no_occlusion": 0.0, "slight_occlusion": 0.25, "severe_occlusion": 0.75}
# name -> (low, high), inclusive at both ends as the official ranges
OCCLUSION_LEVELS: dict[str, tuple[float, float]] = {
    "slight": (0.0, 0.25),
    "moderate": (0.25, 0.5),
    "heavy": (0.5, 1.0),
}


def top_half_mean(scores: Sequence[float]) -> float:
    """Mean of the highest ceil(n / 2) scores; 0 for none."""
    if not len(scores):
        return 0.0
    ordered = sorted(scores)
    top = ordered[-math.ceil(len(ordered) / 2) :]
    return float(sum(top) / len(top))


def grade(score: float) -> str:
    """The level of an occlusion score (a boundary value takes the lighter level)."""
    for name, (_, high) in OCCLUSION_LEVELS.items():
        if score <= high:
            return name
    return "heavy"


def level_masks(scores: np.ndarray) -> np.ndarray:
    """(L, N) bool: score outside level l's inclusive range (those ground truths are ignored there)."""
    bounds = np.array(list(OCCLUSION_LEVELS.values()))
    return (scores[None, :] < bounds[:, :1]) | (scores[None, :] > bounds[:, 1:])


def frame_occlusion(
    frames: Sequence[np.ndarray], rles: Sequence[Sequence[dict]], areas: Sequence[np.ndarray], size: tuple
) -> list[np.ndarray]:
    """Mask-based frame scores of the instances of one video.

    Args:
        frames: N (n_i,) int arrays, the frames where instance i is present.
        rles: N lists of n_i compressed RLEs (those frames' masks).
        areas: N (n_i,) int arrays, their areas.
        size: (H, W) of the video.

    Returns:
        N (n_i,) float arrays, the score of instance i in each of its frames.
    """
    out = [np.zeros(len(f)) for f in frames]
    flat = [rle for instance in rles for rle in instance]
    if len(frames) < 2 or not flat:
        return out
    owner = np.repeat(np.arange(len(frames)), [len(f) for f in frames])
    frame = np.concatenate(list(frames)).astype(np.int64)
    own = np.concatenate(list(areas)).astype(np.float64)
    xywh = mask_util.toBbox(flat)  # (P, 4)
    # Only the (instance, frame)s whose box meets another instance's box in that frame can cover or be
    # covered: the others score 0.
    corners = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)
    side = np.minimum(corners[:, None, 2:], corners[None, :, 2:]) - np.maximum(
        corners[:, None, :2], corners[None, :, :2]
    )
    meets = (side > 0).all(-1) & (frame[:, None] == frame[None, :]) & (owner[:, None] != owner[None, :])
    hit = np.flatnonzero(meets.any(1))
    if not len(hit):
        return out
    height, width = int(size[0]), int(size[1])
    boxes = mask_util.frPyObjects(np.ascontiguousarray(xywh[hit], np.float64), height, width)
    # Every (instance, frame) as a one-frame track: `_intersections` then gives |box_p & mask_q| for
    # the pairs of the same frame (0 across frames) in a few batched pycocotools calls.
    hit_frames = frame[hit].tolist()
    box_areas = (xywh[hit, 2] * xywh[hit, 3]).astype(np.int64).tolist()
    box_tracks = [
        _Track(f + 1, np.array([f]), [b], np.array([a])) for f, b, a in zip(hit_frames, boxes, box_areas)
    ]
    mask_tracks = [
        _Track(f + 1, np.array([f]), [flat[p]], np.array([int(own[p])])) for f, p in zip(hit_frames, hit)
    ]
    inside = _intersections(box_tracks, mask_tracks, height * width).astype(np.float64)  # (Q, Q)
    inside[owner[hit][:, None] == owner[hit][None, :]] = 0  # an instance does not occlude itself
    covered = np.zeros(len(flat))
    covered[hit] = inside.sum(1)
    box_area = xywh[:, 2] * xywh[:, 3]
    others = np.minimum(covered, np.maximum(box_area - own, 0))
    score = np.divide(others, others + own, out=np.zeros_like(own), where=others + own > 0)
    start = 0
    for i, instance_frames in enumerate(frames):
        out[i] = score[start : start + len(instance_frames)]
        start += len(instance_frames)
    return out


def instance_occlusion_scores(videos: Mapping[Any, Any]) -> dict[Any, float]:
    """{annotation id: occlusion score} of every ground truth of `match_ytvis`'s indexed videos: from
    the annotation's OVIS labels when it has them, from the masks otherwise."""
    scores: dict[Any, float] = {}
    for video in videos.values():
        gts = [g for gts, _ in video.groups.values() for g in gts]
        labelled = [g for g in gts if g.occlusion is not None]
        for g in labelled:
            frame_scores = [OCCLUSION_LABEL_SCORES[label] for label in g.occlusion if label is not None]
            scores[g.ann_id] = top_half_mean(frame_scores)
        unlabelled = [g for g in gts if g.occlusion is None]
        if not unlabelled:
            continue
        tracks = [g.track for g in gts]
        per_frame = frame_occlusion(
            [t.frames for t in tracks], [t.rles for t in tracks], [t.areas for t in tracks], video.size
        )
        for g, values in zip(gts, per_frame):
            if g.occlusion is None:
                scores[g.ann_id] = top_half_mean(values.tolist())
    return scores
