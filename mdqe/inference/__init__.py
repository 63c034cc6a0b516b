"""Whole-video inference of MDQE: clip post-processing, cross-clip tracking, video assembly."""

from .types import ClipHeads, VideoInferenceParams
from .video import infer_video

__all__ = ["ClipHeads", "VideoInferenceParams", "infer_video"]
