"""Run the GPU check: the offline install, then every step in its own process within the overall budget;
write OUTPUT/gpu_check.md (the table), gpu_check.json (the same figures) and gpu_check.log (every step's
output): three files, whatever the number of steps."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .bundle import BUNDLED_MODULES, BundleError, bundle_fits_this_python, install_bundle
from .repo import REPO
from .report import StepResult, render_table
from .steps import INSTALL_ROWS, STEPS, Step, StepContext, step_environment
from .worker import step_rows_path

__all__ = ["BUDGET_SECONDS", "INSTALL_SECONDS", "install", "run_all", "run_step_process"]

logger = logging.getLogger(__name__)

# The whole check on one lent GPU machine (about 15 minutes of device time, its start included).
BUDGET_SECONDS = 540
INSTALL_SECONDS = 120
# A step with less time left than this is not started.
MIN_STEP_SECONDS = 10


def _read_rows(path: Path) -> list[tuple[str, str]]:
    try:
        return [tuple(row) for row in json.loads(path.read_text())]
    except (OSError, ValueError):
        return []


def run_step_process(
    step: Step, ctx: StepContext, work: Path, env: dict[str, str], deadline: float
) -> StepResult:
    """Run `step` in a worker process (its output to work/step_NAME.log) with its timeout, cut to what is
    left before `deadline` (time.monotonic()); the rows it finished, and '' or why it failed."""
    timeout = min(step.timeout, deadline - time.monotonic())
    if timeout < MIN_STEP_SECONDS:
        return StepResult([], "not run: out of the overall time budget")
    rows_path, log = step_rows_path(work, step.name), work / f"step_{step.name}.log"
    cmd = [
        sys.executable,
        "-m",
        "mdqe.benchmark.gpu_check.worker",
        step.name,
        str(work),
        "--bundle",
        str(ctx.bundle),
    ]
    cmd += ["--dry-run"] if ctx.dry_run else []
    start = time.monotonic()
    with log.open("w") as f:
        try:
            proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=timeout)
        except subprocess.TimeoutExpired:
            error = f"timed out after {timeout:.0f} s (gpu_check.log)"
            return StepResult(_read_rows(rows_path), error, time.monotonic() - start)
    seconds = time.monotonic() - start
    rows = _read_rows(rows_path)
    if proc.returncode != 0 or not rows_path.exists():
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
        last = lines[-1][:300] if lines else ""
        error = f"failed (exit {proc.returncode}) after {seconds:.0f} s: {last} (gpu_check.log)"
        return StepResult(rows, error, seconds)
    return StepResult(rows, "", seconds)


def install(ctx: StepContext, site: Path, env: dict[str, str]) -> tuple[StepResult, bool]:
    """The install step's result, and whether `site` now holds packages the steps need: the bundle is
    installed only where a module it provides is missing (a bare GPU machine with its own torch)."""
    label = INSTALL_ROWS[0]
    lacking = [m for m in BUNDLED_MODULES if importlib.util.find_spec(m) is None]
    if not lacking:
        return StepResult([(label, "not needed: all already importable")], ""), False
    why_not = bundle_fits_this_python(ctx.bundle)
    if why_not:
        if ctx.dry_run:
            return StepResult([(label, f"skipped (dry run): {why_not}")], ""), False
        return StepResult([], f"{', '.join(lacking)} missing and {why_not}"), False
    try:
        return StepResult([(label, install_bundle(ctx.bundle, site, INSTALL_SECONDS, env))], ""), True
    except (subprocess.SubprocessError, BundleError) as e:
        return StepResult([], f"failed: ...{str(e)[-400:]}"), True


def run_all(
    output: Path, ctx: StepContext, budget: float = BUDGET_SECONDS
) -> tuple[dict[str, StepResult], str]:
    """The install, then every step of STEPS in order within `budget` seconds; writes the three files
    into `output` and returns the results by step and the table."""
    output.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + budget
    base = dict(os.environ)
    results: dict[str, StepResult] = {}
    with tempfile.TemporaryDirectory(prefix="mdqe-gpu-check-") as tmp:
        site, work = Path(tmp) / "site", Path(tmp) / "work"
        work.mkdir()
        # the install's import check imports all of mdqe, not the tool's light import
        check_env = {k: v for k, v in base.items() if k != "MDQE_LIGHT_IMPORT"}
        results["install"], installed = install(ctx, site, check_env)
        if installed:
            paths = [str(site), str(REPO), os.environ.get("PYTHONPATH")]
            base["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
        for step in STEPS.values():
            env = step_environment(step, base, ctx.dry_run)
            result = results[step.name] = run_step_process(step, ctx, work, env, deadline)
            logger.info("step %s: %s (%.0f s)", step.name, result.error or "ok", result.seconds)
        with (output / "gpu_check.log").open("w") as log:
            for name in STEPS:
                step_log = work / f"step_{name}.log"
                if step_log.exists():
                    log.write(f"===== step {name} =====\n{step_log.read_text(errors='replace')}\n")
    table = render_table(results, ctx.dry_run)
    (output / "gpu_check.md").write_text(table)
    summary = {name: result._asdict() for name, result in results.items()}
    (output / "gpu_check.json").write_text(json.dumps(summary, indent=1))
    return results, table
