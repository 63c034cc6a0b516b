"""Whole-video inference of MDQE: clip post-processing, cross-clip tracking, video assembly."""

from .clip import ClipInstances, postprocess_clip
from .tracker import OverlapTracker
from .types import ClipHeads, VideoInferenceParams
from .video import VideoResultAssembler, infer_video

__all__ = [
    "ClipHeads",
    "ClipInstances",
    "OverlapTracker",
    "VideoInferenceParams",
    "VideoResultAssembler",
    "infer_video",
    "postprocess_clip",
]
