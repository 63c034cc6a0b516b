"""Binary masks to COCO run-length encoding: the one implementation of the package.

numpy and pycocotools only (no torch), so that the torch-free evaluation code can use it too.
"""

from __future__ import annotations

import numpy as np
import pycocotools.mask as mask_util

__all__ = ["encode_mask", "encode_masks"]


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
