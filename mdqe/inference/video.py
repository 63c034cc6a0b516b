"""Whole-video inference: clips, per-clip post-processing, cross-clip tracking, video-level merge."""

from __future__ import annotations

import contextlib
from typing import Any, Callable

import torch

from .clip import postprocess_clip
from .masks import encode_frame_masks
from .tracker import FinalFrame, OverlapTracker
from .types import ClipHeads, VideoInferenceParams

__all__ = ["VideoResultAssembler", "clip_starts", "infer_video", "merge_window_scores", "select_predictions"]

# The final top-k keeps at least this many (track, class) pairs, and every pair scored above _MIN_SCORE.
_MIN_TOPK = 10
_MIN_SCORE = 0.05


def clip_starts(num_frames: int, clip_len: int, clip_stride: int) -> list[tuple[int, int]]:
    """The clips [start, end) of a video, as the original's loop visits them.

    Clips start at 0, stride, 2 stride, ...; the first clip that would run past the end is truncated
    and is the last one. The original also stops (without flushing its last window) when a clip ends
    exactly at the video end and no later start exists; here that clip is the last one.
    """
    clips = []
    for start in range(0, num_frames, clip_stride):
        end = start + clip_len
        clips.append((start, min(end, num_frames)))
        if end > num_frames:
            break
    return clips


def merge_window_scores(window_scores: list[torch.Tensor]) -> torch.Tensor:
    """Video-level class scores of the tracks.

    Args:
        window_scores: per window (N_w, K) class scores; N_w grows with the windows (tracks created
            later are missing from earlier windows and count as 0).

    Returns:
        (N, K) 0.75 * mean + 0.25 * max over the windows.
    """
    num_tracks = window_scores[-1].shape[0]
    padded = torch.stack(
        [torch.cat([s, s.new_zeros(num_tracks - s.shape[0], s.shape[1])]) for s in window_scores]
    )
    return 0.75 * padded.mean(0) + 0.25 * padded.max(0).values


