"""The MDQE meta-architecture: preprocessing, the calls to backbone + encoder + decoder and criterion,
and the choice of the inference path (whole video, or image for COCO-format test sets)."""

from __future__ import annotations

import logging
from typing import Any

import torch
from detectron2.config import CfgNode, configurable
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.structures import ImageList, Instances
from torch import nn

from mdqe.data.datasets.metadata import is_image_dataset
from mdqe.inference import ClipHeads, VideoInferenceParams, infer_video
from mdqe.inference.frame_cache import FrameFeatures, clip_decoders
from mdqe.inference.image import infer_image

from .build import build_criterion
from .compile import CompiledPart, features_dynamic_dims, frames_dynamic_dims
from .targets import prepare_targets
from .transformer import MDQETransformer

__all__ = ["MDQE"]

logger = logging.getLogger(__name__)


@META_ARCH_REGISTRY.register()
class MDQE(nn.Module):
    """MDQE (CVPR 2023) for video instance segmentation.

    Training: `model(batched_inputs)` with clips of T = INPUT.SAMPLING_FRAME_NUM frames returns the
    weighted loss dict. Evaluation: one whole video per call; returns the per-video output dict
    (`mdqe.inference.infer_video`), or for an image test set `[{"instances": Instances}]`.
    """

    @configurable
    def __init__(
        self,
        *,
        detr: MDQETransformer,
        criterion: nn.Module,
        pixel_mean: tuple[float, float, float],
        pixel_std: tuple[float, float, float],
        num_frames: int,
        num_classes: int,
        match_stride: int,
        inference_params: VideoInferenceParams,
        size_divisibility: int = 32,
        is_image: bool = False,
        multi_cls_on: bool = True,
        compile: bool = False,
        channels_last: bool = False,
        autocast_bf16: bool = False,
    ):
        """
        Args:
            detr: backbone, encoder and decoder.
            criterion: the training losses (`SetCriterion`); its `query_relpos_grid` is in checkpoints.
            pixel_mean, pixel_std: per-channel normalisation of the input frames (in their format).
            num_frames: T, training clip length.
            num_classes: K.
            match_stride: downsampling of the GT masks for the losses (MATCH_STRIDE).
            inference_params: whole-video inference parameters.
            size_divisibility: frames are zero-padded (after normalisation) to a multiple of this.
            is_image: evaluate as image instance segmentation (`is_image_dataset(DATASETS.TEST[0])`).
            multi_cls_on: image inference emits every (query, class) above the threshold (MULTI_CLS_ON).
            compile: run the per-frame and the per-clip parts through torch.compile (COMPILE; see
                `mdqe.modeling.compile`).
            channels_last: the backbone's weights and input in channels-last format (CHANNELS_LAST).
            autocast_bf16: training and inference under bfloat16 autocast (AUTOCAST_BF16).
        """
        super().__init__()
        self.detr = detr
        self.criterion = criterion
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), persistent=False)
        self.num_frames = num_frames
        self.num_classes = num_classes
        self.match_stride = match_stride
        self.inference_params = inference_params
        self.size_divisibility = size_divisibility
        self.is_image = is_image
        self.multi_cls_on = multi_cls_on
        self.channels_last = channels_last
        self.autocast_bf16 = autocast_bf16
        if channels_last:
            self.detr.backbone.to(memory_format=torch.channels_last)
        self.frame_part = CompiledPart("per-frame part", self._frame_features, frames_dynamic_dims, compile)
        self.clip_part = CompiledPart("per-clip part", self._clip_outputs, features_dynamic_dims, compile)

    @classmethod
    def from_config(cls, cfg: CfgNode) -> dict[str, Any]:
        mdqe = cfg.MODEL.MDQE
        if mdqe.MASK_FEAT_DIM < 0 or mdqe.MASK_FEAT_INIT_SCALE <= 0:
            raise ValueError(
                "MODEL.MDQE.MASK_FEAT_DIM must be >= 0 (0: HIDDEN_DIM // 8) and "
                f"MODEL.MDQE.MASK_FEAT_INIT_SCALE > 0; got {mdqe.MASK_FEAT_DIM} and "
                f"{mdqe.MASK_FEAT_INIT_SCALE}"
            )
        detr = MDQETransformer(cfg)
        if detr.mask_stride != mdqe.MATCH_STRIDE:
            raise ValueError(
                f"MODEL.MDQE.MATCH_STRIDE={mdqe.MATCH_STRIDE} must equal the stride of the mask features "
                f"({detr.mask_stride}, half the finest backbone stride)"
            )
        return {
            "detr": detr,
            "criterion": build_criterion(cfg),
            "pixel_mean": tuple(cfg.MODEL.PIXEL_MEAN),
            "pixel_std": tuple(cfg.MODEL.PIXEL_STD),
            "num_frames": cfg.INPUT.SAMPLING_FRAME_NUM,
            "num_classes": mdqe.NUM_CLASSES,
            "match_stride": mdqe.MATCH_STRIDE,
            "inference_params": VideoInferenceParams.build(cfg),
            "is_image": bool(cfg.DATASETS.TEST) and is_image_dataset(cfg.DATASETS.TEST[0]),
            "multi_cls_on": mdqe.MULTI_CLS_ON,
            "compile": mdqe.COMPILE,
            "channels_last": mdqe.CHANNELS_LAST,
            "autocast_bf16": mdqe.AUTOCAST_BF16,
        }

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def normalize(self, frame: torch.Tensor) -> torch.Tensor:
        """frame: (3, H, W) uint8 or float in the input format -> (3, H, W) float32 normalised."""
        return (frame.to(self.device) - self.pixel_mean) / self.pixel_std

    def preprocess(self, frames: list[torch.Tensor]) -> ImageList:
        """N (3, h, w) frames -> normalised, zero-padded ImageList (N, 3, Hp, Wp)."""
        return ImageList.from_tensors([self.normalize(f) for f in frames], self.size_divisibility)

    @property
    def compiled_parts(self) -> list[CompiledPart]:
        """The per-frame and per-clip parts (compiled when MODEL.MDQE.COMPILE)."""
        return [self.frame_part, self.clip_part]

    def _frame_features(self, images: torch.Tensor, image_sizes: torch.Tensor) -> FrameFeatures:
        """The per-frame part: images (N, 3, Hp, Wp) padded, image_sizes (N, 2) -> `FrameFeatures`
        (`QueryDecoder.frame_features`)."""
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        encoded = self.detr.encode(images, image_sizes)
        return self.detr.transformer_dec.frame_features(*encoded)

    def _clip_outputs(self, features: FrameFeatures, num_frames: int) -> dict[str, torch.Tensor]:
        """The per-clip part: B clips of `num_frames` frames -> the criterion's inputs (training) or the
        last layer's heads (evaluation, `QueryDecoder.clip_heads`)."""
        dec = self.detr.transformer_dec
        return dec(features, num_frames) if self.training else dec.clip_heads(features, num_frames)

    def _network(self, part: CompiledPart, *args: Any) -> Any:
        """A part of the network, under bfloat16 autocast with AUTOCAST_BF16 and its floating outputs then
        cast to float32: the criterion, the matcher and the tracker always see float32."""
        if not self.autocast_bf16:
            return part(*args)
        with torch.autocast(self.device.type, dtype=torch.bfloat16):
            out = part(*args)
        if isinstance(out, FrameFeatures):
            return out.map(lambda t: t.float() if t.is_floating_point() else t)
        return {key: value.float() for key, value in out.items()}

    def encode_frames(self, images: ImageList) -> FrameFeatures:
        """The per-frame part on a preprocessed batch."""
        # int(): under torch.jit.trace (fvcore's FLOP count) ImageList holds its sizes as 0-dim tensors
        sizes = [[int(h), int(w)] for h, w in images.image_sizes]
        sizes = torch.tensor(sizes, dtype=torch.long, device=images.tensor.device)
        return self._network(self.frame_part, images.tensor, sizes)

    def forward(self, batched_inputs: list[dict[str, Any]]) -> Any:
        """
        Args:
            batched_inputs: training: B clips {"image": [T (3, H, W) tensors], "instances": [T Instances]};
                evaluation: one video {"image": [L frames], "height", "width"}.

        Returns:
            training: the weighted loss dict; evaluation: the per-video output dict, or for image
            evaluation (`is_image`) `[{"instances": Instances}]` as detectron2's COCOEvaluator expects.
        """
        if self.training:
            return self.forward_train(batched_inputs)
        if len(batched_inputs) != 1:
            raise ValueError(f"MDQE inference takes one video per batch, got {len(batched_inputs)}")
        if self.is_image:
            return [{"instances": self.inference_image(batched_inputs[0])}]
        return self.inference_video(batched_inputs[0])

    def forward_train(self, batched_inputs: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """The weighted loss dict of B training clips."""
        for i, clip in enumerate(batched_inputs):
            if len(clip["image"]) != self.num_frames:
                raise ValueError(
                    f"training clip {i} has {len(clip['image'])} frames, expected INPUT.SAMPLING_FRAME_NUM="
                    f"{self.num_frames}"
                )
        images = self.preprocess([frame for clip in batched_inputs for frame in clip["image"]])
        targets = prepare_targets(
            batched_inputs,
            padded_hw=tuple(images.tensor.shape[-2:]),
            num_frames=self.num_frames,
            num_classes=self.num_classes,
            match_stride=self.match_stride,
            device=self.device,
        )
        outputs = self._network(self.clip_part, self.encode_frames(images), self.num_frames)
        return self.criterion(outputs, targets)

    def frame_features(self, frames: list[torch.Tensor]) -> FrameFeatures:
        """The per-frame work of inference on N frames: backbone, encoder, query selection, mask
        features ("mask_feats" (N, M, Hf, Wf)) and the decoder's attention values."""
        return self.encode_frames(self.preprocess(frames))

    def decode_clip(self, features: FrameFeatures) -> ClipHeads:
        """The last decoder layer's heads of one clip, from its T frames' features."""
        heads = self._network(self.clip_part, features, len(features))
        return ClipHeads(
            cls_probs=heads["pred_logits"][0].sigmoid(),
            mask_coeff=heads["pred_mask_coeff"][0],
            query_embed=heads["query_embed"][0],
        )

    @torch.no_grad()
    def inference_video(self, video: dict[str, Any]) -> dict[str, Any]:
        """Whole-video inference: per-frame features computed once (`FrameCache`), clips decoded and
        tracked (`infer_video`).

        Args:
            video: {"image": L (3, h, w) frames of one size, optional "height"/"width" of the output}.
        """
        frames = video["image"]
        image_size = tuple(frames[0].shape[-2:])
        output_size = (video.get("height", image_size[0]), video.get("width", image_size[1]))
        decode_clip, mask_features = clip_decoders(
            lambda start, end: self.frame_features(frames[start:end]),
            self.decode_clip,
            len(frames),
            chunk=self.inference_params.clip_len,
        )
        return infer_video(
            len(frames), decode_clip, mask_features, image_size, output_size, self.inference_params
        )

    @torch.no_grad()
    def inference_image(self, image: dict[str, Any]) -> Instances:
        """Image instance segmentation (`infer_image`) of a pseudo-clip {"image": T copies of the image,
        optional "height"/"width" of the output}; the centre frame's masks are kept."""
        frames = image["image"]
        features = self.frame_features(frames)
        center = min((self.num_frames - 1) // 2, len(frames) - 1)
        h, w = frames[0].shape[-2:]
        return infer_image(
            self.decode_clip(features),
            features.tensors["mask_feats"][center],
            image_size=(h, w),
            output_size=(image.get("height", h), image.get("width", w)),
            match_stride=self.match_stride,
            score_thresh=self.inference_params.apply_cls_thres,
            multi_cls_on=self.multi_cls_on,
        )
