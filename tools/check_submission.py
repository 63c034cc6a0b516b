#!/usr/bin/env python
"""Check a YouTube-VIS / OVIS results file before uploading it to the evaluation server.

    python tools/check_submission.py --results OUT/inference/NAME/results.zip --dataset ytvis_ovis_val
    python tools/check_submission.py --results results.json --gt datasets/ovis/valid.json

Checks what a server rejects or mis-scores: the zip holds exactly `results.json`; every video of the split
has predictions (the missing ones are listed); each prediction names a video and a category of the split,
has a finite score in [0, 1], and one segmentation per frame of its video (null or an RLE of the video's
size that decodes); no prediction is repeated. Prints a summary and every problem; exits 1 on any, and 2
with one line when the ground truth cannot be used (unreadable, past a limit, not a split).
With --gt only numpy is imported (no torch); --dataset looks the split's json up in the registered datasets.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def load_checker() -> ModuleType:
    """`mdqe.evaluation.submission`, imported without torch and detectron2 unless `mdqe` is already
    imported in full (--dataset registers the datasets first)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    if "mdqe" not in sys.modules:
        light = os.environ.get("MDQE_LIGHT_IMPORT")
        os.environ["MDQE_LIGHT_IMPORT"] = "1"  # `import mdqe` registers nothing (no torch)
        try:
            import mdqe  # noqa: F401
        finally:
            if light is None:
                del os.environ["MDQE_LIGHT_IMPORT"]
            else:
                os.environ["MDQE_LIGHT_IMPORT"] = light
    return importlib.import_module("mdqe.evaluation.submission")


def dataset_json(name: str) -> str:
    """The annotation json of a registered dataset (imports mdqe, which registers them)."""
    sys.path.insert(0, str(ROOT))
    from detectron2.data import DatasetCatalog, MetadataCatalog

    import mdqe  # noqa: F401  (registers the datasets)

    if name not in DatasetCatalog.list():
        raise SystemExit(f"error: --dataset {name!r} is not a registered dataset (see datasets/README.md)")
    json_file = MetadataCatalog.get(name).get("json_file")
    if not json_file or not Path(json_file).is_file():
        raise SystemExit(f"error: the json of dataset {name!r} is not there: {json_file}")
    return json_file


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--results", required=True, help="results.zip or results.json")
    split = parser.add_mutually_exclusive_group(required=True)
    split.add_argument(
        "--gt", help="the split's YouTube-VIS json (videos and categories; annotations optional)"
    )
    split.add_argument("--dataset", help="a registered dataset name, e.g. ytvis_ovis_val")
    args = parser.parse_args(argv)

    gt_path = args.gt or dataset_json(args.dataset)
    start = time.perf_counter()
    checker = load_checker()
    from mdqe.utils.bounded_io import UntrustedInputError, read_json_file

    try:
        gt = read_json_file(gt_path)
    except (OSError, ValueError) as e:
        reason = e if isinstance(e, UntrustedInputError) else f"cannot read the ground truth {gt_path}: {e}"
        print(f"error: {reason}", file=sys.stderr)
        return 2
    try:
        checker.split_index(gt, gt_path)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    report = checker.check_submission(args.results, gt)
    for problem in report.problems:
        print(problem)
    print(f"{report.summary()} (split {gt_path}, checked in {time.perf_counter() - start:.1f} s)")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
