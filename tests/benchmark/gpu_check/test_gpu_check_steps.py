"""mdqe.benchmark.gpu_check.steps: the table holds every step's rows once; each step's process environment."""

from __future__ import annotations

from collections import Counter

from mdqe.benchmark.gpu_check.steps import BACKENDS, STEPS, TABLE, step_environment


def test_the_table_holds_every_row_of_every_step_once():
    counts = Counter(TABLE)
    assert [row for row, n in counts.items() if n > 1] == []
    expected = {(name, label) for name, step in STEPS.items() for label in step.rows}
    expected.add(("install", "offline install of the bundle"))
    assert set(TABLE) == expected


def test_the_op_rows_of_the_backends_stand_side_by_side():
    labels = [label for step, label in TABLE if step.startswith("op_")]
    first = labels.index("ms_deform_attn encoder fp32 forward: cuda ms")
    assert labels[first : first + 3] == [f"ms_deform_attn encoder fp32 forward: {b} ms" for b in BACKENDS]


def test_backend_steps_select_their_backend_and_others_auto():
    base = {"MDQE_MSDA_BACKEND": "pytorch", "PATH": "/bin"}
    assert step_environment(STEPS["op_triton"], base, dry_run=False)["MDQE_MSDA_BACKEND"] == "triton"
    assert step_environment(STEPS["model_cuda"], base, dry_run=False)["MDQE_MSDA_BACKEND"] == "cuda"
    assert step_environment(STEPS["inference_swinl"], base, dry_run=False)["MDQE_MSDA_BACKEND"] == "auto"
    assert step_environment(STEPS["env"], base, dry_run=False)["PATH"] == "/bin"


def test_triton_is_interpreted_in_the_dry_run_only():
    base = {"TRITON_INTERPRET": "1"}
    assert "TRITON_INTERPRET" not in step_environment(STEPS["op_triton"], base, dry_run=False)
    assert step_environment(STEPS["op_triton"], {}, dry_run=True)["TRITON_INTERPRET"] == "1"


def test_the_dry_run_steps_run_on_one_thread_and_the_gpu_run_as_set():
    base = {"OMP_NUM_THREADS": "16"}
    assert step_environment(STEPS["model_cuda"], base, dry_run=True)["OMP_NUM_THREADS"] == "1"
    assert step_environment(STEPS["model_cuda"], base, dry_run=False)["OMP_NUM_THREADS"] == "16"


def test_light_import_only_for_the_steps_that_ask_for_it():
    base = {"MDQE_LIGHT_IMPORT": "1"}  # the orchestrating tool's own setting
    assert step_environment(STEPS["env"], base, dry_run=False)["MDQE_LIGHT_IMPORT"] == "1"
    assert step_environment(STEPS["op_cuda"], base, dry_run=False)["MDQE_LIGHT_IMPORT"] == "1"
    assert "MDQE_LIGHT_IMPORT" not in step_environment(STEPS["model_cuda"], base, dry_run=False)
    assert "MDQE_LIGHT_IMPORT" not in step_environment(STEPS["tests"], base, dry_run=False)
