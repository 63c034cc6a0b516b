#!/usr/bin/env python
"""Peak memory of whole-video inference versus video length (CPU).

Runs `mdqe.inference.infer_video` on videos of several lengths at one resolution, each in a fresh
process, and reports the extra peak resident memory of the inference (the process's peak RSS above
its RSS once the model and the input frames are ready) and the time per frame.

Two sources of decoder outputs:
- `synthetic` (default): callbacks at the sizes of R50_ovis_360 (Q=196 queries, K=25 classes, M=32 mask
  channels, C=256, mask features at stride 4 of the padded input) that show objects entering, moving
  and leaving (one new object every 10 frames, each visible for 40, so four or five at any frame), plus
  low-scored background queries.
- `model`: the real MDQE meta-architecture built from --config-file (random weights; frames of random
  pixels), through `model(batched_inputs)` on one video.

    python tools/benchmarks/benchmark_video_memory.py --frames 30 300
    python tools/benchmarks/benchmark_video_memory.py --source model \\
        --config-file configs/synthetic/tiny.yaml --frames 30 300 --height 64 --width 64
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import subprocess
import sys
import time

import torch

from mdqe.inference import ClipHeads, VideoInferenceParams, infer_video
from mdqe.utils.memory import PeakRSS

logger = logging.getLogger("benchmark_video_memory")


class SyntheticVideo:
    """Decoder outputs and mask features of a synthetic video, generated per clip (no O(L) state)."""

    def __init__(
        self,
        num_queries: int = 196,
        num_classes: int = 25,
        mask_dim: int = 32,
        embed_dim: int = 256,
        feat_size: tuple[int, int] = (96, 160),
        new_object_every: int = 10,
        object_life: int = 40,
    ):
        self.num_queries, self.num_classes = num_queries, num_classes
        self.mask_dim, self.embed_dim = mask_dim, embed_dim
        self.feat_size = feat_size
        self.new_object_every, self.object_life = new_object_every, object_life

    def _alive(self, frame: int) -> list[int]:
        # Objects k enter at frame k * new_object_every (k < 0: before the video starts), so every
        # frame sees the same number of objects, whatever the video length.
        first = (frame - self.object_life) // self.new_object_every + 1
        return list(range(first, frame // self.new_object_every + 1))

    def _object(self, obj: int) -> tuple[torch.Tensor, int]:
        gen = torch.Generator().manual_seed(1000 + obj)
        return torch.randn(self.embed_dim, generator=gen), int(
            torch.randint(self.num_classes, (1,), generator=gen)
        )

    def decode_clip(self, start: int, end: int) -> ClipHeads:
        gen = torch.Generator().manual_seed(start)
        q, k = self.num_queries, self.num_classes
        cls = torch.rand(q, k, generator=gen) * 0.04
        coeff = torch.rand(q, self.mask_dim, generator=gen) * 2 - 1
        coeff[:, -1] = 1.0  # the last feature channel is a negative bias everywhere
        embed = torch.randn(q, self.embed_dim, generator=gen)
        objects = sorted(set(self._alive(start)) | set(self._alive(end - 1)))
        for j, obj in enumerate(objects[: q // 4]):
            query = 4 * j + start % 4
            obj_embed, label = self._object(obj)
            cls[query, label] = 0.6 + 0.3 * math.sin(obj)
            coeff[query, : self.mask_dim - 1] = 0.0
            coeff[query, obj % (self.mask_dim - 1)] = 1.0
            embed[query] = obj_embed + 0.05 * torch.randn(self.embed_dim, generator=gen)
        return ClipHeads(cls, coeff.tanh(), embed)

    def mask_features(self, start: int, end: int) -> torch.Tensor:
        height, width = self.feat_size
        feats = torch.zeros(self.mask_dim, end - start, height, width)
        feats[-1] = -4.0
        ys = torch.arange(height, dtype=torch.float32)[:, None]
        xs = torch.arange(width, dtype=torch.float32)[None]
        for t, frame in enumerate(range(start, end)):
            for obj in self._alive(frame):
                age = frame - obj * self.new_object_every
                cy = (17 * obj) % (height - 20) + 10
                cx = (31 * obj + 2 * age) % (width - 20) + 10
                blob = 8.0 * torch.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / 60.0)
                feats[obj % (self.mask_dim - 1), t] += blob
        return feats


def run_synthetic(args: argparse.Namespace, num_frames: int) -> dict:
    height, width = args.height, args.width
    pad_h, pad_w = math.ceil(height / 32) * 32, math.ceil(width / 32) * 32
    video = SyntheticVideo(feat_size=(pad_h // 4, pad_w // 4))
    # the inference keys of configs/R50_ovis_360.yaml
    ovis_360 = dict(clip_len=4, clip_stride=1, window_frames=30, max_num_instances=120, apply_cls_thres=0.1)
    params = VideoInferenceParams(**ovis_360, detections_per_image=15, num_classes=25, merge_on_cpu=True)
    output_size = (args.output_height or height, args.output_width or width)
    # Warm-up: lazily initialised library state is not inference memory.
    infer_video(8, video.decode_clip, video.mask_features, (height, width), output_size, params)
    return _measure(
        lambda: infer_video(
            num_frames, video.decode_clip, video.mask_features, (height, width), output_size, params
        ),
        num_frames,
    )


def run_model(args: argparse.Namespace, num_frames: int) -> dict:
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    from mdqe.config import add_mdqe_config

    cfg = get_cfg()
    add_mdqe_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", *args.opts])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    gen = torch.Generator().manual_seed(0)

    def video(length: int) -> dict:
        frames = [torch.randint(0, 256, (3, args.height, args.width), dtype=torch.uint8, generator=gen)]
        frames = frames * length  # one frame repeated: the input costs the same for every length
        return {
            "image": frames,
            "height": args.output_height or args.height,
            "width": args.output_width or args.width,
        }

    with torch.no_grad():
        model([video(8)])
        inputs = [video(num_frames)]
        return _measure(lambda: model(inputs), num_frames)


def _measure(fn, num_frames: int) -> dict:
    with PeakRSS() as rss:
        start = time.perf_counter()
        out = fn()
        seconds = time.perf_counter() - start
    if rss.baseline_kib is None or rss.peak_kib is None:
        raise RuntimeError("benchmark_video_memory measures memory through /proc/self/status (Linux only)")
    baseline, peak = rss.baseline_kib, rss.peak_kib
    return {
        "frames": num_frames,
        "seconds": seconds,
        "seconds_per_frame": seconds / num_frames,
        "baseline_mib": baseline / 1024,
        "peak_mib": peak / 1024,
        "extra_peak_mib": (peak - baseline) / 1024,
        "num_predictions": len(out["pred_scores"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--source", choices=["synthetic", "model"], default="synthetic")
    parser.add_argument("--config-file", default="configs/synthetic/tiny.yaml", help="for --source model")
    parser.add_argument("--frames", type=int, nargs="+", default=[30, 300])
    parser.add_argument("--height", type=int, default=360, help="network-input frame height")
    parser.add_argument("--width", type=int, default=640, help="network-input frame width")
    parser.add_argument(
        "--output-height", type=int, default=0, help="original video height (default: --height)"
    )
    parser.add_argument("--output-width", type=int, default=0, help="original video width (default: --width)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--one", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides (KEY VALUE ...)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    if args.one:
        runner = run_model if args.source == "model" else run_synthetic
        sys.stdout.write(json.dumps(runner(args, args.one)) + "\n")
        return

    results = []
    for num_frames in args.frames:
        cmd = [
            sys.executable,
            __file__,
            f"--source={args.source}",
            f"--config-file={args.config_file}",
            f"--height={args.height}",
            f"--width={args.width}",
            f"--output-height={args.output_height}",
            f"--output-width={args.output_width}",
            f"--threads={args.threads}",
            f"--one={num_frames}",
            *args.opts,
        ]
        line = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        results.append(json.loads(line))
        r = results[-1]
        logger.info(
            "%s %dx%d -> %dx%d, %4d frames: %.3f s/frame, extra peak RSS %.1f MiB (baseline %.0f MiB), "
            "%d predictions",
            args.source,
            args.height,
            args.width,
            args.output_height or args.height,
            args.output_width or args.width,
            r["frames"],
            r["seconds_per_frame"],
            r["extra_peak_mib"],
            r["baseline_mib"],
            r["num_predictions"],
        )
    if len(results) > 1:
        ratio = results[-1]["extra_peak_mib"] / results[0]["extra_peak_mib"]
        logger.info("peak ratio %d / %d frames: %.2f", results[-1]["frames"], results[0]["frames"], ratio)


if __name__ == "__main__":
    main()
