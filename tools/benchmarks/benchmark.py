#!/usr/bin/env python
"""Speed and memory of the MDQE model: whole-video inference and training iterations.

Builds the model of a config (random weights unless --weights), then
- runs whole-video inference (`model([video])`) on a synthetic video of --frames frames at
  --height x --width, and reports seconds per frame and the extra peak memory of the call (CPU: peak
  RSS during the call minus RSS before it, via /proc/self/clear_refs; CUDA: peak allocated);
- runs --train-iters training iterations (forward, backward) on a synthetic clip of
  INPUT.SAMPLING_FRAME_NUM frames at --train-height x --train-width and reports seconds per iteration;
- with --profile, prints the operators that take the most time during inference.

    python tools/benchmarks/benchmark.py --config configs/R50_ovis_360.yaml --frames 12 \\
        --height 360 --width 640
    python tools/benchmarks/benchmark.py --config configs/R50_ovis_360.yaml --device cuda --amp
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import time

import torch
from detectron2.config import get_cfg

import mdqe  # noqa: F401  (registers MDQE)
from mdqe.benchmark.synthetic import synthetic_clip, synthetic_frames
from mdqe.config import add_mdqe_config
from mdqe.modeling import MDQE
from mdqe.utils.memory import PeakRSS

logger = logging.getLogger("mdqe.benchmark")


class PeakMemory:
    """Extra peak memory (bytes) of the enclosed block: peak RSS on CPU, peak allocation on CUDA."""

    def __init__(self, device: torch.device):
        self.device = device
        self.extra_bytes: int | None = None

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
        else:
            self.rss = PeakRSS().__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.extra_bytes = torch.cuda.max_memory_allocated(self.device) - self.base
        else:
            self.rss.__exit__(*exc)
            self.extra_bytes = self.rss.extra_bytes


class StageTimer:
    """Wall time spent in the model's stages during the enclosed block (by wrapping their methods)."""

    def __init__(self, model: MDQE, device: torch.device):
        self.device = device
        self.seconds: dict[str, float] = {}
        detr = model.detr
        dec = detr.transformer_dec
        self.targets = {
            "backbone": (detr.backbone, "forward"),
            "backbone + input projections + encoder": (detr, "encode"),
            "mask head": (dec.mask_head, "forward"),
            "query selection": (dec, "init_frame_queries"),
            "decoder value projections": (dec, "project_values"),
            "decoder (per clip)": (dec, "decode"),
        }

    def _timed(self, name: str, fn):
        def wrapped(*args, **kwargs):
            _sync(self.device)
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            _sync(self.device)
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
            return out

        return wrapped

    def __enter__(self) -> StageTimer:
        for name, (obj, attr) in self.targets.items():
            setattr(obj, attr, self._timed(name, getattr(obj, attr)))
        return self

    def __exit__(self, *exc) -> None:
        for obj, attr in self.targets.values():
            delattr(obj, attr)  # the instance attribute shadowed the class's method


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="configs/R50_ovis_360.yaml")
    parser.add_argument("--weights", default="", help="checkpoint to load (default: random weights)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", action="store_true", help="inference/training under autocast (fp16 on CUDA)")
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--warmup-frames", type=int, default=4, help="frames of an unmeasured warm-up video")
    parser.add_argument("--train-iters", type=int, default=2, help="0 skips the training benchmark")
    parser.add_argument("--train-height", type=int, default=320)
    parser.add_argument("--train-width", type=int, default=448)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--profile", action="store_true", help="print the top operators of inference")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)

    cfg = get_cfg()
    add_mdqe_config(cfg)
    cfg.merge_from_file(args.config)
    cfg.merge_from_list(args.opts)
    cfg.MODEL.DEVICE = args.device
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = MDQE(cfg).to(device).eval()
    if args.weights:
        from mdqe.checkpoint import MDQECheckpointer  # never runs code from the file

        MDQECheckpointer(model).load(args.weights)
    amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16

    def autocast():
        return torch.autocast(device.type, dtype=amp_dtype, enabled=args.amp)

    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    print(
        f"config {args.config}, device {device} ({torch.get_num_threads()} CPU threads{load}), amp {args.amp}"
    )
    warmup = {"image": synthetic_frames(args.warmup_frames, args.height, args.width, seed=2)}
    with torch.no_grad(), autocast():
        model([warmup])
    video = {"image": synthetic_frames(args.frames, args.height, args.width)}
    profiler = torch.profiler.profile() if args.profile else contextlib.nullcontext()
    timer = StageTimer(model, device)
    with profiler as prof, PeakMemory(device) as peak, timer, torch.no_grad(), autocast():
        _sync(device)
        start, cpu_start = time.perf_counter(), time.process_time()
        out = model([video])
        _sync(device)
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    memory = "n/a" if peak.extra_bytes is None else f"{peak.extra_bytes / 2**30:.2f} GiB"
    print(
        f"inference: {args.frames} frames {args.height}x{args.width}: {seconds:.1f} s, "
        f"{seconds / args.frames:.2f} s/frame ({cpu_seconds / args.frames:.2f} CPU-s/frame of this process), "
        f"extra peak memory {memory}, {len(out['pred_scores'])} outputs"
    )
    stages = ", ".join(f"{name} {sec:.1f} s" for name, sec in timer.seconds.items())
    print(f"  stages: {stages}; the rest (clip post-processing, tracking, RLE) is in the total")
    if args.profile:
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))

    if args.train_iters > 0:
        model.train()
        clip = synthetic_clip(
            cfg.INPUT.SAMPLING_FRAME_NUM, args.train_height, args.train_width, cfg.MODEL.MDQE.NUM_CLASSES
        )
        times, cpu_times = [], []
        for _ in range(args.train_iters + 1):
            _sync(device)
            start, cpu_start = time.perf_counter(), time.process_time()
            with autocast():
                losses = model([clip])
            sum(losses.values()).backward()
            model.zero_grad(set_to_none=True)
            _sync(device)
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)
        per_iter = sum(times[1:]) / len(times[1:])  # the first iteration is a warm-up
        cpu_per_iter = sum(cpu_times[1:]) / len(cpu_times[1:])
        size = f"{args.train_height}x{args.train_width}"
        print(
            f"training: 1 clip of {cfg.INPUT.SAMPLING_FRAME_NUM} frames {size}: "
            f"{per_iter:.2f} s/iteration ({cpu_per_iter:.1f} CPU-s), "
            f"mean of {args.train_iters} after a warm-up"
        )


if __name__ == "__main__":
    main()
