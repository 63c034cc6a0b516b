"""Builders shared by the inference tests."""

from __future__ import annotations

from typing import ClassVar

import torch

from mdqe.inference import ClipHeads, ClipInstances, OverlapTracker, VideoInferenceParams
from mdqe.inference.tracker import FinalFrame

# The post-processing fixture was produced with configs/R50_ovis_360.yaml.
POSTPROC_PARAMS = dict(
    clip_len=4, clip_stride=1, max_num_instances=120, apply_cls_thres=0.1, detections_per_image=15
)
POSTPROC_PARAMS.update(num_classes=25, match_stride=4)


def postproc_params(run: dict) -> VideoInferenceParams:
    return VideoInferenceParams(window_frames=run["window_frame_num_test"], **POSTPROC_PARAMS)


def designed_heads(postproc: dict, start: int, end: int) -> ClipHeads:
    """The designed decoder outputs of the clip [start, end) of the post-processing fixture."""
    for call in postproc["design"]["heads_per_call"]:
        if call["frames"] == list(range(start, end)):
            return ClipHeads(call["cls"], call["mask_coeff"], call["query_embed"])
    raise KeyError(f"no designed heads for frames [{start}, {end})")


def box_masks(boxes: list[tuple[int, int, int, int]], num_frames: int, size: tuple[int, int]) -> torch.Tensor:
    """(n, T, H, W) mask logits: +6 inside each (x0, y0, x1, y1) box, -6 elsewhere, same in every frame."""
    logits = torch.full((len(boxes), num_frames, *size), -6.0)
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        logits[i, :, y0:y1, x0:x1] = 6.0
    return logits


def make_clip(
    boxes: list[tuple[int, int, int, int]],
    embeds: torch.Tensor,
    scores: list[float],
    num_frames: int = 4,
    size: tuple[int, int] = (16, 16),
    num_classes: int = 3,
) -> ClipInstances:
    """Clip instances with box masks, given embeddings (n, C) and scores (class 0)."""
    n = len(boxes)
    cls_probs = torch.zeros(n, num_classes)
    cls_probs[:, 0] = torch.tensor(scores)
    return ClipInstances(
        candidate_idx=torch.arange(n),
        scores=torch.tensor(scores),
        labels=torch.zeros(n, dtype=torch.int64),
        cls_probs=cls_probs,
        mask_logits=box_masks(boxes, num_frames, size),
        query_embeds=embeds.float(),
    )


class RecordingTracker(OverlapTracker):
    """OverlapTracker that records what the driver asks of it (for tests of `infer_video`)."""

    instances: ClassVar[list[RecordingTracker]] = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.updates: list[tuple[int, list[int], list[int]]] = []
        self.clips: list[tuple[int, ClipInstances]] = []
        self.windows: list[tuple[int, torch.Tensor]] = []
        self.window_after_update: list[int] = []
        self.final_frames: list[FinalFrame] = []
        self.max_open_frames = 0
        RecordingTracker.instances.append(self)

    def update(self, frame_start, clip):
        self.max_open_frames = max(self.max_open_frames, self.num_open_frames)
        track_ids, clip_idx = super().update(frame_start, clip)
        self.clips.append((frame_start, clip))
        self.max_open_frames = max(self.max_open_frames, self.num_open_frames)
        self.updates.append((frame_start, track_ids.tolist(), clip_idx.tolist()))
        return track_ids, clip_idx

    def end_window(self, is_last):
        start = self.window_start
        scores = super().end_window(is_last)
        self.windows.append((start, scores))
        self.window_after_update.append(len(self.updates) - 1)
        return scores

    def pop_final_frames(self, before):
        frames = super().pop_final_frames(before)
        self.final_frames.extend(frames)
        return frames


def window_mask_logits(tracker: RecordingTracker, num_frames: int, window_frames: int) -> list[torch.Tensor]:
    """Per window (N_w, F_w, Hf, Wf) mask logits as the original's `get_result` returns them."""
    height, width = tracker.final_frames[0].mask_logits.shape[-2:]
    by_frame = {f.frame: f for f in tracker.final_frames}
    out = []
    for i, (start, scores) in enumerate(tracker.windows):
        # The last window runs to the end of the video, which can be more than window_frames frames.
        end = num_frames if i == len(tracker.windows) - 1 else start + window_frames
        logits = torch.zeros(scores.shape[0], end - start, height, width)
        for frame in range(start, end):
            if frame in by_frame:
                logits[by_frame[frame].track_ids, frame - start] = by_frame[frame].mask_logits
        out.append(logits)
    return out


