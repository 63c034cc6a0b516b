"""COCO run-length encoding: binary masks to RLE (the one implementation of the package), and the checks
that make a stranger's RLE or polygon safe to hand to pycocotools.

pycocotools trusts its input: `decode` writes the run lengths of an RLE into an (H, W) buffer without
checking that they add up to H * W (longer runs write past the buffer), `merge` allocates H * W counts,
and polygons are rasterised in steps along their boundary (a boundary of 1e9 pixels allocates tens of
gigabytes). So every segmentation read from a file is checked first (`segmentation_problems`): a frame
size of at most MAX_MASK_PIXELS pixels, RLE run lengths that decode to exactly the frame, polygons of
finite coordinates within MAX_POLYGON_COORDINATE and a boundary of at most MAX_POLYGON_LENGTH pixels.
Each limit can be raised with the environment variable MDQE_<NAME> (`mdqe.utils.bounded_io.limit`).

numpy and pycocotools only (no torch), so that the torch-free evaluation code can use it too.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pycocotools.mask as mask_util

from .bounded_io import limit

__all__ = [
    "MAX_MASK_PIXELS",
    "MAX_POLYGON_COORDINATE",
    "MAX_POLYGON_LENGTH",
    "encode_mask",
    "encode_masks",
    "frame_size_problem",
    "polygon_problem",
    "rle_problems",
    "rle_string_problem",
    "rle_structure_problem",
    "segmentation_problems",
]

# 8192 x 8192: an 8K video frame fits; pycocotools' `merge` allocates 4 bytes per pixel.
MAX_MASK_PIXELS = 1 << 26
# pycocotools rasterises 5 points per pixel of a polygon's boundary, about 16 bytes each.
MAX_POLYGON_LENGTH = 1 << 22
# pycocotools scales coordinates by 5 into a C int.
MAX_POLYGON_COORDINATE = 1 << 24
# A run length is at most 7 characters of 5 bits (a 32-bit count and its sign); pycocotools shifts a
# C long by 5 bits per character, which is undefined past that.
_MAX_RUN_CHARS = 7


def encode_mask(mask: np.ndarray, text: bool = False) -> dict:
    """One (H, W) binary mask (bool or 0/1) -> {"size": [H, W], "counts": bytes}, or with `text` the counts
    as an ASCII str (for JSON files)."""
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    if text:
        rle["counts"] = rle["counts"].decode("ascii")
    return rle


def encode_masks(masks: np.ndarray) -> list[dict | None]:
    """(n, H, W) binary masks -> n RLE dicts (bytes counts), None for an empty mask.

    All non-empty masks are encoded in one pycocotools call.
    """
    masks = np.asarray(masks)
    nonempty = masks.reshape(len(masks), -1).any(axis=1)
    rles: list[dict | None] = [None] * len(masks)
    keep = np.flatnonzero(nonempty)
    if len(keep):
        stacked = np.asfortranarray(masks[keep].transpose(1, 2, 0).astype(np.uint8))
        for i, rle in zip(keep.tolist(), mask_util.encode(stacked)):
            rles[i] = rle
    return rles


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def frame_size_problem(height: Any, width: Any) -> str | None:
    """Why (`height`, `width`) is not a frame size masks can be decoded at, or None: both positive
    integers, at most MAX_MASK_PIXELS pixels in all."""
    if not (_is_int(height) and _is_int(width)):
        return f"has height / width {height!r:.40} / {width!r:.40}, not integers"
    if height <= 0 or width <= 0:
        return f"has height x width {height} x {width}, not positive"
    cap = limit("MAX_MASK_PIXELS", MAX_MASK_PIXELS)
    if height * width > cap:
        return (
            f"has {height} x {width} = {height * width:,} pixels per frame, past the limit {cap:,} "
            "(raise it with the environment variable MDQE_MAX_MASK_PIXELS)"
        )
    return None


def _decode_runs(codes: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(total pixels, smallest run, characters of the longest run) of each of the concatenated RLE strings
    (`codes`: their characters minus 48, every string non-empty and ending with a final chunk; `lengths`:
    characters per string). Runs of more than `_MAX_RUN_CHARS` characters give meaningless totals."""
    n = codes.size
    last = (codes & 0x20) == 0  # the final 5-bit chunk of each run length
    is_start = np.empty(n, dtype=bool)
    is_start[0], is_start[1:] = True, last[:-1]
    chars = np.arange(n, dtype=np.int64)
    position = chars - np.maximum.accumulate(np.where(is_start, chars, 0))  # chunk index within its run
    string_starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    longest = np.maximum.reduceat(position, string_starts) + 1
    position = np.minimum(position, _MAX_RUN_CHARS)  # keeps the shifts below defined
    chunks = (codes & 0x1F).astype(np.int64)
    later = np.flatnonzero(position)  # most run lengths fit one chunk: shift only the others
    chunks[later] <<= 5 * position[later]
    values = np.add.reduceat(chunks, np.flatnonzero(is_start))
    ends = np.flatnonzero(last)
    negative = (codes[ends] & 0x10) != 0
    values[negative] -= np.left_shift(1, 5 * (position[ends][negative] + 1))
    runs_per_string = np.add.reduceat(last, string_starts)
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
    return np.add.reduceat(runs, first_run), np.minimum.reduceat(runs, first_run), longest


