#!/usr/bin/env python
"""Evaluate a YouTube-VIS / OVIS results file against a ground-truth file, and explain the result.

    python tools/eval_ytvis.py --gt datasets/ovis/valid_sub.json --results OUT/inference/DATASET/results.json
    python tools/eval_ytvis.py --gt GT.json --results results.zip --json
    python tools/eval_ytvis.py --gt GT.json --results results.json --breakdown
    python tools/eval_ytvis.py --gt GT.json --results results.json --report report.html --image-root DIR
    python tools/eval_ytvis.py --gt ytvis_2022/gt_short.json --gt-long ytvis_2022/gt_long.json --results R

Prints the official summary and the eight metrics, or with --json one JSON object line with AP, AP50,
AP75, APs, APm, APl, AR1, AR10 in percent (null where undefined, e.g. APl without large objects). The
numbers are the official YouTube-VIS API's. --breakdown adds AP per category and per occlusion level
(APso / APmo / APho) and the error breakdown (AP gained by fixing each error type), in the table or,
with --json, in the same JSON object. --report writes a self-contained HTML report (with frame strips of
the worst videos when --image-root holds the frames). --gt-long: the YouTube-VIS 2022 protocol, --gt
being the short-video and --gt-long the long-video ground truth; AP is the mean of AP_S and AP_L.

Only numpy, pycocotools (and matplotlib for --report) are imported, not torch or detectron2, so the
tool starts fast. A bad input file ends the tool with exit status 2 and one line naming the file and the
problem; files from others are read with bounded work and checked before the metric code sees them
(`mdqe.evaluation.ytvis_io`).
"""

from __future__ import annotations

import os

os.environ.setdefault("MDQE_LIGHT_IMPORT", "1")  # `import mdqe` then registers nothing (no torch)

import argparse
import json
import math
import sys
from typing import Any

from mdqe.evaluation import ytvis_io, ytvis_metrics

InputError = ytvis_io.YTVISFileError  # a bad input file: the message names the file and the problem


def _text_breakdown(result: Any) -> str:
    """AP per category and occlusion level and the error table of a `YTVISAnalysis`."""
    lines = ["", "AP per category:"]
    lines += [f"  {result.category_names[c]:<24} {_fmt(ap)}" for c, ap in result.per_category.items()]
    lines.append("AP per occlusion level (OVIS APso / APmo / APho):")
    lines += [f"  {level:<24} {_fmt(ap)}" for level, ap in result.occlusion.items()]
    if result.breakdown is not None:
        b = result.breakdown
        lines.append(f"Errors at IoU {b.iou_threshold:.2f} (AP {_fmt(b.ap)}): count, AP gained by fixing")
        lines += [f"  {kind:<24} {b.counts[kind]:>6} {b.delta_ap[kind]:+7.2f}" for kind in b.counts]
    return "\n".join(lines)


def _fmt(value: float) -> str:
    return "   n/a" if math.isnan(value) else f"{value:6.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--gt", required=True, help="ground-truth json (YouTube-VIS format, with annotations)"
    )
    parser.add_argument("--results", required=True, help="results.json or results.zip (CodaLab format)")
    parser.add_argument("--json", action="store_true", help="print one JSON line with the metrics")
    parser.add_argument("--breakdown", action="store_true", help="per-category, occlusion and error analysis")
    parser.add_argument("--report", metavar="HTML", help="write a self-contained HTML report here")
    parser.add_argument("--image-root", help="folder of the videos' frames, for the report's frame strips")
    parser.add_argument("--gt-long", help="YouTube-VIS 2022: the long-video ground truth (--gt: short)")
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except InputError as e:
        print(f"eval_ytvis: {e}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    gt, sizes = ytvis_io.load_ground_truth(args.gt)
    if args.gt_long or args.breakdown or args.report:
        from mdqe.evaluation import analysis  # the plain evaluation does not need it
    if args.gt_long:
        gt_long, sizes_long = ytvis_io.load_ground_truth(args.gt_long)
        results = ytvis_io.load_results(args.results, {**sizes, **sizes_long})
        scores = _checked(args.results, lambda: analysis.evaluate_ytvis_2022(gt, gt_long, results))
        print(json.dumps({k: None if math.isnan(v) else v for k, v in scores.items()}))
        return 0
    results = ytvis_io.load_results(args.results, sizes)
    if not (args.breakdown or args.report):
        result = _checked(args.results, lambda: ytvis_metrics.evaluate_ytvis(gt, results))
        print(
            ytvis_metrics.metrics_to_json(result.metrics)
            if args.json
            else ytvis_metrics.format_summary(result)
        )
        return 0
    detailed = _checked(args.results, lambda: analysis.analyze_ytvis(gt, results))
    if args.json:
        print(json.dumps({k: v for k, v in detailed.to_json().items() if k != "per_video"}))
    else:
        print(ytvis_metrics.format_summary(detailed.evaluation) + _text_breakdown(detailed))
    if args.report:
        from mdqe.evaluation.report import render_report, write_report

        html = render_report(
            detailed, gt, results, image_root=args.image_root, title=os.path.basename(args.results)
        )
        write_report(args.report, html)
        print(f"wrote {args.report}", file=sys.stderr)
    return 0


def _checked(path: str, evaluate: Any) -> Any:
    """Run an evaluation, turning the metric code's input errors into InputError on `path`."""
    try:
        return evaluate()
    except (ValueError, KeyError, TypeError) as e:
        raise InputError(f"{path}: {e}") from e


if __name__ == "__main__":
    sys.exit(main())
