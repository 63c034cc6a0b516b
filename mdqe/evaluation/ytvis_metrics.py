"""YouTube-VIS video instance segmentation metrics, numerically identical to the official API.

The official evaluation (youtubevos/cocoapi, `ytvos.py` + `ytvoseval.py`) is COCO's `segm` evaluation
with videos in place of images. What differs from COCO:

- IoU is video-level: intersections and unions are summed over the frames of the two sequences
  (frames are paired up to the shorter sequence); a frame whose mask is missing (None, or any falsy
  value) is empty. A pair with an empty union has IoU 0. Crowd ground truth uses this same IoU.
- An instance's area is the mean of its non-zero per-frame areas (0 when there are none). Ground truth
  takes them from the annotation's "areas" list, results from their masks. Area ranges (all, small,
  medium, large) are [0, 1e10], [0, 128^2], [128^2, 256^2], [256^2, 1e10], inclusive at both ends.
- maxDets (1, 10, 100) count predictions per video and category.

Everything else is COCOeval: greedy matching in score order (stable sort), crowd ground truth ignored
and matchable any number of times, the precision envelope sampled at 101 recall thresholds, -1 where a
setting has no ground truth, means over the defined entries. Two behaviours of the official code are kept
because they change numbers: a prediction matched to a ground truth whose id is 0 counts as unmatched,
and ground truth uses the stored "areas" rather than its masks' areas.

The official code loops over frames and pairs in Python. Here one `pycocotools.mask.iou` call computes
every intersection of a video and category at once: the frames of a sequence are flattened H*W-pixel
masks, and giving frame f's masks a shape (rows, cols) of its own (one factorisation of H*W per frame)
leaves every area and same-frame intersection unchanged while pycocotools skips each cross-frame pair
(it does not intersect masks of different shapes).

This module imports only numpy and pycocotools, so command-line tools load it quickly.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pycocotools.mask as mask_util

__all__ = [
    "AREA_RANGES",
    "IOU_THRESHOLDS",
    "MAX_DETS",
    "METRIC_NAMES",
    "RECALL_THRESHOLDS",
    "GroupMatch",
    "YTVISEvalResult",
    "YTVISMatching",
    "evaluate_ytvis",
    "format_summary",
    "match_ytvis",
    "metrics_to_json",
    "summarize_matching",
    "video_iou",
]

logger = logging.getLogger(__name__)

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)
MAX_DETS = (1, 10, 100)
AREA_RANGES = {
    "all": (0.0, 1e5**2),
    "small": (0.0, 128.0**2),
    "medium": (128.0**2, 256.0**2),
    "large": (256.0**2, 1e5**2),
}
METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10")

# The 12 summary numbers: (average precision?, IoU threshold or None for the mean, area range, maxDets).
_SUMMARY = (
    (True, None, "all", 100),
    (True, 0.5, "all", 100),
    (True, 0.75, "all", 100),
    (True, None, "small", 100),
    (True, None, "medium", 100),
    (True, None, "large", 100),
    (False, None, "all", 1),
    (False, None, "all", 10),
    (False, None, "all", 100),
    (False, None, "small", 100),
    (False, None, "medium", 100),
    (False, None, "large", 100),
)
# Where each of METRIC_NAMES sits in the summary.
_METRIC_INDEX = dict(zip(METRIC_NAMES, range(8)))
# The official matcher caps the threshold just below 1 so that IoU 1 can still match.
_MATCH_THRESHOLDS = np.minimum(IOU_THRESHOLDS, 1 - 1e-10)
# Upper bound on the dt x gt mask pairs (cross-frame ones included) of one pycocotools.iou call.
_MAX_PAIRS_PER_CALL = 1 << 20
# The fixed cost of one pycocotools.iou call, in box tests of mask pairs (measured: ~30 us a call,
# ~30 ns a pair): sets how many frames one call takes (see `frame_intersections`).
_CALL_COST_IN_PAIRS = 1024
# pycocotools.mask.area (2.0.x under numpy 2) fails on lists of more than 255 masks.
_AREA_BATCH = 255


@dataclass(frozen=True)
class YTVISEvalResult:
    """Accumulated evaluation.

    Attributes:
        stats: (12,) the official summary (fractions; -1 where no ground truth defines the setting).
        precision: (T=10, R=101, K, A=4, M=3) interpolated precision, -1 where undefined.
        recall: (T, K, A, M) final recall, -1 where undefined.
        category_ids: (K,) dataset category ids of the K axis.
    """

    stats: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    category_ids: tuple[int, ...]

    @property
    def metrics(self) -> dict[str, float]:
        """AP, AP50, AP75, APs, APm, APl, AR1, AR10 in percent; NaN where the official value is -1."""
        return {
            name: float(self.stats[i] * 100) if self.stats[i] >= 0 else math.nan
            for name, i in _METRIC_INDEX.items()
        }


@dataclass
class _Track:
    """The present (truthy) frames of one instance's mask sequence."""

    length: int  # number of frame entries, present or not
    frames: np.ndarray  # (n,) int64 indices of the present frames
    rles: list[dict]  # n compressed RLE dicts
    areas: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (n,) set by _fill_areas


