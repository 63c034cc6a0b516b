#!/usr/bin/env python
"""Write the synthetic occluded-shapes dataset (YouTube-VIS format, plus a COCO-format image set).

With no size options this writes the default dataset that `synthetic_vis_train` / `synthetic_vis_val` /
`synthetic_coco_train` use, into $DETECTRON2_DATASETS/synthetic_vis (the registrations also generate it
on first use). With size options it writes a custom one, e.g. a larger set for a longer run:

    python tools/make_synthetic_vis.py
    python tools/make_synthetic_vis.py --root /data --train-videos 400 --max-length 36 --seed 3

Written under DETECTRON2_DATASETS, a custom dataset replaces the default one under the same names
(the registrations use whatever complete dataset they find there). Re-running with the same options
does nothing; other options regenerate it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

from mdqe.data.synthetic import DEFAULT_NUM_COCO_IMAGES, DEFAULT_SEED, DEFAULT_SPLITS, ensure_synthetic_vis


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    train, valid = DEFAULT_SPLITS["train"], DEFAULT_SPLITS["valid"]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=os.getenv("DETECTRON2_DATASETS", "datasets"), help="datasets root")
    p.add_argument("--train-videos", type=int, default=train.num_videos)
    p.add_argument("--val-videos", type=int, default=valid.num_videos)
    p.add_argument("--coco-images", type=int, default=DEFAULT_NUM_COCO_IMAGES)
    p.add_argument("--min-length", type=int, default=train.min_length, help="frames per video, at least")
    p.add_argument("--max-length", type=int, default=train.max_length, help="frames per video, at most")
    p.add_argument("--min-instances", type=int, default=train.min_instances)
    p.add_argument("--max-instances", type=int, default=train.max_instances)
    p.add_argument(
        "--val-min-occlusion",
        type=float,
        default=valid.min_occlusion,
        help="each validation video has an instance at least this much occluded in some frame",
    )
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if not 1 <= args.min_length <= args.max_length:
        raise SystemExit(f"--min-length/--max-length: need 1 <= {args.min_length} <= {args.max_length}")
    if not 1 <= args.min_instances <= args.max_instances:
        raise SystemExit(
            f"--min-instances/--max-instances: need 1 <= {args.min_instances} <= {args.max_instances}"
        )
    common = {"min_length": args.min_length, "max_length": args.max_length,
              "min_instances": args.min_instances, "max_instances": args.max_instances}  # fmt: skip
    splits = {
        "train": dataclasses.replace(DEFAULT_SPLITS["train"], num_videos=args.train_videos, **common),
        "valid": dataclasses.replace(
            DEFAULT_SPLITS["valid"],
            num_videos=args.val_videos,
            min_occlusion=args.val_min_occlusion,
            **common,
        ),
    }
    start = time.perf_counter()
    folder = ensure_synthetic_vis(args.root, splits, args.coco_images, args.seed)
    with open(os.path.join(folder, "manifest.json")) as f:
        manifest = json.load(f)
    for split, facts in manifest["videos"].items():
        with open(os.path.join(folder, f"{split}.json")) as f:
            data = json.load(f)
        frames = sum(v["length"] for v in data["videos"])
        occluded = sum(v["max_occlusion"] >= 0.5 for v in facts)
        print(f"{split}: {len(data['videos'])} videos, {frames} frames, {len(data['annotations'])} instance "
              f"tracks, {occluded} videos with an instance >= 50% occluded")  # fmt: skip
    print(f"coco: {manifest['num_coco_images']} images")
    print(f"{folder} ready in {time.perf_counter() - start:.1f}s")


if __name__ == "__main__":
    main()
