#!/usr/bin/env python
"""Evaluate a YouTube-VIS / OVIS results file against a ground-truth file.

    python tools/eval_ytvis.py --gt datasets/ovis/valid_sub.json --results OUT/inference/DATASET/results.json
    python tools/eval_ytvis.py --gt GT.json --results results.zip --json

Prints the official summary and the eight metrics, or with --json one JSON object line with AP, AP50,
AP75, APs, APm, APl, AR1, AR10 in percent (null where undefined, e.g. APl without large objects). The
numbers are the official YouTube-VIS API's. Only numpy and pycocotools are imported (no torch, no
detectron2), so the tool starts fast.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import zipfile
from pathlib import Path
from types import ModuleType

_METRICS_FILE = Path(__file__).resolve().parents[1] / "mdqe" / "evaluation" / "ytvis_metrics.py"


def load_metrics_module() -> ModuleType:
    """`mdqe.evaluation.ytvis_metrics` loaded from its file, so that `mdqe/__init__` (torch,
    detectron2, registries) is not imported."""
    name = "mdqe_ytvis_metrics"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, _METRICS_FILE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve their module through sys.modules
    spec.loader.exec_module(module)
    return module


def load_results(path: str) -> list:
    """A results list from results.json, or from the results.json inside a CodaLab results.zip."""
    if path.endswith(".zip"):
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.endswith("results.json")]
            if len(names) != 1:
                raise SystemExit(f"{path}: expected one results.json in the zip, found {archive.namelist()}")
            results = json.loads(archive.read(names[0]))
    else:
        with open(path) as f:
            results = json.load(f)
    if not isinstance(results, list):
        raise SystemExit(f"{path}: expected a JSON list of results, got {type(results).__name__}")
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--gt", required=True, help="ground-truth json (YouTube-VIS format, with annotations)"
    )
    parser.add_argument("--results", required=True, help="results.json or results.zip (CodaLab format)")
    parser.add_argument("--json", action="store_true", help="print one JSON line with the eight metrics")
    args = parser.parse_args(argv)

    metrics = load_metrics_module()
    with open(args.gt) as f:
        gt = json.load(f)
    if not gt.get("annotations"):
        raise SystemExit(f"{args.gt} has no annotations: nothing to evaluate against")
    try:
        result = metrics.evaluate_ytvis(gt, load_results(args.results))
    except ValueError as e:
        raise SystemExit(f"{args.results}: {e}") from e
    print(metrics.metrics_to_json(result.metrics) if args.json else metrics.format_summary(result))


if __name__ == "__main__":
    main()