@dataclass
class _Instance:
    category_id: int
    track: _Track
    score: float = 0.0  # predictions
    index: int = -1  # predictions: position in the results list
    ann_id: Any = None  # ground truth
    iscrowd: bool = False  # ground truth
    stored_mean_area: float = math.nan  # ground truth: mean of its "areas"; NaN: none stored
    occlusion: Sequence[Any] | None = None  # ground truth: OVIS per-frame occlusion labels, if any


_COMPRESSED = {str, bytes}


def _track(segms: Sequence[Any], size: tuple[int, int], where: str) -> _Track:
    """A mask sequence (compressed / uncompressed RLE, polygons; falsy = absent) as a `_Track`."""
    frames = [f for f, m in enumerate(segms) if m]
    rles = [segms[f] for f in frames]
    try:
        try:
            compressed = {type(m["counts"]) for m in rles} <= _COMPRESSED
        except (KeyError, TypeError):
            compressed = False
        if not compressed:
            rles = _to_compressed(rles, size)
        expected = list(size)
        bad = [i for i, m in enumerate(rles) if m["size"] != expected and list(m["size"]) != expected]
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{where}: expected per-frame RLE dicts, polygons or null ({e!r})") from e
    if bad:
        raise ValueError(
            f"{where}, frame {frames[bad[0]]}: mask size {list(rles[bad[0]]['size'])} differs from the "
            f"video's (height, width) {expected}"
        )
    return _Track(len(segms), np.array(frames, np.int64), rles)


def _to_compressed(masks: list, size: tuple[int, int]) -> list[dict]:
    """Polygons and uncompressed RLE as compressed RLE (batched); compressed RLE as is."""
    out = list(masks)
    uncompressed = [i for i, m in enumerate(masks) if isinstance(m, dict) and isinstance(m["counts"], list)]
    if uncompressed:
        for i, rle in zip(uncompressed, mask_util.frPyObjects([masks[i] for i in uncompressed], *size)):
            out[i] = rle
    for i, m in enumerate(masks):
        if isinstance(m, list):  # polygons
            out[i] = mask_util.merge(mask_util.frPyObjects(m, *size))
        elif not (isinstance(m, dict) and isinstance(m["counts"], (str, bytes, list)) and "size" in m):
            raise ValueError(f"unreadable mask {m!r:.60}")
    return out


def _fill_areas(tracks: Sequence[_Track]) -> None:
    """Per-frame areas of every track, with batched pycocotools calls."""
    rles = [rle for track in tracks for rle in track.rles]
    areas = _areas(rles)
    start = 0
    for track in tracks:
        track.areas = areas[start : start + len(track.rles)]
        start += len(track.rles)


