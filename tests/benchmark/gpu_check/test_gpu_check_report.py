"""mdqe.benchmark.gpu_check.report and worker: a failed step keeps the rows it finished, the rest say why."""

from __future__ import annotations

import json
import sys
import time
from types import ModuleType

import pytest

from mdqe.benchmark.gpu_check import runner, worker
from mdqe.benchmark.gpu_check.report import StepResult, render_table
from mdqe.benchmark.gpu_check.steps import STEPS, Step, StepContext


def _cells(table: str) -> dict[str, str]:
    rows = [line.split(" | ") for line in table.splitlines() if line.startswith("| ") and " --- " not in line]
    return {item: value.rstrip(" |") for _, item, value in rows[1:]}


def test_a_failed_step_says_why_in_each_of_its_missing_rows():
    results = {
        "env": StepResult([("GPU", "X")], ""),
        "model_cuda": StepResult([("training R50_ovis_360 fp32 cuda: s/iteration", "0.5")], "timed out"),
    }
    cells = _cells(render_table(results, dry_run=False))
    assert cells["GPU"] == "X"
    assert cells["training R50_ovis_360 fp32 cuda: s/iteration"] == "0.5"
    assert cells["training R50_ovis_360 AMP cuda: s/iteration"] == "FAILED: timed out"
    assert cells["torch / triton"] == "missing" and cells["pytest -m gpu"] == "FAILED: not run"


def test_a_cell_stays_one_table_cell():
    cells = _cells(render_table({"env": StepResult([("GPU", "a | b\nc")], "")}, dry_run=True))
    assert cells["GPU"] == "a / b c"


def _failing_step(ctx: StepContext):
    yield [("GPU", "first")]
    raise RuntimeError("the second batch fails")


def test_the_worker_writes_the_rows_of_a_step_as_they_come(tmp_path, monkeypatch):
    module = ModuleType("gpu_check_fake_steps")
    module.failing = _failing_step
    monkeypatch.setitem(sys.modules, module.__name__, module)
    fake = Step("env", f"{module.__name__}:failing", ("GPU",), 10)
    monkeypatch.setitem(worker.STEPS, "env", fake)
    with pytest.raises(RuntimeError, match="second batch"):
        worker.run_step("env", tmp_path, StepContext(dry_run=True, bundle=tmp_path))
    assert json.loads(worker.step_rows_path(tmp_path, "env").read_text()) == [["GPU", "first"]]


def test_a_step_is_not_started_without_the_time_it_needs(tmp_path):
    ctx = StepContext(dry_run=True, bundle=tmp_path)
    result = runner.run_step_process(STEPS["env"], ctx, tmp_path, {}, deadline=time.monotonic() + 1)
    assert result == StepResult([], "not run: out of the overall time budget")
