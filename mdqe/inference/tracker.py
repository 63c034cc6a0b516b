"""Cross-clip instance tracker of MDQE (the original's `OverTracker`, digest §5.3), with sparse memory.

Clips overlap in time. Each clip's instances are associated with the existing tracks by a bi-softmax
score on query embeddings plus the mask IoU on the frames the clip shares with earlier clips, then
assigned with the Hungarian algorithm. Mask logits are averaged over the clips that cover a frame.

The original keeps a dense (slots x MAX_NUM_INSTANCES x (window + clip) x Hf x Wf) tensor per window.
Here each frame that a later clip can still reach holds, per track that has a mask there, the sum of
the mask logits and the number of clips summed; a frame leaves the tracker (`pop_final_frames`) as soon
as no later clip covers it. Only the per-clip class scores and embeddings (small) are kept per slot.
The numbers are the original's: its window hand-over, which replaces a carried-over frame's sum by the
average (counted as one clip), is reproduced.

Track ids are assigned in order of creation. At most `max_num_instances` tracks exist per video (the
original's fixed memory would index out of range past it): once the cap is reached, further new
instances are dropped (with a warning) while existing tracks keep being associated.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from scipy.optimize import linear_sum_assignment

from .clip import ClipInstances

__all__ = ["FinalFrame", "OverlapTracker", "bisoftmax_similarity", "overlap_mask_iou"]

logger = logging.getLogger(__name__)

# Association: a pair is accepted if sIoU + bi-softmax score exceeds 0.1 + 0.5 (the original's
# siou/ctt match thresholds with unit weights).
_MATCH_THRESHOLD = 1 * 0.1 + 1 * 0.5
# An unmatched instance is a repeat of a track if its mask IoU or embedding score with it is this high.
_REPEAT_IOU = 0.4
_REPEAT_EMBED_SCORE = 0.6
# Long and short embedding memories span this many frames (divided by the clip stride).
_LONG_MEMORY_FRAMES = 15
_SHORT_MEMORY_MIN_FRAMES = 5
# Memory embeddings weigh later clips more: exp(0.25 i).
_MEMORY_WEIGHT_RATE = 0.25
# Number of most recent clips whose embeddings form a track's memory embedding.
_MEMORY_CLIPS = 3


@dataclass
class FinalFrame:
    """A frame that no later clip covers.

    Attributes:
        frame: index of the frame in the video.
        track_ids: (n,) int64 tracks with a mask in this frame.
        mask_logits: (n, Hf, Wf) mask logits averaged over the clips that covered the frame.
    """

    frame: int
    track_ids: torch.Tensor
    mask_logits: torch.Tensor


class _FrameSums:
    """Per-track running sums of one frame's mask logits."""

    def __init__(self, track_ids: torch.Tensor, logits: torch.Tensor):
        self.track_ids = track_ids
        self.sums = logits.clone()
        self.counts = torch.ones_like(track_ids)

    def add(self, track_ids: torch.Tensor, logits: torch.Tensor) -> None:
        hits = track_ids[:, None] == self.track_ids[None]  # (n_new, n_old)
        known = hits.any(dim=1)
        rows = hits[known].int().argmax(dim=1)
        self.sums[rows] += logits[known]
        self.counts[rows] += 1
        if not known.all():
            fresh = ~known
            self.track_ids = torch.cat([self.track_ids, track_ids[fresh]])
            self.sums = torch.cat([self.sums, logits[fresh]])
            self.counts = torch.cat([self.counts, torch.ones_like(track_ids[fresh])])

    def mean(self) -> torch.Tensor:
        return self.sums / self.counts[:, None, None]

    def carry_over(self) -> None:
        """Window hand-over of the original: the average becomes the sum of a single clip."""
        self.sums = self.mean()
        self.counts = torch.ones_like(self.counts)


def bisoftmax_similarity(track_embeds: torch.Tensor, clip_embeds: torch.Tensor) -> torch.Tensor:
    """Bi-softmax association score between tracks and clip instances.

    The mean of the softmax over tracks and the softmax over instances of the raw dot products; a side
    with a single element is left out (both single: 1).

    Args:
        track_embeds: (Ns, C) memory embeddings of the tracks.
        clip_embeds: (Ni, C) query embeddings of the clip's instances.

    Returns:
        (Ns, Ni) scores in [0, 1].
    """
    logits = track_embeds @ clip_embeds.t()
    num_tracks, num_insts = logits.shape
    over_tracks = logits.softmax(dim=0)
    over_insts = logits.softmax(dim=1)
    if num_tracks == 1 and num_insts == 1:
        return 0.5 * (over_tracks + over_insts)
    w_tracks = 1 if num_tracks > 1 else 0
    w_insts = 1 if num_insts > 1 else 0
    return (w_tracks * over_tracks + w_insts * over_insts) / max(w_tracks + w_insts, 1)