@functools.lru_cache(maxsize=64)
def _frame_shapes(num_pixels: int) -> tuple[list[int], ...]:
    """Every (rows, cols) with rows * cols == num_pixels: one distinct mask shape per frame of a chunk."""
    small = [k for k in range(1, math.isqrt(num_pixels) + 1) if num_pixels % k == 0]
    cols = small + [num_pixels // k for k in reversed(small) if k * k != num_pixels]
    return tuple([num_pixels // c, c] for c in cols)


def _flat(tracks: Sequence[_Track]) -> tuple[np.ndarray, np.ndarray, np.ndarray, list]:
    """(track index, frame, area, counts) of every present frame of `tracks`."""
    index = np.repeat(np.arange(len(tracks)), [len(t.frames) for t in tracks])
    frames = np.concatenate([t.frames for t in tracks]) if tracks else np.zeros(0, np.int64)
    areas = np.concatenate([t.areas for t in tracks]) if tracks else np.zeros(0, np.int64)
    return index, frames, areas, [rle["counts"] for t in tracks for rle in t.rles]


def _intersections(dt_tracks: Sequence[_Track], gt_tracks: Sequence[_Track], num_pixels: int) -> np.ndarray:
    """(D, G) int64 intersection areas summed over frames, of masks with `num_pixels` pixels."""
    num_dt, num_gt = len(dt_tracks), len(gt_tracks)
    dt_index, dt_frame, dt_area, dt_counts = _flat(dt_tracks)
    gt_index, gt_frame, _, gt_counts = _flat(gt_tracks)
    rows, cols, pixels = frame_intersections(dt_frame, dt_area, dt_counts, gt_frame, gt_counts, num_pixels)
    pair = dt_index[rows] * num_gt + gt_index[cols]
    totals = np.bincount(pair, weights=pixels, minlength=num_dt * num_gt)
    return np.rint(totals).astype(np.int64).reshape(num_dt, num_gt)


def frame_intersections(
    dt_frame: np.ndarray,
    dt_area: np.ndarray,
    dt_counts: Sequence[Any],
    gt_frame: np.ndarray,
    gt_counts: Sequence[Any],
    num_pixels: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Intersections of the same-frame pairs of two lists of masks with `num_pixels` pixels each.

    Args:
        dt_frame, gt_frame: (P,), (Q,) int frame of each mask.
        dt_area: (P,) int area of each first-list mask.
        dt_counts, gt_counts: P and Q compressed RLE counts.

    Returns:
        (rows, cols, pixels): the pairs (index into the first list, into the second) of one frame with
        a non-empty intersection, and its pixels (float64, integral).
    """
    empty = np.zeros(0, np.int64)
    if len(dt_frame) == 0 or len(gt_frame) == 0:
        return empty, empty, np.zeros(0, np.float64)
    shapes = _frame_shapes(num_pixels)
    # A chunk of c frames holds ~c * m first-list and c * n second-list masks (m, n: masks per frame),
    # so one call makes (c * m) x (c * n) box tests, c times the c * m * n same-frame ones: per frame,
    # c * m * n wasted tests against _CALL_COST_IN_PAIRS / c of call overhead, least at
    # c = sqrt(_CALL_COST_IN_PAIRS / (m * n)).
    num_frames = int(max(dt_frame.max(), gt_frame.max())) + 1
    per_frame = len(dt_frame) * len(gt_frame) / num_frames**2  # m * n
    best = math.sqrt(_CALL_COST_IN_PAIRS / per_frame)
    # and at most _MAX_PAIRS_PER_CALL tests a call: c * c * m * n of them
    bound = math.sqrt(_MAX_PAIRS_PER_CALL / per_frame)
    chunk = max(1, min(len(shapes), int(best), int(bound)))
    dt_chunk, gt_chunk = dt_frame // chunk, gt_frame // chunk
    out_rows, out_cols, out_pixels = [], [], []
    for c in np.intersect1d(dt_chunk, gt_chunk):
        di = np.flatnonzero(dt_chunk == c)
        gi = np.flatnonzero(gt_chunk == c)
        dts = [
            {"size": shapes[f], "counts": dt_counts[i]}
            for i, f in zip(di.tolist(), (dt_frame[di] % chunk).tolist())
        ]
        gts = [
            {"size": shapes[f], "counts": gt_counts[i]}
            for i, f in zip(gi.tolist(), (gt_frame[gi] % chunk).tolist())
        ]
        # iscrowd=1 makes the value intersection / dt area, from which the integer intersection is exact.
        ratio = np.asarray(mask_util.iou(dts, gts, np.ones(len(gts), np.uint8)))
        rows, cols = np.nonzero((ratio > 0) & (dt_frame[di][:, None] == gt_frame[gi][None, :]))
        out_rows.append(di[rows])
        out_cols.append(gi[cols])
        out_pixels.append(np.rint(ratio[rows, cols] * dt_area[di[rows]]))
    if not out_rows:
        return empty, empty, np.zeros(0, np.float64)
    return np.concatenate(out_rows), np.concatenate(out_cols), np.concatenate(out_pixels)


def _areas(rles: Sequence[dict]) -> np.ndarray:
    """(N,) int64 areas of compressed RLEs."""
    batches = [mask_util.area(list(rles[i : i + _AREA_BATCH])) for i in range(0, len(rles), _AREA_BATCH)]
    return np.concatenate(batches).astype(np.int64) if batches else np.zeros(0, np.int64)


def _cumulative_areas(tracks: Sequence[_Track], num_frames: int) -> np.ndarray:
    """(N, num_frames + 1) int64: entry [i, n] is the total area of track i over frames [0, n)."""
    dense = np.zeros((len(tracks), num_frames + 1), np.int64)
    index, frames, areas, _ = _flat(tracks)
    dense[index, frames + 1] = areas
    return np.cumsum(dense, axis=1)


def _track_ious(dt_tracks: Sequence[_Track], gt_tracks: Sequence[_Track], num_pixels: int) -> np.ndarray:
    """(D, G) float64 video IoU; frames are paired up to the shorter sequence, as the official `zip`."""
    num_frames = max(t.length for t in (*dt_tracks, *gt_tracks))
    paired = np.minimum(
        np.array([t.length for t in dt_tracks], np.int64)[:, None],
        np.array([t.length for t in gt_tracks], np.int64)[None, :],
    )
    intersections = _intersections(dt_tracks, gt_tracks, num_pixels)
    unions = (
        np.take_along_axis(_cumulative_areas(dt_tracks, num_frames), paired, 1)
        + np.take_along_axis(_cumulative_areas(gt_tracks, num_frames), paired.T, 1).T
        - intersections
    )
    ious = np.zeros(unions.shape, np.float64)
    np.divide(intersections, unions, out=ious, where=unions > 0)
    return ious


def video_iou(
    dt_masks: Sequence[Sequence[dict | None]], gt_masks: Sequence[Sequence[dict | None]]
) -> np.ndarray:
    """Video-level IoU of every prediction with every ground truth, as the official API computes it.

    Args:
        dt_masks: D sequences of per-frame compressed RLE dicts (counts bytes or str), None where absent.
        gt_masks: G such sequences. All masks share one size (H, W).

    Returns:
        (D, G) float64: intersections summed over paired frames / unions summed likewise; 0 for an
        empty union.
    """
    sizes = {tuple(m["size"]) for seq in (*dt_masks, *gt_masks) for m in seq if m}
    if len(sizes) > 1:
        raise ValueError(f"video_iou: masks of different sizes {sorted(sizes)}")
    if not dt_masks or not gt_masks:
        return np.zeros((len(dt_masks), len(gt_masks)), np.float64)
    size = sizes.pop() if sizes else (1, 1)
    dt_tracks = [_track(seq, size, f"video_iou: prediction {i}") for i, seq in enumerate(dt_masks)]
    gt_tracks = [_track(seq, size, f"video_iou: ground truth {i}") for i, seq in enumerate(gt_masks)]
    _fill_areas([*dt_tracks, *gt_tracks])
    return _track_ious(dt_tracks, gt_tracks, int(size[0]) * int(size[1]))


def _mean_area(areas: Iterable[Any]) -> float:
    """Mean of the truthy per-frame areas, 0 when none (the official `avg_area`)."""
    nonzero = [a for a in areas if a]
    return float(np.array(nonzero).mean()) if nonzero else 0.0


def _mean_mask_area(track: _Track) -> float:
    """`_mean_area` of a track's mask areas; integer sums are exact, so this is numpy's mean too."""
    nonzero = track.areas[track.areas > 0]
    return float(nonzero.sum()) / len(nonzero) if len(nonzero) else 0.0


def _match(
    ious: np.ndarray, gt_ignore: np.ndarray, gt_crowd: np.ndarray, gt_zero_id: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """COCO greedy matching for all settings (area ranges, occlusion levels) and IoU thresholds at once.

    Args:
        ious: (D, G) with predictions in descending score order (stable).
        gt_ignore: (A, G) bool, ignored ground truth per setting (crowd, area or occlusion out of range).
        gt_crowd: (G,) bool; crowd ground truth can be matched any number of times.
        gt_zero_id: (G,) bool, ground truth whose annotation id is 0 (the official code then records
            the match as no match).

    Returns:
        match (A, T, D) int64: index of the matched ground truth, -1 when unmatched;
        credited (A, T, D) bool: matched and recorded as a match (id != 0);
        on_ignored (A, T, D) bool: matched to an ignored ground truth.
    """
    num_dt, num_gt = ious.shape
    shape = (gt_ignore.shape[0], len(_MATCH_THRESHOLDS))
    match = np.full((*shape, num_dt), -1, np.int64)
    credited = np.zeros(match.shape, bool)
    on_ignored = np.zeros_like(credited)
    if num_gt == 0:
        return match, credited, on_ignored
    taken = np.zeros((*shape, num_gt), bool)
    ignore = gt_ignore[:, None, :]
    for d in np.flatnonzero(ious.max(1, initial=0) >= _MATCH_THRESHOLDS[0]):
        free = (ious[d] >= _MATCH_THRESHOLDS[:, None]) & (~taken | gt_crowd)
        # A regular ground truth is preferred; an ignored one is matched only when no regular one can be.
        regular = free & ~ignore
        candidates = np.where(regular.any(-1, keepdims=True), regular, free & ignore)
        found = candidates.any(-1)
        # Best IoU, ties to the last candidate, as the official scan (which replaces on >=) does.
        best = num_gt - 1 - np.where(candidates, ious[d], -1.0)[..., ::-1].argmax(-1)
        a_idx, t_idx = np.nonzero(found)
        g_idx = best[a_idx, t_idx]
        taken[a_idx, t_idx, g_idx] = True
        match[a_idx, t_idx, d] = g_idx
        credited[a_idx, t_idx, d] = ~gt_zero_id[g_idx]
        on_ignored[a_idx, t_idx, d] = gt_ignore[a_idx, g_idx]
    return match, credited, on_ignored


def _out_of_range(mean_areas: np.ndarray) -> np.ndarray:
    """(A, N) bool: mean area outside each area range."""
    bounds = np.array(list(AREA_RANGES.values()))
    return (mean_areas[None, :] < bounds[:, :1]) | (mean_areas[None, :] > bounds[:, 1:])


@dataclass
class _Video:
    """One video: its frame size, and its instances by category (file order)."""

    size: tuple[int, int]  # (height, width)
    groups: dict[int, tuple[list[_Instance], list[_Instance]]] = field(default_factory=dict)  # gt, dt


@dataclass
class GroupMatch:
    """The matching of one video's predictions of one category: what accumulation and the error
    analysis need. S settings: the four area ranges, then any extra ones (occlusion levels)."""

    scores: np.ndarray  # (D,) descending (stable), at most 100
    credited: np.ndarray  # (S, T, D) bool: matched and counted as a match
    ignored: np.ndarray  # (S, T, D) bool
    gt_ignore: np.ndarray  # (S, G) bool
    match: np.ndarray  # (S, T, D) int64: index into `gts` of the matched ground truth, -1 if none
    ious: np.ndarray  # (D, G) video IoU
    gts: list[_Instance]
    dts: list[_Instance]  # in `scores` order
    video_id: Any = None
    category_id: int = -1


@dataclass
class YTVISMatching:
    """Every (video, category) group matched; `per_category[k]` holds category_ids[k]'s groups."""

    videos: dict[Any, _Video]
    category_ids: tuple[int, ...]
    per_category: list[list[GroupMatch]]


def _index(gt: Mapping[str, Any], results: Sequence[Mapping[str, Any]]) -> tuple[dict[Any, _Video], list]:
    """Ground truth and results by video and category, with mask areas; sorted category ids."""
    videos: dict[Any, _Video] = {}
    sizes: dict[Any, tuple[int, int]] = {}
    for video in gt["videos"]:
        sizes[video["id"]] = (int(video["height"]), int(video["width"]))
        videos[video["id"]] = _Video(size=sizes[video["id"]])
    category_ids = sorted({c["id"] for c in gt["categories"]})
    known_categories = set(category_ids)
    tracks = []
    seen_ids = set()
    for ann in gt.get("annotations") or []:
        if ann["id"] in seen_ids:
            raise ValueError(f"ground truth: annotation id {ann['id']} appears twice")
        seen_ids.add(ann["id"])
        video_id, category_id = ann["video_id"], ann["category_id"]
        if video_id not in videos or category_id not in known_categories:
            continue
        where = f"ground truth annotation {ann['id']} (video {video_id})"
        track = _track(ann["segmentations"], sizes[video_id], where)
        tracks.append(track)
        instance = _Instance(
            category_id,
            track,
            ann_id=ann["id"],
            iscrowd=bool(ann.get("iscrowd", 0)),
            stored_mean_area=_mean_area(ann["areas"]) if "areas" in ann else math.nan,
            occlusion=ann.get("occlusion"),
        )
        videos[video_id].groups.setdefault(category_id, ([], []))[0].append(instance)
    dropped = 0
    for i, res in enumerate(results):
        video_id, category_id = res["video_id"], res["category_id"]
        if video_id not in videos:
            raise ValueError(f"results[{i}]: video_id {video_id} is not a video of the ground truth")
        if category_id not in known_categories:
            dropped += 1
            continue
        track = _track(res["segmentations"], sizes[video_id], f"results[{i}] (video {video_id})")
        tracks.append(track)
        videos[video_id].groups.setdefault(category_id, ([], []))[1].append(
            _Instance(category_id, track, score=res["score"], index=i)
        )
    if dropped:
        logger.warning("%d results have a category_id that is not in the ground truth; ignored", dropped)
    _fill_areas(tracks)
    return videos, category_ids


def _evaluate_group(
    gts: Sequence[_Instance], dts: Sequence[_Instance], video: _Video, extra_ignore: np.ndarray | None
) -> GroupMatch:
    """Match one video's predictions of one category.

    Args:
        extra_ignore: (E, G) bool or None: E more settings in the "all" area range, each ignoring these
            ground truths besides the crowd (the occlusion levels); predictions are ignored in them only
            when matched to an ignored ground truth, as the official OVIS code does.
    """
    order = np.argsort([-d.score for d in dts], kind="mergesort")[: MAX_DETS[-1]]
    dts = [dts[i] for i in order]
    # Ground truth without stored "areas" uses its masks' areas.
    gt_mean = np.array(
        [_mean_mask_area(g.track) if math.isnan(g.stored_mean_area) else g.stored_mean_area for g in gts],
        np.float64,
    )
    gt_crowd = np.array([g.iscrowd for g in gts], bool)
    gt_ignore = gt_crowd[None, :] | _out_of_range(gt_mean)
    dt_out = _out_of_range(np.array([_mean_mask_area(d.track) for d in dts], np.float64))
    if extra_ignore is not None:
        gt_ignore = np.concatenate([gt_ignore, gt_ignore[:1] | extra_ignore])
        dt_out = np.concatenate([dt_out, np.zeros((len(extra_ignore), len(dts)), bool)])
    if gts and dts:
        ious = _track_ious([d.track for d in dts], [g.track for g in gts], video.size[0] * video.size[1])
    else:
        ious = np.zeros((len(dts), len(gts)))
    match, credited, on_ignored = _match(
        ious, gt_ignore, gt_crowd, np.array([g.ann_id == 0 for g in gts], bool)
    )
    # Unmatched predictions outside the area range are ignored too (unmatched includes id-0 matches).
    ignored = ((match >= 0) & on_ignored) | (~credited & dt_out[:, None, :])
    scores = np.array([d.score for d in dts], np.float64).reshape(-1)
    return GroupMatch(scores, credited, ignored, gt_ignore, match, ious, list(gts), dts)


def _accumulate(
    per_category: Sequence[Sequence[GroupMatch]],
    settings: Sequence[int] = tuple(range(len(AREA_RANGES))),
    max_dets: Sequence[int] = MAX_DETS,
) -> tuple[np.ndarray, np.ndarray]:
    """Precision (T, R, K, S, M) and recall (T, K, S, M) from per-(video, category) match records, for
    the given setting rows of the records (default: the four area ranges) and maxDets."""
    num_t, num_r, num_k = len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS), len(per_category)
    precision = -np.ones((num_t, num_r, num_k, len(settings), len(max_dets)))
    recall = -np.ones((num_t, num_k, len(settings), len(max_dets)))
    rows: slice | list[int] = list(settings)
    if rows == list(range(rows[0], rows[-1] + 1)):
        rows = slice(rows[0], rows[-1] + 1)  # a view, not a copy, of each record's settings
    for k, records in enumerate(per_category):
        if not records:
            continue
        num_positive = sum(np.count_nonzero(~rec.gt_ignore[rows], axis=1) for rec in records)  # (S,)
        for m, max_det in enumerate(max_dets):
            scores = np.concatenate([rec.scores[:max_det] for rec in records])
            order = np.argsort(-scores, kind="mergesort")
            credited = np.concatenate([rec.credited[rows, :, :max_det] for rec in records], -1)[..., order]
            ignored = np.concatenate([rec.ignored[rows, :, :max_det] for rec in records], -1)[..., order]
            for a in range(len(settings)):
                if num_positive[a] == 0:
                    continue
                tp = np.cumsum(credited[a] & ~ignored[a], axis=1).astype(np.float64)
                fp = np.cumsum(~credited[a] & ~ignored[a], axis=1).astype(np.float64)
                recall[:, k, a, m] = tp[:, -1] / num_positive[a] if tp.shape[1] else 0
                precision[:, :, k, a, m] = _interpolated_precision(tp, fp, num_positive[a])
    return precision, recall


def _interpolated_precision(tp: np.ndarray, fp: np.ndarray, num_positive: int) -> np.ndarray:
    """(T, R) COCO precision at the recall thresholds from cumulative (T, D) true / false positives."""
    num_det = tp.shape[1]
    if not num_det:
        return np.zeros((tp.shape[0], len(RECALL_THRESHOLDS)))
    rc = tp / num_positive
    # Precision envelope: the best precision at this recall or any higher one.
    pr = np.maximum.accumulate((tp / (fp + tp + np.spacing(1)))[:, ::-1], axis=1)[:, ::-1]
    out = np.zeros((tp.shape[0], len(RECALL_THRESHOLDS)))
    for t in range(tp.shape[0]):
        idx = np.searchsorted(rc[t], RECALL_THRESHOLDS, side="left")
        out[t] = np.where(idx < num_det, pr[t, np.minimum(idx, num_det - 1)], 0)
    return out


def _summarize(precision: np.ndarray, recall: np.ndarray) -> np.ndarray:
    """The 12 summary numbers: means over the defined (> -1) entries, -1 when there are none."""
    labels = list(AREA_RANGES)
    stats = np.zeros(len(_SUMMARY))
    for i, (is_ap, iou, area, max_det) in enumerate(_SUMMARY):
        values = precision if is_ap else recall
        if iou is not None:
            values = values[np.where(iou == IOU_THRESHOLDS)[0]]
        a, m = [labels.index(area)], [MAX_DETS.index(max_det)]
        values = values[:, :, :, a, m] if is_ap else values[:, :, a, m]
        defined = values[values > -1]
        stats[i] = np.mean(defined) if len(defined) else -1
    return stats


def evaluate_ytvis(gt: Mapping[str, Any], results: Sequence[Mapping[str, Any]]) -> YTVISEvalResult:
    """Evaluate results against a ground truth, giving exactly the official YouTube-VIS API's numbers.

    Args:
        gt: a YouTube-VIS annotation dict ("videos" with id/height/width, "categories" with id,
            "annotations" with id, video_id, category_id, iscrowd, segmentations (per-frame RLE,
            uncompressed RLE or polygons, null where absent) and areas (its masks' areas when absent;
            the official API requires them)).
        results: CodaLab entries {"video_id", "category_id", "score", "segmentations"}; may be empty
            (then every defined metric is 0). A video_id that is not in `gt` is an error; a
            category_id that is not in `gt` is ignored, as in the official code.

    Returns:
        The accumulated evaluation.
    """
    return summarize_matching(match_ytvis(gt, results))


def match_ytvis(
    gt: Mapping[str, Any],
    results: Sequence[Mapping[str, Any]],
    extra_gt_ignore: Callable[[Mapping[Any, _Video]], Mapping[Any, np.ndarray]] | None = None,
) -> YTVISMatching:
    """Index and match every (video, category) group as the official API does (see `evaluate_ytvis`).

    Args:
        extra_gt_ignore: optional; given the indexed videos, returns {annotation id: (E,) bool} for
            every ground truth: E extra settings (rows 4.. of each record, in the "all" area range)
            that ignore those ground truths (the occlusion levels).
    """
    videos, category_ids = _index(gt, results)
    extra = extra_gt_ignore(videos) if extra_gt_ignore is not None else None
    num_extra = len(next(iter(extra.values()))) if extra else 0
    slots = {c: k for k, c in enumerate(category_ids)}
    per_category: list[list[GroupMatch]] = [[] for _ in category_ids]
    for video_id in sorted(videos):
        video = videos[video_id]
        for category_id, (gts, dts) in video.groups.items():
            rows = None
            if extra is not None:
                rows = np.array([extra[g.ann_id] for g in gts], bool).reshape(len(gts), num_extra).T
            record = _evaluate_group(gts, dts, video, rows)
            record.video_id, record.category_id = video_id, category_id
            per_category[slots[category_id]].append(record)
    return YTVISMatching(videos, tuple(category_ids), per_category)


def summarize_matching(matching: YTVISMatching) -> YTVISEvalResult:
    """The official accumulation and summary of a `match_ytvis` matching."""
    precision, recall = _accumulate(matching.per_category)
    return YTVISEvalResult(_summarize(precision, recall), precision, recall, matching.category_ids)


def format_summary(result: YTVISEvalResult) -> str:
    """The 12 summary lines in the official printout's layout, then the eight metrics in percent."""
    lines = []
    for value, (is_ap, iou, area, max_det) in zip(result.stats, _SUMMARY):
        title, kind = ("Average Precision", "(AP)") if is_ap else ("Average Recall", "(AR)")
        iou_text = f"{IOU_THRESHOLDS[0]:0.2f}:{IOU_THRESHOLDS[-1]:0.2f}" if iou is None else f"{iou:0.2f}"
        setting = f"IoU={iou_text:<9} | area={area:>6s} | maxDets={max_det:>3d}"
        lines.append(f" {title:<18} {kind} @[ {setting} ] = {value:0.3f}")
    metrics = result.metrics
    lines.append("| " + " | ".join(f"{name:>6}" for name in METRIC_NAMES) + " |")
    lines.append("|" + "|".join(["-" * 8] * len(METRIC_NAMES)) + "|")
    lines.append("| " + " | ".join(f"{metrics[name]:6.3f}" for name in METRIC_NAMES) + " |")
    return "\n".join(lines)


def metrics_to_json(metrics: Mapping[str, float]) -> str:
    """One JSON object line; undefined (NaN) metrics become null."""
    return json.dumps({k: (None if math.isnan(v) else v) for k, v in metrics.items()})
