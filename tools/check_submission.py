#!/usr/bin/env python
"""Check a YouTube-VIS / OVIS results file before uploading it to the evaluation server.

    python tools/check_submission.py --results OUT/inference/NAME/results.zip --dataset ytvis_ovis_val
    python tools/check_submission.py --results results.json --gt datasets/ovis/valid.json

Checks what a server rejects or mis-scores: the zip holds exactly `results.json`; every video of the split
has predictions (the missing ones are listed); each prediction names a video and a category of the split,
has a finite score in [0, 1], and one segmentation per frame of its video (null or an RLE of the video's
size that decodes); no prediction is repeated. Prints a summary and every problem; exits 1 on any.
With --gt only numpy is imported (no torch); --dataset looks the split's json up in the registered datasets.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
_CHECKER_FILE = ROOT / "mdqe" / "evaluation" / "submission.py"


def load_checker() -> ModuleType:
    """`mdqe.evaluation.submission` loaded from its file, without importing `mdqe` (torch, detectron2)."""
    name = "mdqe_submission_check"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, _CHECKER_FILE)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses resolve their module through sys.modules
        spec.loader.exec_module(module)
    return sys.modules[name]


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
    try:
        with open(gt_path) as f:
            gt = json.load(f)
    except (OSError, ValueError) as e:
        raise SystemExit(f"error: cannot read the ground truth {gt_path}: {e}") from None
    report = load_checker().check_submission(args.results, gt)
    for problem in report.problems:
        print(problem)
    print(f"{report.summary()} (split {gt_path}, checked in {time.perf_counter() - start:.1f} s)")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
