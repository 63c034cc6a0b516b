"""mdqe.utils.rle: masks round-trip through the encoding; empty masks are None; a frame size, RLE or polygon
that pycocotools cannot decode safely is refused, and what is accepted decodes to exactly its frame."""

from __future__ import annotations

import json

import numpy as np
import pycocotools.mask as mask_util
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mdqe.utils.rle import (
    encode_mask,
    encode_masks,
    frame_size_problem,
    polygon_problem,
    rle_problems,
    segmentation_problems,
)


@settings(max_examples=40, deadline=None)
@given(arrays(np.bool_, st.tuples(st.integers(1, 4), st.integers(1, 9), st.integers(1, 9))))
def test_masks_round_trip_and_empty_ones_are_none(masks):
    rles = encode_masks(masks)
    assert len(rles) == len(masks)
    for mask, rle in zip(masks, rles):
        if not mask.any():
            assert rle is None
        else:
            assert rle["size"] == list(mask.shape)
            assert np.array_equal(mask_util.decode(rle).astype(bool), mask)


def test_text_counts_are_json_ready_and_decode_to_the_mask():
    mask = np.zeros((5, 7), bool)
    mask[1:4, 2:6] = True
    rle = encode_mask(mask, text=True)
    assert isinstance(rle["counts"], str)
    decoded = mask_util.decode({**json.loads(json.dumps(rle)), "counts": rle["counts"].encode("ascii")})
    assert np.array_equal(decoded.astype(bool), mask)
    assert encode_mask(np.zeros((2, 3), bool))["size"] == [2, 3]  # an empty mask is still encoded


@pytest.mark.parametrize(
    ("height", "width", "problem"),
    [
        (720, 1280, None),
        (0, 4, "not positive"),
        (4.0, 4, "not integers"),
        (True, 4, "not integers"),
        (100_000, 100_000, "10,000,000,000 pixels per frame, past the limit 67,108,864"),
    ],
)
def test_frame_sizes_past_the_pixel_limit_or_not_positive_integers_are_refused(height, width, problem):
    found = frame_size_problem(height, width)
    assert found is None if problem is None else problem in found


def test_the_pixel_limit_is_raised_by_its_environment_variable(monkeypatch):
    monkeypatch.setenv("MDQE_MAX_MASK_PIXELS", str(10**10))
    assert frame_size_problem(100_000, 100_000) is None


def test_a_run_length_longer_than_a_32_bit_count_is_refused():
    # 8 characters with the continuation bit, then a final one: pycocotools would shift past 64 bits
    assert rle_problems(["o" * 8 + "0"], [16]) == [
        "does not decode: a run length of 9 characters (at most 7)"
    ]


@pytest.mark.parametrize(
    ("polygon", "problem"),
    [
        ([0, 0, 4, 0, 4, 3], None),
        ([0, 0, 4, 0], "not a list of 3 or more x, y pairs"),
        ([0, 0, 4, 0, 4, float("nan")], "not a finite number"),
        ([0, 0, 4, 0, 4, "3"], "not a finite number"),
        ([0, 0, 1e9, 0, 1e9, 3], "coordinate past +-16,777,216"),
        ([0, 0, 1e7, 0, 0, 1e7, 1e7, 1e7] * 8, "boundary of 320,000,000 pixels, past the limit 4,194,304"),
    ],
)
def test_polygons_that_would_allocate_without_bound_are_refused(polygon, problem):
    found = polygon_problem(polygon)
    assert found is None if problem is None else problem in found


def _encode_runs(runs: list[int]) -> str:
    """COCO's compressed RLE string of `runs` (pycocotools' rleToString)."""
    out = []
    for i, run in enumerate(runs):
        x = run - (runs[i - 2] if i > 2 else 0)
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            out.append(chr((c | 0x20 if more else c) + 48))
    return "".join(out)


def test_an_rle_whose_runs_imply_a_larger_mask_is_refused_before_decoding():
    counts = _encode_runs([1 << 30])  # pycocotools' decode would write 2**30 bytes into a 4 x 4 mask
    assert rle_problems([counts], [16]) == [
        "does not decode: run lengths add up to 1073741824 pixels, not 16"
    ]
    (problem,) = segmentation_problems([{"size": [4, 4], "counts": counts}], [(4, 4)])
    assert "add up to 1073741824 pixels" in problem


@settings(max_examples=300, derandomize=True, database=None)
@given(
    st.lists(st.integers(0, 40), min_size=1, max_size=12),
    st.integers(0, 40),
    st.sampled_from([None, *range(48, 112)]),
)
def test_every_string_the_check_accepts_decodes_to_exactly_its_frame(runs, position, character):
    """The safety property, on valid strings and on strings with one character changed: what the check
    accepts for a frame of `pixels` pycocotools decodes into exactly that frame (never past it)."""
    counts, pixels = _encode_runs(runs), sum(runs)
    if character is not None and counts:
        position %= len(counts)
        counts = counts[:position] + chr(character) + counts[position + 1 :]
    assert (rle_problems([counts], [pixels]) == [None]) == (_decoded_total(counts) == pixels)
    if pixels and rle_problems([counts], [pixels]) == [None]:
        rle = {"size": [pixels, 1], "counts": counts.encode()}
        mask = mask_util.decode(rle)
        assert mask.shape == (pixels, 1) and int(mask.sum()) == int(mask_util.area(rle))


def _decoded_total(counts: str) -> int | None:
    """Sum of the run lengths pycocotools reads from `counts` (its rleFrString), or None where it would
    read past the string, shift past 64 bits or get a negative run."""
    runs, p = [], 0
    while p < len(counts):
        x, k, more = 0, 0, True
        while more:
            if p >= len(counts) or k > 6:
                return None
            c = ord(counts[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p, k = p + 1, k + 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(runs) > 2:
            x += runs[-2]
        if x < 0:
            return None
        runs.append(x)
    return sum(runs)


@pytest.mark.parametrize("decode_runs", [True, False])
def test_an_rle_without_a_size_is_refused_in_both_modes(decode_runs):
    # found by tests/fuzz: the short path for the usual case read "size" without asking for it
    (problem,) = segmentation_problems([{"counts": "0"}], [(4, 4)], decode_runs=decode_runs)
    assert problem == "is neither null nor an RLE dict with 'size' and 'counts'"
