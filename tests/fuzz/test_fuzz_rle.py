"""Fuzzing RLE decoding: `segmentation_problems` on any json value at any frame size never raises, and what
it accepts pycocotools decodes into exactly the frame (the mask of a polygon, an uncompressed or a
compressed RLE), within the case's memory bound."""

from __future__ import annotations

import numpy as np
import pycocotools.mask as mask_util
from _fuzzing import JSON_VALUES, bounded, fuzz, scratch_folder
from hypothesis import event, given
from hypothesis import strategies as st

from mdqe.utils.rle import frame_size_problem, rle_problems, segmentation_problems

SIZES = st.tuples(st.integers(1, 40), st.integers(1, 40)) | st.sampled_from([(1, 1), (720, 1280), (1, 2**20)])
_RLE_TEXT = st.text(alphabet=[chr(c) for c in range(48, 112)], max_size=24) | st.text(max_size=12)
SEGMENTATIONS = st.one_of(
    JSON_VALUES,
    st.builds(
        lambda size, counts: {"size": size, "counts": counts},
        st.lists(st.integers(0, 50), max_size=3),
        _RLE_TEXT,
    ),
    st.lists(st.lists(st.floats(-100, 100) | st.integers(-(2**40), 2**40), max_size=12), max_size=3),
    st.builds(lambda counts: {"counts": counts}, st.lists(st.integers(-5, 2**33), max_size=6)),
)


def _decode(segmentation, height: int, width: int) -> np.ndarray:
    if isinstance(segmentation, list):
        return mask_util.decode(mask_util.merge(mask_util.frPyObjects(segmentation, height, width)))
    rle = dict(segmentation)
    if isinstance(rle["counts"], list):
        rle = mask_util.frPyObjects(rle, height, width)
    elif isinstance(rle["counts"], str):
        rle["counts"] = rle["counts"].encode()
    return mask_util.decode(rle)


@fuzz
@given(st.lists(SEGMENTATIONS, max_size=4), SIZES, st.data())
def test_what_the_check_accepts_decodes_into_exactly_the_frame(tmp_path, segmentations, size, data):
    height, width = size
    if frame_size_problem(height, width):
        return
    # half of the RLE dicts get the frame's own size, so that their counts are what is checked
    for segmentation in segmentations:
        if isinstance(segmentation, dict) and "counts" in segmentation and data.draw(st.booleans()):
            segmentation["size"] = [height, width]
    scratch = scratch_folder(tmp_path)
    reasons = bounded(lambda: segmentation_problems(segmentations, [size] * len(segmentations)), scratch)
    for segmentation, reason in zip(segmentations, reasons):
        event("refused" if reason else "accepted")
        if reason is None and segmentation:  # null and [] mean "absent" to every reader
            mask = bounded(lambda s=segmentation: _decode(s, height, width), scratch)
            assert mask.shape[:2] == (height, width)


@fuzz
@given(st.lists(st.text(max_size=20) | st.binary(max_size=20), max_size=6), st.integers(0, 2**40))
def test_the_batch_check_of_any_strings_never_raises(tmp_path, counts, pixels):
    reasons = bounded(lambda: rle_problems(counts, [pixels] * len(counts)), scratch_folder(tmp_path))
    assert len(reasons) == len(counts) and all(r is None or isinstance(r, str) for r in reasons)