def overlap_mask_iou(saved: torch.Tensor, incoming: torch.Tensor) -> torch.Tensor:
    """IoU of binary masks pooled over frames and pixels; 0 unless both masks are non-empty.

    Args:
        saved: (Ns, P) bool masks of the tracks.
        incoming: (Ni, P) bool masks of the clip's instances.

    Returns:
        (Ns, Ni) intersection / (union + 1e-6).
    """
    saved, incoming = saved.float(), incoming.float()
    intersection = saved @ incoming.t()
    saved_area, incoming_area = saved.sum(-1), incoming.sum(-1)
    union = saved_area[:, None] + incoming_area[None] - intersection
    both = (saved_area > 0)[:, None] & (incoming_area > 0)[None]
    return (intersection * both) / (union * both + 1e-6)


class OverlapTracker:
    """Associates the instances of overlapping clips into video-level tracks.

    Call `update` for each clip in order, `pop_final_frames` once frames can no longer be reached by a
    later clip, and `end_window` every `window_frames` frames (the original's `get_result`).
    """

    def __init__(
        self,
        clip_len: int,
        clip_stride: int,
        window_frames: int,
        num_classes: int,
        embed_dim: int,
        max_num_instances: int,
        apply_cls_thres: float,
        device: torch.device | str = "cpu",
    ):
        """
        Args:
            clip_len: frames per clip (SAMPLING_FRAME_NUM_TEST).
            clip_stride: frames between clip starts (CLIP_STRIDE).
            window_frames: frames per window (WINDOW_FRAME_NUM_TEST).
            num_classes: K.
            embed_dim: C, query embedding size.
            max_num_instances: cap on the number of tracks (MAX_NUM_INSTANCES).
            apply_cls_thres: new tracks need a score above twice this (APPLY_CLS_THRES).
            device: where the tracker state lives.
        """
        self.clip_len = clip_len
        self.clip_stride = clip_stride
        self.window_frames = window_frames
        self.max_num_instances = max_num_instances
        self.new_track_score = 2 * apply_cls_thres
        self.device = torch.device(device)
        self.long_memory = _LONG_MEMORY_FRAMES // clip_stride
        self.short_memory = max(clip_len, _SHORT_MEMORY_MIN_FRAMES) // clip_stride
        self.memory_weights = torch.exp(
            torch.arange(self.long_memory, device=self.device) * _MEMORY_WEIGHT_RATE
        )

        self.num_tracks = 0
        self.window_start = 0
        self.last_seen_frame = -1
        self._untracked = torch.zeros(max_num_instances, device=self.device)
        self._memory_embeds = torch.zeros(max_num_instances, embed_dim, device=self.device)
        # Per clip slot of the current window (slot 0 of later windows: what the previous one hands over).
        num_slots = window_frames // clip_stride + 2
        self._slot_cls = torch.zeros(num_slots, max_num_instances, num_classes, device=self.device)
        self._slot_embeds = torch.zeros(num_slots, max_num_instances, embed_dim, device=self.device)
        self._slot_valid = torch.zeros(num_slots, max_num_instances, dtype=torch.bool, device=self.device)
        self._num_slots = 0
        self._open: dict[int, _FrameSums] = {}
        self._warned_cap = False

    @property
    def num_open_frames(self) -> int:
        """Number of frames whose mask sums are held."""
        return len(self._open)

    def update(self, frame_start: int, clip: ClipInstances) -> tuple[torch.Tensor, torch.Tensor]:
        """Associate the clip of frames [frame_start, frame_start + T) with the tracks and store it.

        Returns:
            track_ids (m,) and clip_idx (m,) int64: instance clip_idx[i] extends (or opens) track
            track_ids[i]; matched pairs first (in track order), then new tracks.
        """
        clip = clip.to(self.device)
        if frame_start < self.window_start:
            raise ValueError(
                f"clip starting at frame {frame_start} precedes the window start {self.window_start}"
            )

        num_insts = len(clip)
        if self.num_tracks == 0:
            track_ids = torch.zeros(0, dtype=torch.int64, device=self.device)
            clip_idx = track_ids
            new = torch.ones(num_insts, dtype=torch.bool, device=self.device)
        else:
            track_ids, clip_idx, new = self._associate(frame_start, clip)

        new_idx = new.nonzero().flatten()
        room = self.max_num_instances - self.num_tracks
        if new_idx.numel() > room:
            if not self._warned_cap:
                logger.warning(
                    "More than MAX_NUM_INSTANCES=%d tracks in this video: "
                    "new instances are dropped from frame %d on",
                    self.max_num_instances,
                    frame_start,
                )
                self._warned_cap = True
            new_idx = new_idx[:room]
        new_ids = torch.arange(self.num_tracks, self.num_tracks + new_idx.numel(), device=self.device)
        track_ids = torch.cat([track_ids, new_ids])
        clip_idx = torch.cat([clip_idx, new_idx])
        self.num_tracks += new_idx.numel()

        self._store(frame_start, clip, track_ids, clip_idx)
        return track_ids, clip_idx

    def _associate(
        self, frame_start: int, clip: ClipInstances
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Hungarian matching of clip instances to tracks.

        Returns:
            track_ids (m,), clip_idx (m,) of the accepted pairs, and new (n,) bool: unmatched
            instances that are not repeats of a track and are confident enough to open a track.
        """
        num_tracks = self.num_tracks
        memory = self._memory_embeds[:num_tracks]
        untracked = self._untracked[:num_tracks]
        long_term = untracked < self.long_memory
        short_term = untracked < self.short_memory
        embed_scores = torch.zeros(num_tracks, len(clip), device=self.device)
        embed_scores[long_term] = bisoftmax_similarity(memory[long_term], clip.query_embeds)
        embed_scores[short_term] = 0.5 * (
            embed_scores[short_term] + bisoftmax_similarity(memory[short_term], clip.query_embeds)
        )
        mask_scores = self._overlap_iou(frame_start, clip)

        scores = mask_scores + embed_scores
        above = scores > _MATCH_THRESHOLD
        scores = scores * above.float()
        rows, cols = linear_sum_assignment(scores.cpu().numpy(), maximize=True)
        rows = torch.as_tensor(rows, dtype=torch.int64, device=self.device)
        cols = torch.as_tensor(cols, dtype=torch.int64, device=self.device)
        accepted = above[rows, cols]
        rows, cols = rows[accepted], cols[accepted]

        mask_scores[rows, cols] = -1
        embed_scores[rows, cols] = 0
        unmatched = torch.ones(len(clip), dtype=torch.bool, device=self.device)
        unmatched[cols] = False
        repeated = (mask_scores.max(dim=0).values > _REPEAT_IOU) | (
            embed_scores.max(dim=0).values > _REPEAT_EMBED_SCORE
        )
        new = unmatched & ~repeated & (clip.scores > self.new_track_score)
        return rows, cols, new

    def _overlap_iou(self, frame_start: int, clip: ClipInstances) -> torch.Tensor:
        """(num_tracks, n) mask IoU on the clip's frames already covered by earlier clips of the window.

        A track's mask there is its summed logits divided by the number of the window's clip slots in
        which it appears (the original's normalisation), binarised at sigmoid > 0.5.
        """
        frame_end = frame_start + clip.mask_logits.shape[1]
        overlap = range(max(frame_start, self.window_start), min(frame_end, self.last_seen_frame + 1))
        ious = torch.zeros(self.num_tracks, len(clip), device=self.device)
        if len(overlap) == 0 or len(clip) == 0:
            return ious
        held = [(k, self._open[frame]) for k, frame in enumerate(overlap) if frame in self._open]
        if not held:
            return ious
        # Only the tracks with a mask in the shared frames can overlap (others score 0, as in the original).
        tracks = torch.unique(torch.cat([sums.track_ids for _, sums in held]))
        row_of = torch.full((self.num_tracks,), -1, dtype=torch.int64, device=self.device)
        row_of[tracks] = torch.arange(tracks.numel(), device=self.device)
        slots_per_track = self._slot_valid[: self._num_slots, : self.num_tracks].sum(dim=0).clamp(min=1)
        height, width = clip.mask_logits.shape[-2:]
        saved = torch.zeros(tracks.numel(), len(overlap), height, width, dtype=torch.bool, device=self.device)
        for k, sums in held:
            denom = slots_per_track[sums.track_ids]
            saved[row_of[sums.track_ids], k] = (sums.sums / denom[:, None, None]).sigmoid() > 0.5
        incoming = (
            clip.mask_logits[:, overlap.start - frame_start : overlap.stop - frame_start].sigmoid() > 0.5
        )
        ious[tracks] = overlap_mask_iou(saved.flatten(1), incoming.flatten(1))
        return ious

    def _store(
        self, frame_start: int, clip: ClipInstances, track_ids: torch.Tensor, clip_idx: torch.Tensor
    ) -> None:
        slot = self._num_slots
        if slot == self._slot_valid.shape[0]:
            raise RuntimeError(
                "OverlapTracker: more clips in a window than slots; call end_window every window"
            )
        num_frames = clip.mask_logits.shape[1]
        if track_ids.numel() > 0:
            logits = clip.mask_logits[clip_idx]
            for k in range(num_frames):
                frame = frame_start + k
                sums = self._open.get(frame)
                if sums is None:
                    self._open[frame] = _FrameSums(track_ids, logits[:, k])
                else:
                    sums.add(track_ids, logits[:, k])
            self._slot_cls[slot, track_ids] = clip.cls_probs[clip_idx]
            self._slot_embeds[slot, track_ids] = clip.query_embeds[clip_idx]
            self._slot_valid[slot, track_ids] = True

        self._untracked += 1
        self._untracked[track_ids] = 0
        if slot > 0:
            recent = self._slot_embeds[max(slot - (_MEMORY_CLIPS - 1), 0) : slot + 1][
                :, track_ids
            ]  # (S, m, C)
            weights = self.memory_weights[: recent.shape[0]].reshape(-1, 1, 1)
            present = (recent != 0).any(dim=-1)[..., None]
            self._memory_embeds[track_ids] = (recent * weights).sum(0) / (present * weights).sum(0).clamp(
                min=1
            )
        else:
            self._memory_embeds[track_ids] = clip.query_embeds[clip_idx]
        self.last_seen_frame = max(self.last_seen_frame, frame_start + num_frames - 1)
        self._num_slots += 1

    def end_window(self, is_last: bool) -> torch.Tensor:
        """Close the current window (the original's `get_result`).

        Args:
            is_last: the video ends with this window; otherwise the state is handed over to the next
                window, which starts `window_frames` frames later.

        Returns:
            (num_tracks, K) class scores of the window: the mean of the clip scores of the window's
            slots in which the track appears (0 for tracks absent from the window).
        """
        num_slots, num_tracks = self._num_slots, self.num_tracks
        present = self._slot_valid[:num_slots, :num_tracks, None]
        cls = (self._slot_cls[:num_slots, :num_tracks] * present).sum(0) / present.sum(0).clamp(min=1)
        if is_last:
            return cls

        recent = min(max(_MEMORY_CLIPS, (self.clip_len - 1) // self.clip_stride), num_slots)
        weights = present[num_slots - recent :] * self.memory_weights[:recent].reshape(-1, 1, 1)
        embeds = (self._slot_embeds[num_slots - recent : num_slots, :num_tracks] * weights).sum(0)
        embeds = embeds / weights.sum(0).clamp(min=1)

        self.window_start += self.window_frames
        self._slot_cls.zero_()
        self._slot_embeds.zero_()
        self._slot_valid.zero_()
        self._slot_cls[0, :num_tracks] = cls
        self._slot_embeds[0, :num_tracks] = embeds
        for frame, sums in self._open.items():
            if frame >= self.window_start:
                sums.carry_over()
                self._slot_valid[0, sums.track_ids] = True
        self._num_slots = 1
        return cls

    def pop_final_frames(self, before: int) -> list[FinalFrame]:
        """Remove and return the frames < `before` (no later clip may cover them), in frame order."""
        done = sorted(frame for frame in self._open if frame < before)
        return [self._final(frame, self._open.pop(frame)) for frame in done]

    @staticmethod
    def _final(frame: int, sums: _FrameSums) -> FinalFrame:
        return FinalFrame(frame=frame, track_ids=sums.track_ids, mask_logits=sums.mean())