def probe(tensor: torch.Tensor) -> dict:
    """The fixture's probe statistics of a tensor."""
    flat = tensor.flatten().double()
    n = flat.numel()
    return {
        "shape": tuple(tensor.shape),
        "sum": float(flat.sum()),
        "min": float(flat.min()),
        "max": float(flat.max()),
        "sample": tensor.flatten()[torch.arange(4096) * (n - 1) // 4095],
    }


def moving_objects_video(num_frames: int, size: tuple[int, int] = (24, 40), num_queries: int = 8):
    """Callbacks of a synthetic video: two objects moving right, found by queries 0 and 1 of each clip.

    Mask features are indicator maps of the objects (channel i: object i, last channel: a constant -1
    bias), so a query's coefficients select its object. Returns (decode_clip, mask_features, calls)
    where calls records every (start, end) requested from mask_features.
    """
    height, width = size
    num_objects, num_classes, embed_dim = 2, 3, 16
    feats = torch.zeros(num_objects + 1, num_frames, height, width)
    for t in range(num_frames):
        for i in range(num_objects):
            x0 = (2 * t + 10 * i) % (width - 6)
            feats[i, t, 6 * i : 6 * i + 6, x0 : x0 + 6] = 1.0
    feats[-1] = -1.0
    embeds = torch.randn(num_queries, embed_dim, generator=torch.Generator().manual_seed(0))
    calls: list[tuple[int, int]] = []

    def decode_clip(start: int, end: int) -> ClipHeads:
        cls = torch.full((num_queries, num_classes), 0.01)
        cls[0, 1], cls[1, 2] = 0.9, 0.8
        coeff = torch.zeros(num_queries, num_objects + 1)
        coeff[0, 0] = coeff[1, 1] = 1.0
        coeff[:, -1] = 0.5
        return ClipHeads(cls, coeff, embeds + 0.01 * start)

    def mask_features(start: int, end: int) -> torch.Tensor:
        calls.append((start, end))
        return feats[:, start:end] * 8

    return decode_clip, mask_features, calls


def random_objects_video(num_frames: int, seed: int, size: tuple[int, int] = (12, 20)):
    """Callbacks of a random video: objects that enter, leave, are occluded and detected twice.

    Six objects with random lifetimes and motion; each clip decodes the objects visible in it (a query
    per object, class score in [0.15, 0.9], embedding = the object's + noise), one duplicate query
    (another embedding, same mask) and background queries. Mask coefficients vary with the clip, so
    averaged logits differ from any single clip's.
    """
    gen = torch.Generator().manual_seed(seed)
    height, width = size
    num_objects, num_queries, num_classes, embed_dim = 6, 12, 4, 8
    first = torch.randint(0, max(num_frames - 3, 1), (num_objects,), generator=gen)
    life = torch.randint(3, num_frames + 1, (num_objects,), generator=gen)
    occluded = torch.rand(num_objects, num_frames, generator=gen) < 0.15
    embeds = torch.randn(num_objects, embed_dim, generator=gen) * 2
    labels = torch.randint(0, num_classes, (num_objects,), generator=gen)
    scores = torch.rand(num_objects, generator=gen) * 0.75 + 0.15
    feats = torch.zeros(num_objects + 1, num_frames, height, width)
    for i in range(num_objects):
        y0, x0 = (int(v) for v in torch.randint(0, 6, (2,), generator=gen))
        vx = int(torch.randint(-1, 2, (1,), generator=gen))
        for t in range(int(first[i]), min(int(first[i] + life[i]), num_frames)):
            if not occluded[i, t]:
                x = (x0 + vx * t) % (width - 6)
                feats[i, t, y0 : y0 + 6, x : x + 6] = 1.0
    feats[-1] = -1.0

    def decode_clip(start: int, end: int) -> ClipHeads:
        g = torch.Generator().manual_seed(seed * 1000 + start)
        cls = torch.rand(num_queries, num_classes, generator=g) * 0.05
        coeff = torch.zeros(num_queries, num_objects + 1)
        coeff[:, -1] = 0.5
        embed = torch.randn(num_queries, embed_dim, generator=g)
        visible = [i for i in range(num_objects) if feats[i, start:end].any()]
        for q, i in enumerate(visible):
            cls[q, labels[i]] = scores[i]
            coeff[q, i] = 0.6 + 0.3 * float(torch.rand(1, generator=g))
            embed[q] = embeds[i] + 0.3 * torch.randn(embed_dim, generator=g)
        if visible:
            dup = len(visible)
            cls[dup, labels[visible[0]]] = scores[visible[0]] * 0.9
            coeff[dup] = coeff[0]
        return ClipHeads(cls, coeff.tanh(), embed)

    def mask_features(start: int, end: int) -> torch.Tensor:
        return feats[:, start:end] * 10

    return decode_clip, mask_features
