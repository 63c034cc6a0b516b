"""The MDQE meta-architecture: preprocessing, backbone + encoder, decoder, criterion and inference glue."""

from __future__ import annotations

import logging
import math
from typing import Any, Callable

import torch
import torch.nn.functional as F
from detectron2.config import CfgNode, configurable
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.structures import BitMasks, ImageList, Instances, pairwise_iou
from torch import nn

from mdqe.inference import ClipHeads, VideoInferenceParams, infer_video
from mdqe.inference.masks import aligned_bilinear

from .decoder import FrameQueries, LayerValues, QueryDecoder
from .encoder import DeformableEncoder
from .masked_backbone import BackboneWithPosition, MaskedBackbone
from .position_encoding import PositionEmbeddingSine

__all__ = ["MDQE", "MDQETransformer"]

logger = logging.getLogger(__name__)


class MDQETransformer(nn.Module):
    """Backbone, input projections, encoder and decoder (`detr` in the original's checkpoints)."""

    def __init__(
        self,
        backbone: BackboneWithPosition,
        transformer_enc: DeformableEncoder,
        transformer_dec: QueryDecoder,
        num_feature_levels: int = 4,
    ):
        super().__init__()
        self.transformer_enc = transformer_enc
        self.transformer_dec = transformer_dec
        hidden_dim = transformer_enc.dim
        in_channels = backbone.num_channels
        if num_feature_levels < len(in_channels):
            raise ValueError(
                f"MODEL.MDQE.NUM_FEATURE_LEVELS={num_feature_levels} is smaller than the "
                f"{len(in_channels)} backbone outputs"
            )
        projections = [
            nn.Sequential(nn.Conv2d(c, hidden_dim, kernel_size=1), nn.GroupNorm(32, hidden_dim))
            for c in in_channels
        ]
        extra_in = in_channels[-1]
        for _ in range(num_feature_levels - len(in_channels)):
            projections.append(
                nn.Sequential(
                    nn.Conv2d(extra_in, hidden_dim, kernel_size=3, stride=2, padding=1),
                    nn.GroupNorm(32, hidden_dim),
                )
            )
            extra_in = hidden_dim
        self.input_proj = nn.ModuleList(projections)
        self.backbone = backbone

    def encode(self, images: ImageList) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Backbone, input projections and encoder on N frames.

        Args:
            images: padded frames, tensor (N, 3, Hp, Wp).

        Returns:
            memory (N, S, C) encoded tokens of the levels at strides 8, 16, 32, 64 (row-major within a
            level), padding mask (N, S) bool, spatial_shapes (L, 2) int64.
        """
        levels, pos = self.backbone(images)
        srcs, masks = [], []
        for proj, (feat, mask) in zip(self.input_proj, levels):
            srcs.append(proj(feat))
            masks.append(mask)
        last_feat, last_mask = levels[-1]
        extra_input = last_feat
        for proj in self.input_proj[len(levels) :]:
            src = proj(extra_input)
            mask = F.interpolate(last_mask[None].float(), size=src.shape[-2:]).to(torch.bool)[0]
            srcs.append(src)
            masks.append(mask)
            pos.append(self.backbone[1](mask).to(src.dtype))
            extra_input = src
        return self.transformer_enc(srcs, masks, pos)


class _FrameCache:
    """Per-frame results for whole-video inference: the backbone, encoder, mask head, query selection
    and the decoder's value projections of each frame, computed once (frames are encoded
    independently) in chunks of `chunk` frames.

    The cached frames are a contiguous range [lo, lo + count), stored frame-major in one tensor per
    quantity, so that a clip's values are views, not copies; frames before the start of the latest
    request are dropped (a dropped frame asked for again is recomputed).
    """

    def __init__(self, model: MDQE, frames: list[torch.Tensor], chunk: int):
        self.model = model
        self.frames = frames
        self.chunk = chunk
        self.lo = 0
        self.count = 0
        self.spatial_shapes: torch.Tensor | None = None
        self.tensors: dict[str, torch.Tensor] = {}
        self.values: list[LayerValues] = []

    def _map(self, fn: Callable[..., torch.Tensor], *others: _FrameCache) -> None:
        """Replace every cached tensor t by fn(t, *the same tensor of `others`)."""
        for key in self.tensors:
            self.tensors[key] = fn(self.tensors[key], *(o.tensors[key] for o in others))
        for i, layer in enumerate(self.values):
            cross = fn(layer.cross, *(o.values[i].cross for o in others))
            temporal = None
            if layer.temporal is not None:
                temporal = [
                    fn(v, *(o.values[i].temporal[lvl] for o in others))
                    for lvl, v in enumerate(layer.temporal)
                ]
            self.values[i] = LayerValues(cross, temporal)

    def _compute(self, start: int, end: int) -> _FrameCache:
        model = self.model
        detr = model.detr
        images = ImageList.from_tensors(
            [model.normalize(f) for f in self.frames[start:end]], model.size_divisibility
        )
        memory, padding_mask, shapes = detr.encode(images)
        dec = detr.transformer_dec
        queries = dec.init_frame_queries(memory, shapes)
        new = _FrameCache(model, self.frames, self.chunk)
        new.spatial_shapes = shapes
        new.tensors = {
            "coords": queries.coords,
            "features": queries.features,
            "track_embed": queries.track_embed,
            "mask_feats": dec.mask_features(memory, shapes),
        }
        new.values = dec.project_values(memory, padding_mask, shapes)
        return new

    def ensure(self, start: int, end: int) -> None:
        """Cache frames [start, end) and drop the frames before `start`."""
        if start < self.lo or start > self.lo + self.count:
            self.lo, self.count, self.tensors, self.values = start, 0, {}, []
        elif start > self.lo:
            drop = start - self.lo
            self._map(lambda t: t[drop:])
            self.lo, self.count = start, self.count - drop
        while self.lo + self.count < end:
            first = self.lo + self.count
            new = self._compute(first, min(first + self.chunk, len(self.frames)))
            if self.count == 0:
                self.tensors, self.values = new.tensors, new.values
            else:
                self._map(lambda old, fresh: torch.cat([old, fresh]), new)
            self.spatial_shapes = new.spatial_shapes
            self.count += new.tensors["coords"].shape[0]

    def clip(self, start: int, end: int) -> tuple[dict[str, torch.Tensor], list[LayerValues]]:
        """The cached quantities of frames [start, end), as views: per key (end - start, ...)."""
        self.ensure(start, end)
        i, j = start - self.lo, end - self.lo
        tensors = {key: t[i:j] for key, t in self.tensors.items()}
        values = [
            LayerValues(v.cross[i:j], None if v.temporal is None else [t[i:j] for t in v.temporal])
            for v in self.values
        ]
        return tensors, values


@META_ARCH_REGISTRY.register()
class MDQE(nn.Module):
    """MDQE (CVPR 2023) for video instance segmentation.

    Training: `model(batched_inputs)` with clips of T = INPUT.SAMPLING_FRAME_NUM frames returns the
    weighted loss dict. Evaluation: one whole video per call; returns the per-video output dict
    (`mdqe.inference.infer_video`).
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
        is_coco: bool = False,
        multi_cls_on: bool = True,
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
            is_coco: evaluate as image instance segmentation (test set DATASETS.TEST[0] is coco*).
            multi_cls_on: image inference emits every (query, class) above the threshold (MULTI_CLS_ON).
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
        self.is_coco = is_coco
        self.multi_cls_on = multi_cls_on

    @classmethod
    def from_config(cls, cfg: CfgNode) -> dict[str, Any]:
        from .criterion import SetCriterion

        mdqe = cfg.MODEL.MDQE
        hidden_dim = mdqe.HIDDEN_DIM
        if mdqe.MASK_FEAT_DIM < 0 or mdqe.MASK_FEAT_INIT_SCALE <= 0:
            raise ValueError(
                "MODEL.MDQE.MASK_FEAT_DIM must be >= 0 (0: HIDDEN_DIM // 8) and "
                f"MODEL.MDQE.MASK_FEAT_INIT_SCALE > 0; got {mdqe.MASK_FEAT_DIM} and "
                f"{mdqe.MASK_FEAT_INIT_SCALE}"
            )
        backbone = BackboneWithPosition(
            MaskedBackbone.from_config(cfg), PositionEmbeddingSine(hidden_dim // 2, normalize=True)
        )
        encoder = DeformableEncoder(
            dim=hidden_dim,
            n_heads=mdqe.NHEADS,
            n_levels=mdqe.NUM_FEATURE_LEVELS,
            n_points=mdqe.ENC_NUM_POINTS,
            num_layers=mdqe.ENC_LAYERS,
        )
        decoder = QueryDecoder(
            mdqe.NUM_CLASSES,
            dim=hidden_dim,
            n_heads=mdqe.NHEADS,
            n_levels=mdqe.NUM_FEATURE_LEVELS,
            n_frames=cfg.INPUT.SAMPLING_FRAME_NUM,
            n_points=mdqe.DEC_NUM_POINTS,
            num_layers=mdqe.DEC_LAYERS,
            mlp_ratio=mdqe.MLP_RATIO,
            num_queries=int(math.sqrt(mdqe.NUM_OBJECT_QUERIES)) ** 2,
            temporal_attn=mdqe.DEC_TEMPORAL,
            window_inter_frame_asso=mdqe.WINDOW_INTER_FRAME_ASSOCIATION,
            query_embed_dim=mdqe.QUERY_EMBED_DIM,
            mask_feat_init_scale=mdqe.MASK_FEAT_INIT_SCALE,
            mask_feat_dim=mdqe.MASK_FEAT_DIM,
        )
        return {
            "detr": MDQETransformer(backbone, encoder, decoder, mdqe.NUM_FEATURE_LEVELS),
            "criterion": SetCriterion(cfg),
            "pixel_mean": tuple(cfg.MODEL.PIXEL_MEAN),
            "pixel_std": tuple(cfg.MODEL.PIXEL_STD),
            "num_frames": cfg.INPUT.SAMPLING_FRAME_NUM,
            "num_classes": mdqe.NUM_CLASSES,
            "match_stride": mdqe.MATCH_STRIDE,
            "inference_params": VideoInferenceParams.from_config(cfg),
            "is_coco": bool(cfg.DATASETS.TEST) and cfg.DATASETS.TEST[0].startswith("coco"),
            "multi_cls_on": mdqe.MULTI_CLS_ON,
        }

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def normalize(self, frame: torch.Tensor) -> torch.Tensor:
        """frame: (3, H, W) uint8 or float in the input format -> (3, H, W) float32 normalised."""
        return (frame.to(self.device) - self.pixel_mean) / self.pixel_std

    def forward(self, batched_inputs: list[dict[str, Any]]) -> Any:
        """
        Args:
            batched_inputs: training: B clips {"image": [T (3, H, W) tensors], "instances": [T Instances]};
                evaluation: one video {"image": [L frames], "height", "width"}.

        Returns:
            training: the weighted loss dict; evaluation: the per-video output dict, or for image
            evaluation (`is_coco`) `[{"instances": Instances}]` as detectron2's COCOEvaluator expects.
        """
        if self.training:
            return self.forward_train(batched_inputs)
        if len(batched_inputs) != 1:
            raise ValueError(f"MDQE inference takes one video per batch, got {len(batched_inputs)}")
        if self.is_coco:
            return [{"instances": self.inference_image(batched_inputs[0])}]
        return self.inference_video(batched_inputs[0])

    def forward_train(self, batched_inputs: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """The weighted loss dict of B training clips."""
        from .targets import prepare_targets

        for i, clip in enumerate(batched_inputs):
            if len(clip["image"]) != self.num_frames:
                raise ValueError(
                    f"training clip {i} has {len(clip['image'])} frames, expected INPUT.SAMPLING_FRAME_NUM="
                    f"{self.num_frames}"
                )
        images = ImageList.from_tensors(
            [self.normalize(frame) for clip in batched_inputs for frame in clip["image"]],
            self.size_divisibility,
        )
        targets = prepare_targets(
            batched_inputs,
            padded_hw=tuple(images.tensor.shape[-2:]),
            num_frames=self.num_frames,
            num_classes=self.num_classes,
            match_stride=self.match_stride,
            device=self.device,
        )
        memory, padding_mask, shapes = self.detr.encode(images)
        outputs = self.detr.transformer_dec(memory, padding_mask, shapes, self.num_frames)
        return self.criterion(outputs, targets)

    def decode_clip(
        self, queries: FrameQueries, values: list[LayerValues], spatial_shapes: torch.Tensor
    ) -> ClipHeads:
        """Decoder and heads on one clip.

        Args:
            queries: the clip's T frames' selected queries (`rpn_logits` unused).
            values: per layer, the attention values of the T frames.
            spatial_shapes: (L, 2) int64.
        """
        dec = self.detr.transformer_dec
        features, coords = dec.associate(
            queries.features[None], queries.coords[None], queries.track_embed[None]
        )
        out = dec.decode(features, coords, values, spatial_shapes)
        clip_query = out.clip_queries[-1, 0]
        logits, mask_coeff = dec.heads(clip_query)
        return ClipHeads(cls_probs=logits.sigmoid(), mask_coeff=mask_coeff, query_embed=clip_query)

    def clip_decoders(
        self, frames: list[torch.Tensor]
    ) -> tuple[Callable[[int, int], ClipHeads], Callable[[int, int], torch.Tensor]]:
        """The `decode_clip` and `mask_features` callbacks of `infer_video` for one video.

        Per-frame work (backbone, encoder, mask head, query selection, value projections) is done once
        per frame, in chunks of SAMPLING_FRAME_NUM_TEST frames, and dropped once a request starts after
        the frame, so memory is bounded by the clip length, not the video length. Requests should come
        with non-decreasing starts (a dropped frame asked for again is recomputed).

        Args:
            frames: L (3, h, w) frames of one video, all of the same size, in the input format.

        Returns:
            decode_clip(start, end) -> ClipHeads of frames [start, end);
            mask_features(start, end) -> (M, end - start, Hf, Wf) stride-4 mask features.
        """
        cache = _FrameCache(self, frames, chunk=self.inference_params.clip_len)

        def decode_clip(start: int, end: int) -> ClipHeads:
            tensors, values = cache.clip(start, end)
            queries = FrameQueries(None, tensors["coords"], tensors["features"], tensors["track_embed"])
            return self.decode_clip(queries, values, cache.spatial_shapes)

        def mask_features(start: int, end: int) -> torch.Tensor:
            return cache.clip(start, end)[0]["mask_feats"].transpose(0, 1)

        return decode_clip, mask_features

    @torch.no_grad()
    def inference_video(self, video: dict[str, Any]) -> dict[str, Any]:
        """Whole-video inference: per-frame features computed once, clips decoded and tracked.

        Args:
            video: {"image": L (3, h, w) frames, optional "height"/"width" of the output}.

        Returns:
            the per-video output dict of `infer_video`.
        """
        frames = video["image"]
        image_size = tuple(frames[0].shape[-2:])
        output_size = (video.get("height", image_size[0]), video.get("width", image_size[1]))
        decode_clip, mask_features = self.clip_decoders(frames)
        return infer_video(
            len(frames), decode_clip, mask_features, image_size, output_size, self.inference_params
        )

    @torch.no_grad()
    def inference_image(self, image: dict[str, Any]) -> Instances:
        """Image instance segmentation (COCO evaluation), as the original: the test mapper repeats the
        image to a pseudo-clip, decoded as one clip; the masks of its centre frame are kept.

        Args:
            image: {"image": T (3, h, w) copies of the image, optional "height"/"width" of the output}.

        Returns:
            Instances of the output size with scores, pred_classes, pred_masks (n, H, W) bool and
            pred_boxes (boxes of the masks).
        """
        thresh = self.inference_params.apply_cls_thres
        images = ImageList.from_tensors([self.normalize(f) for f in image["image"]], self.size_divisibility)
        memory, padding_mask, shapes = self.detr.encode(images)
        dec = self.detr.transformer_dec
        q = dec.init_frame_queries(memory, shapes)
        queries = FrameQueries(None, q.coords, q.features, q.track_embed)
        heads = self.decode_clip(queries, dec.project_values(memory, padding_mask, shapes), shapes)
        center = min((self.num_frames - 1) // 2, len(image["image"]) - 1)
        mask_feats = dec.mask_features(memory[center : center + 1], shapes)[0]  # (M, Hf, Wf)

        h, w = images.image_sizes[0]
        scores = heads.cls_probs.max(-1).values
        keep = torch.nonzero(scores >= torch.clamp(scores.max(), max=thresh)).flatten()
        cls = heads.cls_probs[keep]
        masks = torch.einsum("qm,mhw->qhw", heads.mask_coeff[keep], mask_feats)
        masks = aligned_bilinear(masks[:, None], self.match_stride)[:, 0, :h, :w]
        # mask-quality score: mean probability inside the predicted mask
        soft = masks.sigmoid().flatten(1)
        hard = (soft > 0.5).float()
        cls = cls * ((soft * hard).sum(1) / (hard.sum(1) + 1e-6))[:, None]
        if len(keep) > 0:
            order = cls.max(-1).values.sort(descending=True).indices
            cls, masks = cls[order], masks[order]
            boxes = BitMasks(masks > 0).get_bounding_boxes()
            # two empty masks give 0/0: no penalty (their scores are 0 anyway)
            iou = pairwise_iou(boxes, boxes).nan_to_num(0.0)
            cls = cls * (1 - torch.triu(iou, diagonal=1).max(0).values)[:, None]
        if self.multi_cls_on:
            index, labels = torch.nonzero(cls > thresh, as_tuple=True)
            scores, masks = cls[index, labels], masks[index]
        else:
            scores, labels = cls.max(-1)
        out_h, out_w = image.get("height", h), image.get("width", w)
        masks = (
            F.interpolate(masks[:, None].float(), size=(out_h, out_w), mode="bilinear", align_corners=False)[
                :, 0
            ]
            > 0
        )
        result = Instances((out_h, out_w))
        result.scores = scores
        result.pred_classes = labels
        result.pred_masks = masks
        result.pred_boxes = BitMasks(masks).get_bounding_boxes()
        return result
