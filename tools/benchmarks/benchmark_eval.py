#!/usr/bin/env python
"""Benchmark `tools/eval_ytvis.py` on a generated OVIS-scale case, at several video lengths.

    python tools/benchmarks/benchmark_eval.py            # 140 videos x {30, 60, 120} frames, 360x640
    python tools/benchmarks/benchmark_eval.py --frames 60 --keep /tmp/ovis_case

The case: each video has 2-3 ground-truth instances (ellipses moving in straight lines, some appearing
late, 25 categories) and ~30 predictions, most of them perturbed copies of a ground-truth track (half
with its category, half with a random one), the rest random tracks; predictions and late instances have
null frames. Ground truth is stored as uncompressed RLE with "areas", as the YouTube-VIS json files are;
results as the CodaLab format. The timing is the wall clock of the whole `tools/eval_ytvis.py --json`
process (interpreter start-up, imports and json loading included), best of --repeats runs, plain
(`--json`) and with the whole analysis (`--breakdown --json`: per-category, per-video and occlusion-level
AP and the error breakdown).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util

EVAL_TOOL = Path(__file__).resolve().parents[1] / "eval_ytvis.py"


def ellipse_runs(height: int, semi_x: float, semi_y: float) -> tuple[np.ndarray, np.ndarray]:
    """Foreground runs [start, end) in column-major pixel order of an ellipse whose bounding box has its
    top-left corner at pixel (0, 0), in a frame of `height` rows."""
    xs = np.arange(int(np.floor(2 * semi_x)) + 1)
    half = semi_y * np.sqrt(np.clip(1 - ((xs - semi_x) / semi_x) ** 2, 0, None))
    top = np.ceil(semi_y - half).astype(np.int64)
    bottom = np.floor(semi_y + half).astype(np.int64) + 1
    keep = bottom > top
    return xs[keep] * height + top[keep], xs[keep] * height + bottom[keep]


def track_counts(
    runs: tuple[np.ndarray, np.ndarray], origins: np.ndarray, height: int, width: int
) -> list[np.ndarray]:
    """Uncompressed RLE counts of the shape `runs` translated to each (x, y) top-left origin.

    The shape stays inside the frame and away from its top and bottom rows, so a translation only moves
    the first and last counts.
    """
    starts, ends = runs
    bounds = np.empty(2 * len(starts), np.int64)
    bounds[0::2], bounds[1::2] = starts, ends
    inner = np.diff(bounds)
    out = []
    for x, y in origins.tolist():
        shift = x * height + y
        out.append(np.concatenate([[bounds[0] + shift], inner, [height * width - bounds[-1] - shift]]))
    return out


def random_track(rng: np.random.Generator, num_frames: int, height: int, width: int) -> dict:
    """Semi-axes and per-frame top-left origins of an ellipse moving in a straight line inside the frame."""
    semi_x, semi_y = rng.uniform(12, 110), rng.uniform(12, min(100, height / 2 - 4))
    box_w, box_h = int(np.floor(2 * semi_x)) + 1, int(np.floor(2 * semi_y)) + 2
    lo, hi = np.array([0, 1]), np.array([width - box_w, height - box_h - 1])
    start, end = rng.uniform(lo, hi), rng.uniform(lo, hi)
    steps = np.linspace(0, 1, num_frames)[:, None]
    origins = np.rint(start + (end - start) * steps).astype(np.int64)
    return {"semi": (semi_x, semi_y), "origins": origins}


def perturbed(rng: np.random.Generator, track: dict, height: int, width: int) -> dict:
    """A prediction of `track`: other semi-axes, jittered origins, still inside the frame."""
    semi_x = track["semi"][0] * rng.uniform(0.8, 1.2)
    semi_y = min(track["semi"][1] * rng.uniform(0.8, 1.2), height / 2 - 4)
    box_w, box_h = int(np.floor(2 * semi_x)) + 1, int(np.floor(2 * semi_y)) + 2
    origins = track["origins"] + np.rint(rng.normal(0, 6, 2)).astype(np.int64)
    origins[:, 0] = np.clip(origins[:, 0], 0, width - box_w)
    origins[:, 1] = np.clip(origins[:, 1], 1, height - box_h - 1)
    return {"semi": (semi_x, semi_y), "origins": origins}


def generate_case(
    num_videos: int = 140,
    num_frames: int = 60,
    height: int = 360,
    width: int = 640,
    num_categories: int = 25,
    predictions_per_video: int = 30,
    seed: int = 0,
) -> tuple[dict, list[dict]]:
    """(ground-truth dict, results list) of a generated OVIS-like case."""
    rng = np.random.default_rng(seed)
    videos, annotations, results = [], [], []
    for video_id in range(1, num_videos + 1):
        videos.append({"id": video_id, "height": height, "width": width, "length": num_frames})
        gts = []
        for _ in range(int(rng.integers(2, 4))):
            track = random_track(rng, num_frames, height, width)
            first = int(rng.integers(0, num_frames // 3)) if rng.random() < 0.3 else 0
            counts = track_counts(ellipse_runs(height, *track["semi"]), track["origins"], height, width)
            segms = [None] * first + [{"size": [height, width], "counts": c.tolist()} for c in counts[first:]]
            areas = [None] * first + [int(c[1::2].sum()) for c in counts[first:]]
            category = int(rng.integers(1, num_categories + 1))
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "video_id": video_id,
                    "category_id": category,
                    "iscrowd": 0,
                    "segmentations": segms,
                    "areas": areas,
                    "height": height,
                    "width": width,
                    "length": 1,
                }
            )
            gts.append((category, first, track))
        for _ in range(predictions_per_video):
            if rng.random() < 0.8:
                category, first, source = gts[int(rng.integers(len(gts)))]
                track = perturbed(rng, source, height, width)
                first = max(0, first - int(rng.integers(0, 3)))
                if rng.random() < 0.5:
                    category = int(rng.integers(1, num_categories + 1))
            else:
                category, first = int(rng.integers(1, num_categories + 1)), 0
                track = random_track(rng, num_frames, height, width)
            counts = track_counts(
                ellipse_runs(height, *track["semi"]), track["origins"][first:], height, width
            )
            rles = mask_util.frPyObjects(
                [{"size": [height, width], "counts": c} for c in counts], height, width
            )
            segms = [None] * first + [{"size": [height, width], "counts": r["counts"].decode()} for r in rles]
            results.append(
                {
                    "video_id": video_id,
                    "category_id": category,
                    "score": float(rng.random()),
                    "segmentations": segms,
                }
            )
    categories = [
        {"id": c, "name": f"class{c}", "supercategory": "object"} for c in range(1, num_categories + 1)
    ]
    return {"videos": videos, "categories": categories, "annotations": annotations}, results


def time_eval_tool(gt_path: str, results_path: str, repeats: int, *flags: str) -> tuple[float, dict]:
    """Best wall-clock seconds of the whole eval_ytvis.py process, and its metrics."""
    best, metrics = float("inf"), {}
    for _ in range(repeats):
        tic = time.perf_counter()
        out = subprocess.run(
            [sys.executable, str(EVAL_TOOL), "--gt", gt_path, "--results", results_path, "--json", *flags],
            check=True,
            capture_output=True,
            text=True,
        )
        best = min(best, time.perf_counter() - tic)
        metrics = json.loads(out.stdout)
    return best, metrics


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--videos", type=int, default=140)
    parser.add_argument("--frames", type=int, nargs="+", default=[30, 60, 120])
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--predictions", type=int, default=30, help="predictions per video")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", help="write the generated gt_<frames>.json / results_<frames>.json here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or tmp
        os.makedirs(folder, exist_ok=True)
        rows = []
        for num_frames in args.frames:
            gt, results = generate_case(
                args.videos, num_frames, args.height, args.width, predictions_per_video=args.predictions
            )
            gt_path = os.path.join(folder, f"gt_{num_frames}.json")
            results_path = os.path.join(folder, f"results_{num_frames}.json")
            for path, content in ((gt_path, gt), (results_path, results)):
                with open(path, "w") as f:
                    json.dump(content, f)
            seconds, metrics = time_eval_tool(gt_path, results_path, args.repeats)
            detailed, analysis = time_eval_tool(gt_path, results_path, args.repeats, "--breakdown")
            if analysis["AP"] != metrics["AP"]:
                raise RuntimeError(f"--breakdown changed AP: {analysis['AP']} vs {metrics['AP']}")
            size_mb = (os.path.getsize(gt_path) + os.path.getsize(results_path)) / 2**20
            rows.append((num_frames, len(results), size_mb, seconds, detailed, metrics["AP"]))
    print(
        f"{args.videos} videos, {args.height}x{args.width}, best of {args.repeats}: whole eval_ytvis.py runs"
    )
    print("| frames | predictions | json MB | seconds | seconds / frame | --breakdown seconds | ratio | AP |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for num_frames, num_results, size_mb, seconds, detailed, ap in rows:
        print(
            f"| {num_frames} | {num_results} | {size_mb:.0f} | {seconds:.2f} | {seconds / num_frames:.4f} "
            f"| {detailed:.2f} | {detailed / seconds:.2f} | {ap:.2f} |"
        )


if __name__ == "__main__":
    main()
