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

from .ytvis_metrics import frame_intersections

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
    flat = [rle for instance in rles for rle in instance]
    if len(frames) < 2 or not flat:
        return [np.zeros(len(f)) for f in frames]
    owner = np.repeat(np.arange(len(frames)), [len(f) for f in frames])
    frame = np.concatenate(list(frames)).astype(np.int64)
    own = np.concatenate(list(areas)).astype(np.float64)
    xywh = mask_util.toBbox(flat)  # (P, 4)
    covered = np.zeros(len(flat))
    hit = np.flatnonzero(_box_meets_another(owner, frame, xywh, len(frames)))
    if len(hit):
        covered[hit] = _covered_pixels(hit, owner, frame, xywh, flat, int(size[0]), int(size[1]))
    others = np.minimum(covered, np.maximum(xywh[:, 2] * xywh[:, 3] - own, 0))
    score = np.divide(others, others + own, out=np.zeros_like(own), where=others + own > 0)
    return np.split(score, np.cumsum([len(f) for f in frames])[:-1])


def _box_meets_another(owner: np.ndarray, frame: np.ndarray, xywh: np.ndarray, num: int) -> np.ndarray:
    """(P,) bool: the box of instance-frame p overlaps another instance's box in that frame (only those
    can be covered; the others score 0)."""
    num_frames = int(frame.max()) + 1
    boxes = np.full((num, num_frames, 4), np.nan)
    boxes[owner, frame, :2] = xywh[:, :2]
    boxes[owner, frame, 2:] = xywh[:, :2] + xywh[:, 2:]
    side = np.minimum(boxes[:, None, :, 2:], boxes[None, :, :, 2:]) - np.maximum(
        boxes[:, None, :, :2], boxes[None, :, :, :2]
    )  # (N, N, T, 2); NaN where either is absent
    with np.errstate(invalid="ignore"):
        meets = (side > 0).all(-1)
    meets[np.arange(num), np.arange(num)] = False
    return meets.any(1)[owner, frame]


def _covered_pixels(
    hit: np.ndarray,
    owner: np.ndarray,
    frame: np.ndarray,
    xywh: np.ndarray,
    flat: Sequence[dict],
    height: int,
    width: int,
) -> np.ndarray:
    """(Q,) pixels of the other instances' masks inside the box of each instance-frame of `hit`."""
    boxes = mask_util.frPyObjects(np.ascontiguousarray(xywh[hit], np.float64), height, width)
    box_area = (xywh[hit, 2] * xywh[hit, 3]).astype(np.int64)
    # |box_p & mask_q| for the same-frame pairs of the instance-frames of `hit`
    rows, cols, pixels = frame_intersections(
        frame[hit], box_area, [b["counts"] for b in boxes],
        frame[hit], [flat[p]["counts"] for p in hit.tolist()], height * width,
    )  # fmt: skip
    other = owner[hit[rows]] != owner[hit[cols]]  # an instance does not occlude itself
    return np.bincount(rows[other], weights=pixels[other], minlength=len(hit))


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
