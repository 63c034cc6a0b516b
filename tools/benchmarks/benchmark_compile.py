#!/usr/bin/env python
"""CPU speed of MDQE's execution variants: eager, torch.compile (MODEL.MDQE.COMPILE), channels_last
(MODEL.MDQE.CHANNELS_LAST), bfloat16 autocast (MODEL.MDQE.AUTOCAST_BF16) and onnxruntime (an export of
mdqe.deploy), for whole-video inference and for the main job's training iteration.

    python tools/benchmarks/benchmark_compile.py                      # everything (~30-60 min on 2 cores)
    python tools/benchmarks/benchmark_compile.py --part inference --variants eager compile
    python tools/benchmarks/benchmark_compile.py --part train --train-iters 20
    python tools/benchmarks/benchmark_compile.py --part train --train-one-size --profile 15

Inference: whole-video inference of --inference-config (random weights, seed 0) on a --frames-frame
synthetic video of --height x --width, seconds per frame (the best of --repeats videos after a first
one). Training: forward, backward and AdamW step of --train-config on batches of SOLVER.IMS_PER_BATCH
clips of held-out-free synthetic training videos (mdqe.data.synthetic, regenerated in memory) resized to
short sides cycling through INPUT.MIN_SIZE_TRAIN (so frame sizes change between iterations as in
training), seconds per iteration (median of --train-iters after --train-warmup); --train-one-size repeats
the first batch instead (one frame size: the static-shape case, as a sampler that buckets sizes would
give). The first call of a variant (its compilation, for the compiled ones; its export, for onnxruntime)
is timed separately. --profile N prints the N operators with the most self CPU time in 5 training
iterations of each variant, run after the timed ones (torch.profiler).
Prints one table; run it on an otherwise idle machine and give the load average with the figures.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Callable

import numpy as np
import torch
from detectron2.config import CfgNode, get_cfg
from detectron2.data import transforms as T
from detectron2.structures import BitMasks, Instances

import mdqe  # noqa: F401  (registers MDQE)
from mdqe.config import add_mdqe_config
from mdqe.data.synthetic import split_video
from mdqe.modeling import MDQE

logger = logging.getLogger("mdqe.benchmark")

VARIANTS = {
    "eager": [],
    "compile": ["MODEL.MDQE.COMPILE", True],
    "channels_last": ["MODEL.MDQE.CHANNELS_LAST", True],
    "bf16": ["MODEL.MDQE.AUTOCAST_BF16", True],
    "compile+channels_last": ["MODEL.MDQE.COMPILE", True, "MODEL.MDQE.CHANNELS_LAST", True],
    "compile+bf16": ["MODEL.MDQE.COMPILE", True, "MODEL.MDQE.AUTOCAST_BF16", True],
    "onnxruntime": [],
}


def load_cfg(path: str, opts: list) -> CfgNode:
    cfg = get_cfg()
    add_mdqe_config(cfg)
    cfg.merge_from_file(path)
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", *opts])
    return cfg


def build(cfg: CfgNode) -> MDQE:
    torch.manual_seed(0)
    return MDQE(cfg)


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def inference_video(frames: int, height: int, width: int) -> list[np.ndarray]:
    """A synthetic video (smoothly moving noise blobs), RGB uint8 (H, W, 3) frames."""
    g = np.random.default_rng(0)
    base = g.integers(0, 256, (height + frames * 4, width + frames * 4, 3), dtype=np.uint8)
    return [np.ascontiguousarray(base[4 * t : 4 * t + height, 4 * t : 4 * t + width]) for t in range(frames)]


def bench_inference(args: argparse.Namespace, variant: str) -> tuple[float, float]:
    """(first call in s, best s / frame) of whole-video inference."""
    frames = inference_video(args.frames, args.height, args.width)
    if variant == "onnxruntime":
        run, first = onnx_runner(args, frames)
    else:
        model = build(load_cfg(args.inference_config, VARIANTS[variant])).eval()
        video = {"image": [torch.as_tensor(f.transpose(2, 0, 1).copy()) for f in frames]}

        def run() -> None:
            with torch.no_grad():
                model([video])

        first = timed(run)
    return first, min(timed(run) for _ in range(args.repeats)) / args.frames


def onnx_runner(args: argparse.Namespace, frames: list[np.ndarray]) -> tuple[Callable[[], None], float]:
    """Export the random-weight model (through a temporary checkpoint) and run it with onnxruntime."""
    from mdqe.deploy import OnnxVideoPredictor, export_onnx

    tmp = tempfile.mkdtemp(prefix="mdqe_bench_onnx_")
    weights = os.path.join(tmp, "weights.pth")
    cfg = load_cfg(args.inference_config, [])
    torch.save({"model": build(cfg).state_dict()}, weights)
    cfg.MODEL.WEIGHTS = weights
    # the frames already have the test size: the export's resize leaves them as they are
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = (
        min(args.height, args.width),
        max(args.height, args.width),
    )
    start = time.perf_counter()
    export_onnx(cfg, os.path.join(tmp, "export"), config_name=args.inference_config)
    predictor = OnnxVideoPredictor(os.path.join(tmp, "export"), providers=["CPUExecutionProvider"])
    export_seconds = time.perf_counter() - start
    return lambda: predictor(frames), export_seconds + timed(lambda: predictor(frames))


def training_batches(cfg: CfgNode, count: int) -> list[list[dict]]:
    """`count` batches of SOLVER.IMS_PER_BATCH clips of INPUT.SAMPLING_FRAME_NUM frames from synthetic
    training videos, resized to the short sides of INPUT.MIN_SIZE_TRAIN in turn."""
    sizes = list(cfg.INPUT.MIN_SIZE_TRAIN)
    num_frames = cfg.INPUT.SAMPLING_FRAME_NUM
    batches = []
    for b in range(count):
        batch = []
        for c in range(cfg.SOLVER.IMS_PER_BATCH):
            index = b * cfg.SOLVER.IMS_PER_BATCH + c
            video = split_video("train", index)
            short = sizes[index % len(sizes)]
            resize = T.ResizeShortestEdge(short, cfg.INPUT.MAX_SIZE_TRAIN).get_transform(video.frames[0])
            images, instances = [], []
            for t in range(num_frames):
                frame = resize.apply_image(video.frames[t])
                masks = np.stack([resize.apply_segmentation(m[t].astype(np.uint8)) for m in video.masks]) > 0
                inst = Instances(frame.shape[:2])
                inst.gt_classes = torch.as_tensor(video.category_ids - 1, dtype=torch.long)
                present = torch.as_tensor(masks.reshape(len(masks), -1).any(1))
                inst.gt_ids = torch.where(present, torch.arange(len(masks)), torch.full((len(masks),), -1))
                inst.gt_masks = BitMasks(torch.as_tensor(masks))
                inst.gt_boxes = inst.gt_masks.get_bounding_boxes()
                images.append(torch.as_tensor(frame.transpose(2, 0, 1).copy()))
                instances.append(inst)
            batch.append({"image": images, "instances": instances})
        batches.append(batch)
    return batches


def bench_train(args: argparse.Namespace, variant: str) -> tuple[float, float]:
    """(first iteration in s, median s / iteration) of forward + backward + AdamW step."""
    cfg = load_cfg(args.train_config, VARIANTS[variant])
    model = build(cfg).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.SOLVER.BASE_LR)
    count = args.train_warmup + args.train_iters
    batches = training_batches(cfg, 1) * count if args.train_one_size else training_batches(cfg, count)

    def step(batch: list[dict]) -> None:
        losses = model(batch)
        optimizer.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        optimizer.step()

    first = timed(lambda: step(batches[0]))
    for batch in batches[1 : args.train_warmup]:
        step(batch)
    times = [timed(lambda b=b: step(b)) for b in batches[args.train_warmup :]]
    if args.profile > 0:  # after the timed iterations: the profiler's own cost stays out of the figures
        profiled = batches[args.train_warmup : args.train_warmup + 5]
        with torch.profiler.profile() as profile:
            for batch in profiled:
                step(batch)
        print(f"train {variant}: self CPU time of {len(profiled)} iterations")
        print(profile.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.profile))
    return first, statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--part", choices=("inference", "train", "both"), default="both")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--inference-config", default="configs/R50_ovis_360.yaml")
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--train-config", default="configs/synthetic/R18_synthetic.yaml")
    parser.add_argument("--train-iters", type=int, default=10)
    parser.add_argument("--train-warmup", type=int, default=3, help="iterations before timing (>= 1)")
    parser.add_argument(
        "--train-one-size", action="store_true", help="repeat the first training batch (one frame size)"
    )
    parser.add_argument("--profile", type=int, default=0, help="print the N costliest training operators")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)

    rows = []
    for part in ("inference", "train"):
        if args.part not in (part, "both"):
            continue
        for variant in args.variants:
            if part == "train" and variant == "onnxruntime":
                continue
            # dynamo keeps its graphs and its record of the sizes seen per code object, so a variant
            # compiled after another (the training step after inference) would start with dynamic sizes
            torch._dynamo.reset()
            first, value = (bench_inference if part == "inference" else bench_train)(args, variant)
            rows.append((part, variant, first, value))
            print(
                f"{part:9s} {variant:22s} first call {first:8.1f} s   {value:.3f} s / "
                f"{'frame' if part == 'inference' else 'iteration'}",
                flush=True,
            )
    print(
        f"\nload average {os.getloadavg()[0]:.2f} / {os.getloadavg()[1]:.2f} (1 / 5 min), "
        f"{args.threads} threads, torch {torch.__version__}"
    )
    print("| part | variant | first call (s) | s / frame or s / it | speed-up vs eager |")
    print("|---|---|---:|---:|---:|")
    for part, variant, first, value in rows:
        eager = next((v for p, n, _, v in rows if p == part and n == "eager"), None)
        ratio = f"{eager / value:.2f}x" if eager else ""
        print(f"| {part} | {variant} | {first:.1f} | {value:.3f} | {ratio} |")


if __name__ == "__main__":
    main()
