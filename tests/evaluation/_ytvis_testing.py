"""Builders of tiny YouTube-VIS ground truth / results, and a dense oracle for the video IoU."""

from __future__ import annotations

import numpy as np
import pycocotools.mask as mask_util


def rle(mask: np.ndarray) -> dict:
    """Compressed RLE with str counts of a (H, W) binary mask."""
    encoded = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    encoded["counts"] = encoded["counts"].decode("ascii")
    return encoded


def uncompressed_rle(mask: np.ndarray) -> dict:
    """Uncompressed RLE (counts as a list, column-major runs starting with zeros), as the dataset jsons."""
    flat = mask.astype(np.uint8).flatten(order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0]:
        counts = [0, *counts]
    return {"size": list(mask.shape), "counts": counts}


def rect(height: int, width: int, top: int, left: int, bottom: int, right: int) -> np.ndarray:
    """(H, W) bool mask of rows [top, bottom) x columns [left, right)."""
    mask = np.zeros((height, width), bool)
    mask[top:bottom, left:right] = True
    return mask


def sequence(masks: list[np.ndarray | None]) -> list[dict | None]:
    return [None if m is None else rle(m) for m in masks]


def gt_annotation(
    ann_id: int, video_id: int, category_id: int, masks: list[np.ndarray | None], **extra
) -> dict:
    """A ground-truth annotation in the dataset json form (uncompressed RLE, "areas" from the masks)."""
    ann = {
        "id": ann_id,
        "video_id": video_id,
        "category_id": category_id,
        "iscrowd": 0,
        "segmentations": [None if m is None else uncompressed_rle(m) for m in masks],
        "areas": [None if m is None or not m.any() else int(m.sum()) for m in masks],
    }
    ann.update(extra)
    return ann


def result(video_id: int, category_id: int, score: float, masks: list[np.ndarray | None]) -> dict:
    return {
        "video_id": video_id,
        "category_id": category_id,
        "score": score,
        "segmentations": sequence(masks),
    }


def dataset(videos: list[tuple[int, int, int, int]], annotations: list[dict], categories=(1, 2)) -> dict:
    """videos: (id, height, width, length)."""
    return {
        "videos": [{"id": v, "height": h, "width": w, "length": n} for v, h, w, n in videos],
        "categories": [{"id": c, "name": f"class{c}"} for c in categories],
        "annotations": annotations,
    }


def dense_video_iou(dt: list[list[dict | None]], gt: list[list[dict | None]]) -> np.ndarray:
    """Oracle: decode every frame, pair frames up to the shorter sequence, sum |d & g| / sum |d | g|."""
    out = np.zeros((len(dt), len(gt)))
    for i, d_seq in enumerate(dt):
        for j, g_seq in enumerate(gt):
            inter = union = 0
            for d, g in zip(d_seq, g_seq):
                dm = mask_util.decode(d).astype(bool) if d else None
                gm = mask_util.decode(g).astype(bool) if g else None
                if dm is not None and gm is not None:
                    inter += int((dm & gm).sum())
                    union += int((dm | gm).sum())
                elif dm is not None or gm is not None:
                    union += int((dm if dm is not None else gm).sum())
            out[i, j] = inter / union if union else 0.0
    return out
