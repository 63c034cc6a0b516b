"""Whole-video inference: clips, per-clip post-processing, cross-clip tracking, video-level merge."""

from __future__ import annotations

from typing import Any, Callable

import torch

from .types import ClipHeads, VideoInferenceParams

__all__ = ["infer_video"]


def infer_video(
    num_frames: int,
    decode_clip: Callable[[int, int], ClipHeads],
    mask_features: Callable[[int, int], torch.Tensor],
    image_size: tuple[int, int],
    output_size: tuple[int, int],
    params: VideoInferenceParams,
) -> dict[str, Any]:
    """Run MDQE's clip-by-clip inference over a whole video.

    Args:
        num_frames: L, number of frames of the video.
        decode_clip: `decode_clip(start, end)` returns the `ClipHeads` of the clip of frames [start, end).
        mask_features: `mask_features(start, end)` returns (M, end - start, Hf, Wf) float32 mask features
            at stride `match_stride` of the padded input.
        image_size: (h, w) unpadded network-input size.
        output_size: (H, W) original video size.
        params: inference hyper-parameters.

    Returns:
        {"image_size": (H, W), "pred_scores": list[float], "pred_labels": list[int] (contiguous),
        "pred_masks": list (one per instance) of per-frame pycocotools RLE dicts, None for empty frames}.
    """
    raise NotImplementedError("infer_video is being implemented (issue 6)")
