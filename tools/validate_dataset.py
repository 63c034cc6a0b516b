#!/usr/bin/env python
"""Check a YouTube-VIS format dataset before a long training run.

Checks that every frame exists and decodes at the size the json declares, that every annotation has one
segmentation (and box/area) entry per frame, that segmentations decode to the frame size, and that
category and video ids are known. Prints a summary and every problem and warning; exits with 1 if there
is any problem (or, with --strict, any warning).

    python tools/validate_dataset.py --json datasets/ovis/train.json \
        --image-root datasets/ovis/train/JPEGImages
    python tools/validate_dataset.py --dataset ytvis_2019_train      # a registered dataset's paths
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", help="annotation file in YouTube-VIS format")
    p.add_argument("--image-root", help="folder the json's file_names are relative to")
    p.add_argument("--dataset", help="a registered dataset name instead of --json/--image-root")
    p.add_argument("--headers-only", action="store_true", help="read image headers, not whole frames (fast)")
    p.add_argument("--workers", type=int, default=4, help="threads reading frames")
    p.add_argument("--strict", action="store_true", help="exit 1 on warnings too")
    p.add_argument("--max-listed", type=int, default=0, help="list at most this many problems (0: all)")
    args = p.parse_args(argv)
    if args.dataset is None and (args.json is None or args.image_root is None):
        p.error("give --json and --image-root, or --dataset")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    from mdqe.data.validation import validate_ytvis_dataset

    json_file, image_root = args.json, args.image_root
    if args.dataset is not None:
        from detectron2.data import MetadataCatalog

        import mdqe  # noqa: F401  (registers the datasets)

        meta = MetadataCatalog.get(args.dataset)
        if meta.get("evaluator_type") != "ytvis":
            print(f"'{args.dataset}' is not a registered YouTube-VIS format dataset")
            return 1
        json_file, image_root = meta.json_file, meta.image_root

    start = time.perf_counter()
    report = validate_ytvis_dataset(json_file, image_root, not args.headers_only, args.workers)
    print(f"Dataset {json_file} (images under {image_root}), checked in {time.perf_counter() - start:.1f}s")
    for key, value in report.summary.items():
        print(f"  {key}: {json.dumps(value) if isinstance(value, dict) else value}")
    for kind, items in (("warning", report.warnings), ("PROBLEM", report.problems)):
        listed = items if not args.max_listed else items[: args.max_listed]
        for item in listed:
            print(f"{kind}: {item}")
        if len(listed) < len(items):
            print(f"... and {len(items) - len(listed)} more {kind}s")
    print(f"{len(report.problems)} problems, {len(report.warnings)} warnings")
    return 1 if report.problems or (args.strict and report.warnings) else 0


if __name__ == "__main__":
    sys.exit(main())
