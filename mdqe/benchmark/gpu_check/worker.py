"""Run one step of the GPU check in this process (the runner starts one such process per step):

    python -m mdqe.benchmark.gpu_check.worker NAME WORK_DIR [--dry-run] [--bundle DIR]

WORK_DIR/step_NAME.json holds the step's rows so far, rewritten after every batch the step yields, so that
a step that fails or runs out of time keeps the rows it finished. Its output goes to the step's log.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
from pathlib import Path

from .steps import STEPS, Rows, StepContext

__all__ = ["main", "run_step", "step_rows_path"]


def step_rows_path(work: Path, name: str) -> Path:
    """Where step `name` writes its rows (a JSON list of [label, value])."""
    return work / f"step_{name}.json"


def _write_rows(path: Path, rows: Rows) -> None:
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(rows))
    os.replace(partial, path)  # a kill mid-write leaves the previous rows, never a truncated file


def run_step(name: str, work: Path, ctx: StepContext) -> Rows:
    """Run step `name` (`STEPS`), writing its rows to `step_rows_path(work, name)` as they come."""
    step = STEPS[name]
    module, function = step.target.split(":")
    run = getattr(importlib.import_module(module), function)
    path = step_rows_path(work, name)
    rows: Rows = []
    _write_rows(path, rows)
    for batch in run(ctx, **step.kwargs):
        rows += batch
        _write_rows(path, rows)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("name", choices=list(STEPS))
    parser.add_argument("work", type=Path)
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--bundle", type=Path, default=Path(".gpu_bundle"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    run_step(args.name, args.work, StepContext(dry_run=args.dry_run, bundle=args.bundle))


if __name__ == "__main__":
    main()
