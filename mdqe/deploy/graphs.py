"""The two exportable networks of MDQE and the naming of their inputs and outputs.

Whole-video inference splits into per-frame and per-clip work (`mdqe.inference.frame_cache`); each is
one graph:

- `FrameEncoder`: a batch of frames of one video -> `FrameFeatures` (backbone, input projections,
  encoder, query selection, mask features and every decoder layer's attention values). Batch, height and
  width are dynamic.
- `ClipDecoder`: the `FrameFeatures` of one clip of T frames -> the last decoder layer's heads. T is
  fixed per graph (the decoder picks the frames of its temporal attention by T).

Both flatten `FrameFeatures` to named tensors (`feature_names`), so an ONNX runtime feeds the frame
encoder's outputs to the clip decoder by name.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mdqe.inference.frame_cache import FrameFeatures
from mdqe.modeling.decoder import LayerValues
from mdqe.modeling.meta_arch import MDQE

__all__ = [
    "HEAD_NAMES",
    "QUERY_NAMES",
    "ClipDecoder",
    "FrameEncoder",
    "feature_names",
    "features_from_named",
    "features_to_named",
]

# per-frame tensors of `QueryDecoder.frame_features` (inference mode) that the clip decoder reads
QUERY_NAMES = ("coords", "features", "track_embed")
# the clip decoder's outputs (`QueryDecoder.clip_heads` of one clip)
HEAD_NAMES = ("pred_logits", "pred_mask_coeff", "pred_boxes", "query_embed")


def feature_names(num_layers: int, num_levels: int, temporal: bool) -> list[str]:
    """Names of the flattened attention values: "values.{layer}.cross" and, with the temporal attention,
    "values.{layer}.temporal.{level}"."""
    names = []
    for layer in range(num_layers):
        names.append(f"values.{layer}.cross")
        if temporal:
            names.extend(f"values.{layer}.temporal.{level}" for level in range(num_levels))
    return names


def features_to_named(features: FrameFeatures) -> dict[str, torch.Tensor]:
    """`FrameFeatures` -> {"spatial_shapes", "coords", "features", "track_embed", "mask_feats", values...}."""
    named = {"spatial_shapes": features.spatial_shapes, **features.tensors}
    for layer, values in enumerate(features.values):
        named[f"values.{layer}.cross"] = values.cross
        for level, value in enumerate(values.temporal or ()):
            named[f"values.{layer}.temporal.{level}"] = value
    return named


def features_from_named(named: dict[str, torch.Tensor], num_layers: int, num_levels: int) -> FrameFeatures:
    """The inverse of `features_to_named`; tensors other than values and spatial shapes become
    `FrameFeatures.tensors`."""
    values = []
    for layer in range(num_layers):
        temporal_names = [f"values.{layer}.temporal.{level}" for level in range(num_levels)]
        temporal = [named[n] for n in temporal_names] if temporal_names[0] in named else None
        values.append(LayerValues(named[f"values.{layer}.cross"], temporal))
    tensors = {
        key: value
        for key, value in named.items()
        if key != "spatial_shapes" and not key.startswith("values.")
    }
    return FrameFeatures(named["spatial_shapes"], tensors, values)


class FrameEncoder(nn.Module):
    """frames (N, 3, H, W) float32 pixel values in the model's input format, unpadded, one size ->
    spatial_shapes (L, 2) int64, coords (N, Q, 2), features (N, Q, C), track_embed (N, Q, E),
    mask_feats (N, M, Hp / 4, Wp / 4), and the attention values of every decoder layer."""

    def __init__(self, model: MDQE):
        super().__init__()
        self.model = model

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, ...]:
        model = self.model
        images = (frames - model.pixel_mean) / model.pixel_std
        height, width = images.shape[-2:]
        divisor = model.size_divisibility
        # zero padding after normalisation, to a multiple of the size divisibility (as ImageList)
        images = F.pad(
            images, (0, (divisor - width % divisor) % divisor, 0, (divisor - height % divisor) % divisor)
        )
        sizes = torch.stack([torch.scalar_tensor(s, dtype=torch.long) for s in (height, width)])
        features = model._frame_features(images, sizes.expand(frames.shape[0], 2))
        return tuple(features_to_named(features).values())


class ClipDecoder(nn.Module):
    """The `FrameFeatures` of one clip of `num_frames` frames (spatial_shapes, coords, features,
    track_embed and the values, as the frame encoder names them) -> pred_logits (Q, K) class logits,
    pred_mask_coeff (Q, M), pred_boxes (Q, T, 4) normalised xyxy, query_embed (Q, C) track embeddings."""

    def __init__(self, model: MDQE, num_frames: int):
        super().__init__()
        self.model = model
        self.num_frames = num_frames
        dec = model.detr.transformer_dec
        self.num_layers = len(dec.decoder.layers)
        self.num_levels = dec.decoder.layers[0].cross_attn.n_levels

    def forward(self, spatial_shapes: torch.Tensor, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        queries = dict(zip(QUERY_NAMES, tensors[: len(QUERY_NAMES)]))
        values = tensors[len(QUERY_NAMES) :]
        temporal = len(values) > self.num_layers
        names = feature_names(self.num_layers, self.num_levels, temporal)
        named = {"spatial_shapes": spatial_shapes, **queries, **dict(zip(names, values))}
        features = features_from_named(named, self.num_layers, self.num_levels)
        heads = self.model.detr.transformer_dec.clip_heads(features, self.num_frames)
        return tuple(heads[name][0] for name in HEAD_NAMES)
