"""Data types shared between the model and the video inference package."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from detectron2.config import CfgNode

__all__ = ["ClipHeads", "VideoInferenceParams"]


@dataclass
class ClipHeads:
    """Decoder outputs of one clip (batch element 0, last decoder layer).

    Attributes:
        cls_probs: (Q, K) sigmoid class probabilities.
        mask_coeff: (Q, M) mask coefficients after tanh.
        query_embed: (Q, C) instance query embeddings before the decoder norm (used for tracking).
    """

    cls_probs: torch.Tensor
    mask_coeff: torch.Tensor
    query_embed: torch.Tensor


@dataclass
class VideoInferenceParams:
    """Hyper-parameters of whole-video inference (config keys of the original in brackets).

    Attributes:
        clip_len: frames per decoded clip [MODEL.MDQE.SAMPLING_FRAME_NUM_TEST].
        clip_stride: frames between consecutive clip starts [MODEL.MDQE.CLIP_STRIDE].
        window_frames: frames per tracker window [MODEL.MDQE.WINDOW_FRAME_NUM_TEST].
        max_num_instances: cap on the number of tracks per video [MODEL.MDQE.MAX_NUM_INSTANCES].
        apply_cls_thres: score threshold of the per-clip filtering [MODEL.MDQE.APPLY_CLS_THRES].
        detections_per_image: per-clip candidates are capped at 10x this [TEST.DETECTIONS_PER_IMAGE].
        num_classes: K [MODEL.MDQE.NUM_CLASSES].
        match_stride: upsampling factor of mask logits to the input size [MODEL.MDQE.MATCH_STRIDE].
        merge_on_cpu: keep the tracker state on the CPU [MODEL.MDQE.MERGE_ON_CPU].
    """

    clip_len: int = 5
    clip_stride: int = 1
    window_frames: int = 20
    max_num_instances: int = 50
    apply_cls_thres: float = 0.05
    detections_per_image: int = 100
    num_classes: int = 80
    match_stride: int = 4
    merge_on_cpu: bool = False

    def __post_init__(self) -> None:
        if self.clip_len < 1 or self.clip_stride < 1 or self.clip_stride > self.clip_len:
            raise ValueError(
                "VideoInferenceParams: need 1 <= CLIP_STRIDE <= SAMPLING_FRAME_NUM_TEST, got "
                f"clip_stride={self.clip_stride}, clip_len={self.clip_len}"
            )
        if self.window_frames < self.clip_len:
            raise ValueError(
                "VideoInferenceParams: WINDOW_FRAME_NUM_TEST must be >= SAMPLING_FRAME_NUM_TEST, got "
                f"{self.window_frames} < {self.clip_len}"
            )

    @classmethod
    def build(cls, cfg: CfgNode) -> VideoInferenceParams:
        """The parameters of a config holding `add_mdqe_config`'s keys."""
        mdqe = cfg.MODEL.MDQE
        return cls(
            clip_len=mdqe.SAMPLING_FRAME_NUM_TEST,
            clip_stride=mdqe.CLIP_STRIDE,
            window_frames=mdqe.WINDOW_FRAME_NUM_TEST,
            max_num_instances=mdqe.MAX_NUM_INSTANCES,
            apply_cls_thres=mdqe.APPLY_CLS_THRES,
            detections_per_image=cfg.TEST.DETECTIONS_PER_IMAGE,
            num_classes=mdqe.NUM_CLASSES,
            match_stride=mdqe.MATCH_STRIDE,
            merge_on_cpu=mdqe.MERGE_ON_CPU,
        )