def rle_problems(counts: Sequence[str | bytes], pixels: Sequence[int]) -> list[str | None]:
    """For each compressed COCO RLE string, why it does not decode to a frame of `pixels` (= H*W) pixels,
    or None if it does: bad characters, a truncated or overlong run length, a negative run, or runs not
    adding up. A string this passes decodes in pycocotools to exactly `pixels` pixels.

    All strings are decoded together with numpy (pycocotools' decoder does not validate run lengths, and
    a Python loop per string is too slow for a whole OVIS submission).
    """
    reasons: list[str | None] = [None] * len(counts)
    encoded = [
        c if isinstance(c, bytes) else c.encode() if c.isascii() else b"\xff" * len(c) for c in counts
    ]  # non-ASCII: invalid
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
    total, smallest, longest = _decode_runs(codes, lengths[good])
    for i, total_i, smallest_i, longest_i in zip(
        np.flatnonzero(good), total.tolist(), smallest.tolist(), longest.tolist()
    ):
        if longest_i > _MAX_RUN_CHARS:
            reasons[i] = f"does not decode: a run length of {longest_i} characters (at most {_MAX_RUN_CHARS})"
        elif smallest_i < 0:
            reasons[i] = "does not decode: negative run length"
        elif total_i != pixels[i]:
            reasons[i] = f"does not decode: run lengths add up to {total_i} pixels, not {pixels[i]}"
    return reasons


def rle_structure_problem(rle: Any, height: int, width: int) -> str | None:
    """Why `rle` is not an RLE of one height x width frame, apart from decoding its counts string (see
    `rle_problems`), or None."""
    if not isinstance(rle, Mapping) or "size" not in rle or "counts" not in rle:
        return "is neither null nor an RLE dict with 'size' and 'counts'"
    size = rle["size"]
    if not isinstance(size, (list, tuple)) or list(size) != [height, width]:
        return f"has size {size!r:.40}, the video is {[height, width]}"
    counts = rle["counts"]
    if isinstance(counts, (str, bytes)):
        return None
    if isinstance(counts, list) and _all_ints(counts):
        try:
            runs = np.array(counts, np.int64)
        except OverflowError:  # an integer past 64 bits
            runs = np.array([-1])
        if runs.size and (runs.min() < 0 or runs.max() > height * width):
            return f"has an uncompressed run length outside [0, {height * width}]"
        if int(runs.sum()) != height * width:
            return f"has uncompressed run lengths adding up to {int(runs.sum())}, not {height * width}"
        return None
    return "has counts that are neither an RLE string nor a list of run lengths"


def _all_ints(values: list) -> bool:
    """Every value an integer (not a bool); the type test runs in C for json's plain ints."""
    return set(map(type, values)) <= {int} or all(map(_is_int, values))


