"""Mask upsampling and RLE encoding of final frames."""

from __future__ import annotations

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
import torch.nn.functional as F

from mdqe.inference.masks import aligned_bilinear, encode_frame_masks, mask_logits_to_probs


@pytest.mark.parametrize("factor", [2, 4])
def test_aligned_bilinear_keeps_input_pixels_at_their_centres(factor):
    x = torch.randn(2, 3, 5, 7)
    y = aligned_bilinear(x, factor)
    assert y.shape == (2, 3, 5 * factor, 7 * factor)
    torch.testing.assert_close(y[..., factor // 2 :: factor, factor // 2 :: factor], x)
    assert aligned_bilinear(x, 1) is x


def test_encoded_masks_equal_the_dense_upsample_resize_threshold():
    logits = torch.randn(3, 12, 20) * 3
    logits[2] = -5.0  # an empty mask
    image_size, output_size = (45, 75), (100, 170)
    rles = encode_frame_masks(logits, 4, image_size, output_size)

    probs = mask_logits_to_probs(logits[None], 4, image_size)
    dense = F.interpolate(probs, size=output_size, mode="nearest")[0] > 0.5
    assert rles[2] is None
    for rle, mask in zip(rles[:2], dense[:2]):
        assert rle["size"] == list(output_size)
        np.testing.assert_array_equal(mask_util.decode(rle), mask.numpy().astype(np.uint8))
