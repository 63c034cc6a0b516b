"""mdqe.utils.rle: masks round-trip through the encoding; empty masks are None."""

from __future__ import annotations

import json

import numpy as np
import pycocotools.mask as mask_util
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mdqe.utils.rle import encode_mask, encode_masks


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