def polygon_problem(polygon: Any) -> str | None:
    """Why `polygon` ([x0, y0, x1, y1, ...]) cannot be rasterised safely, or None: at least 3 points of
    finite numbers within +-MAX_POLYGON_COORDINATE, a boundary of at most MAX_POLYGON_LENGTH pixels."""
    if not isinstance(polygon, list) or len(polygon) % 2 or len(polygon) < 6:
        return "has a polygon that is not a list of 3 or more x, y pairs"
    if not (set(map(type, polygon)) <= {int, float} or all(map(_is_real, polygon))):
        return "has a polygon coordinate that is not a finite number"
    try:
        points = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
    except OverflowError:  # an integer past float64
        return "has a polygon coordinate that is not a finite number"
    if not np.isfinite(points).all():
        return "has a polygon coordinate that is not a finite number"
    bound = limit("MAX_POLYGON_COORDINATE", MAX_POLYGON_COORDINATE)
    if np.abs(points).max() > bound:
        return f"has a polygon coordinate past +-{bound:,} (MDQE_MAX_POLYGON_COORDINATE)"
    length = np.abs(np.diff(points, axis=0, append=points[:1])).max(axis=1).sum()
    cap = limit("MAX_POLYGON_LENGTH", MAX_POLYGON_LENGTH)
    if length > cap:
        return (
            f"has a polygon boundary of {length:,.0f} pixels, past the limit {cap:,} "
            "(MDQE_MAX_POLYGON_LENGTH)"
        )
    return None


def rle_string_problem(counts: str | bytes) -> str | None:
    """Why pycocotools' run-based operations (area, box, IoU, merge: they never write a mask) cannot read
    the compressed RLE string `counts` within its bounds, or None: an empty or non-ASCII string, or one
    that ends inside a run length (pycocotools reads on past its end). Checks no run length."""
    if not counts:
        return "has empty counts"
    if not counts.isascii():
        return "has counts with characters outside the RLE alphabet"
    last = counts[-1] if isinstance(counts, bytes) else ord(counts[-1])
    if (last - 48) & 0x20:
        return "has counts that end inside a run length (truncated)"
    return None


_DECODE_BATCH = 4096  # strings decoded together by `rle_problems` (larger batches are slower)


def segmentation_problems(
    segmentations: Sequence[Any],
    sizes: Sequence[tuple[int, int]],
    polygons: bool = True,
    decode_runs: bool = True,
) -> list[str | None]:
    """For each frame segmentation (null, an RLE dict with compressed or uncompressed counts, or with
    `polygons` a list of polygons), why pycocotools cannot safely decode it at its frame size, or None.

    Args:
        segmentations: frame segmentations of any number of videos, flat.
        sizes: the (height, width) of each one's frame, every size passed by `frame_size_problem`.
        decode_runs: decode the run lengths of the compressed RLE strings (`rle_problems`, in batches);
            without it they are only checked for pycocotools' run-based operations
            (`rle_string_problem`): enough for code that never decodes a mask, at a fraction of the cost.
    """
    reasons: list[str | None] = [None] * len(segmentations)
    strings, pixels, where = [], [], []
    for i, (segm, (height, width)) in enumerate(zip(segmentations, sizes)):
        if segm is None:
            continue
        counts = segm.get("counts") if type(segm) is dict else None
        if type(counts) is str and segm.get("size") == [height, width]:  # the usual case, in short
            if decode_runs:
                strings.append(counts)
                pixels.append(height * width)
                where.append(i)
            elif not counts or not counts.isascii() or (ord(counts[-1]) - 48) & 0x20:
                reasons[i] = rle_string_problem(counts)
            continue
        if polygons and isinstance(segm, list):
            reasons[i] = next((p for p in map(polygon_problem, segm) if p), None)
            continue
        reasons[i] = rle_structure_problem(segm, height, width)
        if reasons[i] is None and isinstance(segm["counts"], (str, bytes)):
            if not decode_runs:
                reasons[i] = rle_string_problem(segm["counts"])
                continue
            strings.append(segm["counts"])
            pixels.append(height * width)
            where.append(i)
    for start in range(0, len(strings), _DECODE_BATCH):
        stop = start + _DECODE_BATCH
        for i, reason in zip(where[start:stop], rle_problems(strings[start:stop], pixels[start:stop])):
            reasons[i] = reason
    return reasons
