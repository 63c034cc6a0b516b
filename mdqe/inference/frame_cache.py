"""Per-frame features of a whole video, computed once per frame for the overlapping clips of inference.

Frames are encoded independently of each other (backbone, pixel encoder, mask head, query selection and
the decoder's value projections all work per frame), so a frame shared by several clips needs to be
encoded only once. `FrameCache` keeps a contiguous range of frames and drops the frames before the start
of the latest request, so memory is bounded by the clip length, not by the video length.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from .types import ClipHeads

__all__ = ["FrameCache", "FrameFeatures", "clip_decoders"]


@dataclass
class FrameFeatures:
    """The per-frame quantities of N consecutive frames, frame-major.

    Attributes:
        spatial_shapes: (L, 2) int64 sizes of the feature levels (the same for every frame).
        tensors: name -> (N, ...) per-frame tensors, e.g. the selected queries and the mask features.
        values: per decoder layer, its attention values (objects with a `map(fn, *others)` method, as
            `mdqe.modeling.decoder.LayerValues`), each with N frames first.
    """

    spatial_shapes: torch.Tensor
    tensors: dict[str, torch.Tensor]
    values: list[Any]

    def __len__(self) -> int:
        return next(iter(self.tensors.values())).shape[0]

    def map(self, fn: Callable[..., torch.Tensor], *others: FrameFeatures) -> FrameFeatures:
        """Every per-frame tensor t replaced by fn(t, *the same tensor of `others`)."""
        tensors = {key: fn(t, *(o.tensors[key] for o in others)) for key, t in self.tensors.items()}
        values = [v.map(fn, *(o.values[i] for o in others)) for i, v in enumerate(self.values)]
        return FrameFeatures(self.spatial_shapes, tensors, values)


class FrameCache:
    """The features of frames [lo, lo + count) of a video, computed in chunks of `chunk` frames.

    Requests should come with non-decreasing starts; a dropped frame asked for again is recomputed.
    """

    def __init__(self, compute: Callable[[int, int], FrameFeatures], num_frames: int, chunk: int):
        """
        Args:
            compute: compute(start, end) -> the features of frames [start, end).
            num_frames: frames in the video.
            chunk: frames computed per call of `compute`.
        """
        self.compute = compute
        self.num_frames = num_frames
        self.chunk = chunk
        self.lo = 0
        self.features: FrameFeatures | None = None

    @property
    def count(self) -> int:
        """Frames held."""
        return 0 if self.features is None else len(self.features)

    def ensure(self, start: int, end: int) -> None:
        """Hold frames [start, end) and drop the frames before `start`."""
        if start < self.lo or start > self.lo + self.count:
            self.lo, self.features = start, None
        elif start > self.lo:
            drop = start - self.lo
            self.features = self.features.map(lambda t: t[drop:])
            self.lo = start
        while self.lo + self.count < end:
            first = self.lo + self.count
            new = self.compute(first, min(first + self.chunk, self.num_frames))
            if self.count == 0:
                self.features = new
            else:
                self.features = self.features.map(lambda old, fresh: torch.cat([old, fresh]), new)

    def clip(self, start: int, end: int) -> FrameFeatures:
        """The features of frames [start, end), as views of the cache."""
        self.ensure(start, end)
        i, j = start - self.lo, end - self.lo
        return self.features.map(lambda t: t[i:j])


def clip_decoders(
    compute: Callable[[int, int], FrameFeatures],
    decode_clip: Callable[[FrameFeatures], ClipHeads],
    num_frames: int,
    chunk: int,
) -> tuple[Callable[[int, int], ClipHeads], Callable[[int, int], torch.Tensor]]:
    """The `decode_clip` and `mask_features` callbacks of `infer_video` for one video, on a `FrameCache`.

    Args:
        compute: compute(start, end) -> `FrameFeatures` of frames [start, end), with the tensor
            "mask_feats" (N, M, Hf, Wf).
        decode_clip: the heads of a clip from its frames' features.
        num_frames: frames in the video; chunk: frames computed at once (SAMPLING_FRAME_NUM_TEST).

    Returns:
        decode_clip(start, end) -> ClipHeads of frames [start, end);
        mask_features(start, end) -> (M, end - start, Hf, Wf) mask features.
    """
    cache = FrameCache(compute, num_frames, chunk)

    def decode(start: int, end: int) -> ClipHeads:
        return decode_clip(cache.clip(start, end))

    def mask_features(start: int, end: int) -> torch.Tensor:
        return cache.clip(start, end).tensors["mask_feats"].transpose(0, 1)

    return decode, mask_features
