#!/usr/bin/env python
"""Throughput of the training clip mapper (one worker) and a profile of where its time goes.

Builds a small synthetic JPEG video set at the given source resolution (default 720x1280, the size of
most OVIS/YouTube-VIS frames; --source-size 360 640 for 360p sources), then maps clips with
`YTVISDatasetMapper` under the R50_ovis_360 training augmentations (T = 4 frames, shortest edge
320-512 by clip, max 800, 50% relative_range 0.8 crop, flip by clip), in this process, as one
DataLoader worker does. Prints clips/s, the per-stage share of the time (cProfile), then a JSON line.

    python tools/benchmarks/benchmark_mapper.py [--source-size 720 1280] [--clips 60] [--frames 4]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import tempfile
import time

import torch
from detectron2.config import get_cfg

from mdqe import add_mdqe_config
from mdqe.data import YTVISDatasetMapper, load_ytvis_json
from mdqe.data.build import _seeded_global_rngs
from mdqe.data.synthetic import SplitSpec, write_synthetic_vis

# (label, function names whose cumulative time make up the stage)
STAGES = {
    "decode JPEG (read_frame)": ("read_frame",),
    "augment images (resize/crop/flip)": ("apply_clip_augmentations",),
    "decode RLE masks": ("decode",),
    "warp masks (resize/crop/flip)": ("warp_masks",),
    "filter empty instances": ("filter_empty_instances",),
}


def _cfg(frames: int):
    cfg = get_cfg()
    add_mdqe_config(cfg)
    cfg.INPUT.SAMPLING_FRAME_NUM = frames
    cfg.INPUT.MIN_SIZE_TRAIN = (320, 352, 392, 416, 448, 480, 512)
    cfg.INPUT.MAX_SIZE_TRAIN = 800
    cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING = "choice_by_clip"
    cfg.INPUT.RANDOM_FLIP = "flip_by_clip"
    cfg.INPUT.CROP.ENABLED = True
    cfg.INPUT.CROP.TYPE = "relative_range"
    cfg.INPUT.CROP.SIZE = [0.8, 0.8]
    return cfg


def _stage_times(stats: pstats.Stats) -> dict[str, float]:
    cumulative: dict[str, float] = dict.fromkeys(STAGES, 0.0)
    for (_, _, name), (_, _, _, cum, _) in stats.stats.items():
        for label, names in STAGES.items():
            if name in names:
                cumulative[label] += cum
    return cumulative


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source-size", type=int, nargs=2, default=(720, 1280), metavar=("H", "W"))
    p.add_argument("--clips", type=int, default=60)
    p.add_argument("--frames", type=int, default=4)
    p.add_argument("--videos", type=int, default=6)
    args = p.parse_args(argv)
    # a DataLoader worker runs torch single-threaded; so does this benchmark, for comparable figures
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as tmp:
        spec = SplitSpec(
            num_videos=args.videos, min_length=12, max_length=12, frame_sizes=(tuple(args.source_size),)
        )
        write_synthetic_vis(tmp, {"train": spec}, num_coco_images=0)
        dicts = load_ytvis_json(f"{tmp}/train.json", f"{tmp}/train/JPEGImages")
        mapper = YTVISDatasetMapper(_cfg(args.frames), is_train=True)
        with _seeded_global_rngs(0):
            mapper(dicts[0])  # warm-up (imports, caches)

        start = time.perf_counter()
        for i in range(args.clips):
            with _seeded_global_rngs(i):
                mapper(dicts[i % len(dicts)])
        elapsed = time.perf_counter() - start

        profiler = cProfile.Profile()
        profiler.enable()
        for i in range(args.clips):
            with _seeded_global_rngs(i):
                mapper(dicts[i % len(dicts)])
        profiler.disable()
    stats = pstats.Stats(profiler)
    total = stats.total_tt
    cumulative = _stage_times(stats)
    # the stages do not nest; the rest is "other"
    shares = {label: t / total for label, t in cumulative.items()}
    shares["other (sampling, tensors, bookkeeping)"] = max(0.0, 1 - sum(shares.values()))

    instances = sum(len({o["id"] for f in d["annotations"] for o in f}) for d in dicts) / len(dicts)
    h, w = args.source_size
    print(f"Mapper: {args.frames}-frame clips from {h}x{w} JPEG, R50_ovis_360 augmentations, one process")
    print(f"  {args.clips / elapsed:.1f} clips/s ({1000 * elapsed / args.clips:.1f} ms/clip), "
          f"{instances:.1f} instance tracks per video")  # fmt: skip
    for label, share in shares.items():
        print(f"  {100 * share:5.1f}%  {label}")
    record = {
        "source_size": [h, w],
        "frames": args.frames,
        "clips_per_s": round(args.clips / elapsed, 2),
        "ms_per_clip": round(1000 * elapsed / args.clips, 1),
        "shares": {k: round(v, 3) for k, v in shares.items()},
    }
    print(json.dumps(record))


if __name__ == "__main__":
    main()
