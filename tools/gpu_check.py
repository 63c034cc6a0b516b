#!/usr/bin/env python
"""GPU check: build the CUDA op, run the GPU tests and measure MDQE on one GPU, in minutes.

Three modes (tools/gpu_check.sh wraps them):

    python tools/gpu_check.py --prepare             # here, with network: fill .gpu_bundle/
    python tools/gpu_check.py OUTPUT_DIR            # on the GPU machine, offline
    python tools/gpu_check.py --dry-run OUTPUT_DIR  # on CPU, tiny sizes, no build: proves the wiring

--prepare gathers the offline bundle (detectron2's sdist, wheels of what a bare GPU machine with its own
torch lacks) into a git-ignored folder that travels with the working tree. The run installs it offline
where needed, builds mdqe._C with the CUDA kernel, runs `pytest -m gpu`, and times the deformable-attention
op of each backend (cuda, triton, pytorch) at R50_ovis_360's encoder and decoder shapes, whole-video
inference and training iterations of R50_ovis_360 with each backend, and swinl_ovis inference, with peak
GPU memory. Every step runs in its own process with its own timeout, inside an overall budget (540 s); a
failing step is reported and the next one runs. The result is one Markdown table, printed and written to
OUTPUT_DIR/gpu_check.md, with OUTPUT_DIR/gpu_check.json (the same figures) and OUTPUT_DIR/gpu_check.log
(every step's output). mdqe.benchmark.gpu_check documents the steps.

Exit status: 0 when every step succeeded (rows a backend cannot run here say "unavailable"), 1 when a
step failed or was not run, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

# The orchestrating process needs none of mdqe's heavy imports (torch, detectron2): each step runs in a
# process of its own, whose environment the runner sets.
os.environ.setdefault("MDQE_LIGHT_IMPORT", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mdqe.benchmark.gpu_check.bundle import DEFAULT_BUNDLE, TARGET_PYTHON, BundleError, prepare
from mdqe.benchmark.gpu_check.runner import BUDGET_SECONDS, run_all
from mdqe.benchmark.gpu_check.steps import StepContext


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("output", nargs="?", type=Path, help="folder for gpu_check.md, .json and .log")
    parser.add_argument(
        "--prepare", action="store_true", help="gather the offline bundle (needs pip's index)"
    )
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes, no build")
    parser.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE)
    parser.add_argument("--python-version", default=TARGET_PYTHON, help="--prepare: Python of the wheels")
    parser.add_argument("--budget", type=float, default=BUDGET_SECONDS, help="seconds for all steps")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="gpu_check: %(message)s", stream=sys.stdout)
    bundle = args.bundle.resolve()
    if args.prepare:
        try:
            wheels = prepare(bundle, args.python_version)
        except BundleError as e:
            sys.exit(f"error: {e}")
        size = sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file())
        print(f"prepared {bundle} ({size / 2**20:.1f} MiB): {len(wheels)} wheels + detectron2 sdist")
        for name in wheels:
            print("  ", name)
        return
    if args.output is None:
        parser.error("OUTPUT_DIR is required (except with --prepare)")
    results, table = run_all(
        args.output.resolve(), StepContext(dry_run=args.dry_run, bundle=bundle), args.budget
    )
    print(table)
    sys.exit(1 if any(result.error for result in results.values()) else 0)


if __name__ == "__main__":
    main()