def select_predictions(scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Multi-label top-k over (track, class) pairs: k = max(#(score > 0.05), 10), at most N * K.

    A track can be emitted under several classes. The original takes an unsorted top-k; here the pairs
    come sorted by score (descending, ties: track then class ascending).

    Args:
        scores: (N, K) video-level class scores.

    Returns:
        track (k,), label (k,) int64 and score (k,).
    """
    flat = scores.flatten()
    k = min(max(int((flat > _MIN_SCORE).sum()), _MIN_TOPK), flat.numel())
    order = flat.sort(descending=True, stable=True).indices[:k]
    num_classes = scores.shape[1]
    return order // num_classes, order % num_classes, flat[order]


class VideoResultAssembler:
    """Collects final frames (as RLE) and window scores, and builds the per-video output dict."""

    def __init__(
        self, num_frames: int, match_stride: int, image_size: tuple[int, int], output_size: tuple[int, int]
    ):
        """
        Args:
            num_frames: L.
            match_stride: upsampling factor of the mask logits.
            image_size: (h, w) unpadded network-input size.
            output_size: (H, W) original video size.
        """
        self.num_frames = num_frames
        self.match_stride = match_stride
        self.image_size = tuple(image_size)
        self.output_size = tuple(output_size)
        self._rles: list[dict[int, dict]] = []  # per track: frame -> RLE of its non-empty masks
        self._window_scores: list[torch.Tensor] = []

    def add_frame(self, frame: FinalFrame) -> None:
        """Encode one final frame's masks and drop the logits."""
        rles = encode_frame_masks(frame.mask_logits, self.match_stride, self.image_size, self.output_size)
        for track, rle in zip(frame.track_ids.tolist(), rles):
            while len(self._rles) <= track:
                self._rles.append({})
            if rle is not None:
                self._rles[track][frame.frame] = rle

    def add_window(self, scores: torch.Tensor) -> None:
        """Class scores (N_w, K) of a window's tracks."""
        self._window_scores.append(scores.cpu())

    def result(self) -> dict[str, Any]:
        """The per-video output dict (see `infer_video`)."""
        scores = merge_window_scores(self._window_scores)
        tracks, labels, values = select_predictions(scores)
        per_track = {}
        for track in set(tracks.tolist()):
            rles = self._rles[track] if track < len(self._rles) else {}
            per_track[track] = [rles.get(frame) for frame in range(self.num_frames)]
        return {
            "image_size": self.output_size,
            "pred_scores": values.tolist(),
            "pred_labels": labels.tolist(),
            "pred_masks": [per_track[track] for track in tracks.tolist()],
        }


def infer_video(
    num_frames: int,
    decode_clip: Callable[[int, int], ClipHeads],
    mask_features: Callable[[int, int], torch.Tensor],
    image_size: tuple[int, int],
    output_size: tuple[int, int],
    params: VideoInferenceParams,
) -> dict[str, Any]:
    """Run MDQE's clip-by-clip inference over a whole video (the original's `inference_vis`).

    Memory is bounded by the clip length: the tracker holds mask sums only for frames a later clip can
    still cover, and masks leave as RLE as soon as their frame is final.

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
        "pred_masks": list (one per prediction) of L per-frame pycocotools RLE dicts, None for empty
        frames}; predictions sorted by score (descending).
    """
    if num_frames < 1:
        raise ValueError(f"infer_video: the video has no frames (num_frames={num_frames})")
    tracker = None
    assembler = VideoResultAssembler(num_frames, params.match_stride, image_size, output_size)
    num_windows = 0
    clips = clip_starts(num_frames, params.clip_len, params.clip_stride)
    for i, (start, end) in enumerate(clips):
        heads = decode_clip(start, end)
        feats = mask_features(start, end)
        with _outside_autocast(feats.device.type):
            tracker, num_windows = _track_clip(
                tracker, assembler, num_windows, heads, feats, start, i == len(clips) - 1, num_frames, params
            )
    return assembler.result()


@contextlib.contextmanager
def _outside_autocast(device_type: str):
    """Post-processing and tracking run in float32 even when the network ran under an enclosing autocast
    (AMP inference): their matrix products would otherwise follow autocast's lower precision."""
    if torch.is_autocast_enabled(device_type):
        with torch.autocast(device_type, enabled=False):
            yield
    else:
        yield


def _track_clip(
    tracker: OverlapTracker | None,
    assembler: VideoResultAssembler,
    num_windows: int,
    heads: ClipHeads,
    feats: torch.Tensor,
    start: int,
    is_last: bool,
    num_frames: int,
    params: VideoInferenceParams,
) -> tuple[OverlapTracker, int]:
    """Post-process the clip starting at `start` (heads, and feats (M, T, Hf, Wf)), hand it to the tracker
    (made at the first clip), and pass closed windows and final frames to the assembler. Returns the
    tracker and the number of windows closed so far."""
    heads = ClipHeads(*(t.float() for t in (heads.cls_probs, heads.mask_coeff, heads.query_embed)))
    feats = feats.float()
    if tracker is None:
        if heads.cls_probs.shape[1] != params.num_classes:
            raise ValueError(
                f"infer_video: decode_clip returned {heads.cls_probs.shape[1]} classes, "
                f"MODEL.MDQE.NUM_CLASSES is {params.num_classes}"
            )
        device = torch.device("cpu") if params.merge_on_cpu else feats.device
        tracker = OverlapTracker(
            clip_len=params.clip_len,
            clip_stride=params.clip_stride,
            window_frames=params.window_frames,
            num_classes=params.num_classes,
            embed_dim=heads.query_embed.shape[1],
            max_num_instances=params.max_num_instances,
            apply_cls_thres=params.apply_cls_thres,
            device=device,
        )
    instances = postprocess_clip(heads, feats, params.apply_cls_thres, 10 * params.detections_per_image)
    tracker.update(start, instances)

    if is_last or start + params.clip_stride >= params.window_frames * (num_windows + 1):
        assembler.add_window(tracker.end_window(is_last=is_last))
        num_windows += 1
    for frame in tracker.pop_final_frames(num_frames if is_last else start + params.clip_stride):
        assembler.add_frame(frame)
    return tracker, num_windows
