"""A dense re-statement of the original tracker's memory, as a test oracle for the sparse tracker.

It keeps, like the original, a (slots x tracks x (window + clip) x Hf x Wf) tensor of logits per window
and recomputes averages from it; only suitable for tiny inputs.
"""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment

from mdqe.inference.tracker import bisoftmax_similarity, overlap_mask_iou


class DenseTracker:
    def __init__(self, clip_len, clip_stride, window_frames, num_classes, embed_dim, size, thresh, cap=64):
        self.T, self.stride, self.W = clip_len, clip_stride, window_frames
        self.K, self.C, self.size, self.thresh, self.cap = num_classes, embed_dim, size, thresh, cap
        self.span = window_frames + clip_len
        self.slots = window_frames // clip_stride + 2
        self.weights = torch.exp(torch.arange(15 // clip_stride) * 0.25)
        self.n = 0
        self.start = 0
        self.seen: set[int] = set()
        self.untracked = torch.zeros(cap)
        self.mem = torch.zeros(cap, embed_dim)
        self._fresh_window()
        self.slot = 0

    def _fresh_window(self):
        self.logits = torch.zeros(self.slots, self.cap, self.span, *self.size)
        self.valid = torch.zeros(self.slots, self.cap, self.span, dtype=torch.bool)
        self.cls = torch.zeros(self.slots, self.cap, self.K)
        self.emb = torch.zeros(self.slots, self.cap, self.C)

    def update(self, frame_start, clip):
        t_clip = clip.mask_logits.shape[1]
        frames = list(range(frame_start, frame_start + t_clip))
        m = len(clip)
        if self.n == 0:
            rows, cols = list(range(m)), list(range(m))
            self.n = m
        else:
            n = self.n
            long_ = (self.untracked[:n] < 15 // self.stride).nonzero().flatten()
            short = (self.untracked[:n] < max(self.T, 5) // self.stride).nonzero().flatten()
            emb = torch.zeros(n, m)
            emb[long_] = bisoftmax_similarity(self.mem[:n][long_], clip.query_embeds)
            emb[short] = 0.5 * (emb[short] + bisoftmax_similarity(self.mem[:n][short], clip.query_embeds))
            shared = [f for f in frames if f in self.seen and f >= self.start]
            iou = torch.zeros(n, m)
            if shared:
                rel = [f - self.start for f in shared]
                sums = self.logits[: self.slot, :n][:, :, rel].sum(0)
                count = self.valid[: self.slot, :n].any(-1).sum(0).clamp(min=1)
                saved = (sums / count.reshape(-1, 1, 1, 1)).sigmoid() > 0.5
                incoming = clip.mask_logits[:, [f - frame_start for f in shared]].sigmoid() > 0.5
                iou = overlap_mask_iou(saved.flatten(1), incoming.flatten(1))
            total = iou + emb
            above = total > 0.6
            r_idx, c_idx = linear_sum_assignment((total * above).numpy(), maximize=True)
            rows, cols = [], []
            for r, c in zip(r_idx.tolist(), c_idx.tolist()):
                if above[r, c]:
                    rows.append(r)
                    cols.append(c)
                    iou[r, c], emb[r, c] = -1, 0
            new = []
            for c in range(m):
                if c in cols:
                    continue
                if iou[:, c].max() > 0.4 or emb[:, c].max() > 0.6:
                    continue
                if clip.scores[c] > 2 * self.thresh:
                    new.append(c)
            rows += list(range(n, n + len(new)))
            cols += new
            self.n += len(new)
        lo = frame_start - self.start
        self.logits[self.slot, rows, lo : lo + t_clip] = clip.mask_logits[cols]
        self.valid[self.slot, rows, lo : lo + t_clip] = True
        self.cls[self.slot, rows] = clip.cls_probs[cols]
        self.emb[self.slot, rows] = clip.query_embeds[cols]
        self.untracked += 1
        self.untracked[rows] = 0
        if self.slot > 0:
            hist = self.emb[max(self.slot - 2, 0) : self.slot + 1][:, rows]
            w = self.weights[: hist.shape[0]].reshape(-1, 1, 1)
            present = (hist != 0).any(-1)[..., None]
            self.mem[rows] = (hist * w).sum(0) / (present * w).sum(0).clamp(min=1)
        else:
            self.mem[rows] = clip.query_embeds[cols]
        self.seen.update(frames)
        self.slot += 1
        return rows, cols

    def window(self, is_last):
        n, s = self.n, self.slot
        valid = self.valid[:s, :n]
        logits = self.logits[:s, :n].sum(0) / valid.sum(0).clamp(min=1)[..., None, None]
        length = self.W if not is_last else max(self.seen) - self.start + 1
        present = valid.any(-1)[..., None]
        cls = (self.cls[:s, :n] * present).sum(0) / present.sum(0).clamp(min=1)
        nc = min(max(3, (self.T - 1) // self.stride), s)
        w = present[-nc:] * self.weights[:nc].reshape(-1, 1, 1)
        emb = (self.emb[s - nc : s, :n] * w).sum(0) / w.sum(0).clamp(min=1)
        if not is_last:
            self.start += self.W
            self.seen = {f for f in self.seen if f >= self.start}
            self._fresh_window()
            self.logits[0, :n, : self.span - self.W] = logits[:, self.W :]
            self.valid[0, :n, : self.span - self.W] = valid[:, :, self.W :].any(0)
            self.cls[0, :n] = cls
            self.emb[0, :n] = emb
            self.slot = 1
        return cls, logits[:, :length]
