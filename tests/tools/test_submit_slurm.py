"""tools/submit_slurm.py: the SLURM parameters it asks for, the requeue with --resume, and a real run with
submitit's local executor (2 CPU processes joined with gloo train as one process does)."""

from __future__ import annotations

import importlib.util
import sys

import pytest
import torch

from tests.conftest import REPO_ROOT

TINY = "configs/synthetic/tiny.yaml"


@pytest.fixture(scope="module")
def submit_slurm():
    spec = importlib.util.spec_from_file_location("submit_slurm", REPO_ROOT / "tools" / "submit_slurm.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["submit_slurm"] = module
    spec.loader.exec_module(module)
    return module


def test_slurm_job_gets_one_task_per_gpu_and_the_preemption_signal(submit_slurm, tmp_path):
    from submitit.slurm.slurm import _make_sbatch_string

    own = ["--nodes", "2", "--gpus-per-node", "4", "--partition", "p", "--job-dir", str(tmp_path)]
    args, train_argv = submit_slurm.parse_args([*own, "--", "--config-file", TINY, "SOLVER.MAX_ITER", "10"])
    assert train_argv == ["--config-file", TINY, "SOLVER.MAX_ITER", "10"]
    sbatch = _make_sbatch_string(command="run", folder=str(tmp_path), **submit_slurm.slurm_parameters(args))
    for line in (
        "--nodes=2",
        "--ntasks-per-node=4",
        "--gpus-per-node=4",
        "--partition=p",
        "--signal=USR1@120",
    ):
        assert f"#SBATCH {line}\n" in sbatch, sbatch


def test_train_net_arguments_are_required(submit_slurm):
    with pytest.raises(SystemExit):
        submit_slurm.parse_args(["--nodes", "1"])


def test_a_preempted_job_is_requeued_with_resume(submit_slurm):
    job = submit_slurm.TrainingJob(["--config-file", TINY])
    resubmission = job.checkpoint()
    assert resubmission.function.train_argv == ["--resume", "--config-file", TINY]
    assert resubmission.function.checkpoint().function.train_argv == ["--resume", "--config-file", TINY]


@pytest.mark.slow
def test_local_executor_two_gloo_processes_train_as_one(submit_slurm, tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "datasets"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    weights = {}
    for tasks in (1, 2):
        out = tmp_path / f"tasks{tasks}"
        train_argv = [
            "--config-file", TINY, "OUTPUT_DIR", str(out), "SEED", "3",
            "SOLVER.MAX_ITER", "2", "SOLVER.CHECKPOINT_PERIOD", "1",
            "DATASETS.TEST", "()", "SOLVER.OPTIMIZER", "SGD", "SOLVER.CLIP_GRADIENTS.ENABLED", "False",
            # the contrastive loss draws random pairs per process; at weight 0 the 2 processes see the
            # single process's batch split in two, and DDP averages their gradients
            "MODEL.MDQE.REID_WEIGHT", "0.0",
        ]  # fmt: skip
        argv = ["--local", "--tasks-per-node", str(tasks), "--job-dir", str(tmp_path / "jobs"), "--"]
        job = submit_slurm.main([*argv, *train_argv])
        job.results()  # raises with the job's stderr if a task failed
        assert len(job.results()) == tasks
        weights[tasks] = torch.load(out / "model_final.pth", weights_only=False)["model"]
    for key, value in weights[1].items():
        torch.testing.assert_close(weights[2][key], value, rtol=1e-5, atol=1e-6, msg=key)
    first = torch.load(tmp_path / "tasks1" / "model_0000000.pth", weights_only=False)["model"]
    assert any(not torch.equal(first[k], v) for k, v in weights[1].items())  # the second step did train
