"""mdqe.benchmark.gpu_check.msda_steps: the op rows of one backend, or why it cannot run here."""

from __future__ import annotations

import pytest
import torch

from mdqe.benchmark.gpu_check import msda_steps
from mdqe.benchmark.gpu_check.steps import STEPS, StepContext
from mdqe.layers import msda_backend


@pytest.fixture
def backend(monkeypatch):
    def select(name: str, interpret: str = "1") -> None:
        monkeypatch.setenv(msda_backend.ENV_VAR, name)
        monkeypatch.setenv("TRITON_INTERPRET", interpret)
        msda_backend._select.cache_clear()

    yield select
    msda_backend._select.cache_clear()


def test_the_pytorch_rows_are_figures_close_to_the_reference(backend, tmp_path):
    backend("pytorch")
    rows = [row for batch in msda_steps.op_step(StepContext(True, tmp_path), "pytorch") for row in batch]
    assert [label for label, _ in rows] == list(STEPS["op_pytorch"].rows)
    diffs = {label: float(value) for label, value in rows if label.endswith("reference")}
    assert all(d < 1e-4 for label, d in diffs.items() if " fp32" in label), diffs
    assert all(float(value) > 0 for label, value in rows if label.endswith(" ms"))


def test_a_failing_measurement_fails_its_rows_and_the_step_but_not_the_others(backend, tmp_path, monkeypatch):
    backend("pytorch")
    timed = msda_steps.time_forward_backward

    def fails_in_bf16(calls, *args):
        if calls[0][0].dtype == torch.bfloat16:
            raise RuntimeError("no bf16 here")
        return timed(calls, *args)

    monkeypatch.setattr(msda_steps, "time_forward_backward", fails_in_bf16)
    rows = []
    with pytest.raises(
        RuntimeError, match=r"3 measurement\(s\) failed, the first: RuntimeError: no bf16 here"
    ):
        for batch in msda_steps.op_step(StepContext(True, tmp_path), "pytorch"):
            rows += batch
    values = dict(rows)
    assert len(values) == len(STEPS["op_pytorch"].rows)
    assert all(v == "FAILED: RuntimeError: no bf16 here" for k, v in values.items() if " bf16" in k)
    assert all(not v.startswith("FAILED") for k, v in values.items() if " fp32" in k)


@pytest.mark.skipif(torch.cuda.is_available(), reason="Triton runs on CUDA tensors there")
def test_rows_a_backend_cannot_run_say_why(backend, tmp_path):
    backend("triton", interpret="0")
    batches = list(msda_steps.op_step(StepContext(True, tmp_path), "triton"))
    values = {value for batch in batches for _, value in batch}
    assert len(values) == 1 and values.pop().startswith("unavailable: MDQE_MSDA_BACKEND=triton runs on cpu")


def test_inputs_have_the_shapes_of_their_call():
    shape = msda_steps.op_shapes(dry_run=True)[2]
    value, shapes, starts, locations, weights = msda_steps.make_inputs(
        shape.calls[0], shape, torch.bfloat16, torch.device("cpu")
    )
    assert value.shape == (1, 2 * 4 * 6, 1, 32) and value.dtype == torch.bfloat16
    assert shapes.tolist() == [[4, 6], [4, 6]] and starts.tolist() == [0, 24]
    assert locations.shape == (1, 4, 1, 2, 2, 2) and weights.shape == (1, 4, 1, 2, 2)
    assert torch.allclose(weights.float().sum((-2, -1)), torch.ones(1, 4, 1), atol=1e-2)
