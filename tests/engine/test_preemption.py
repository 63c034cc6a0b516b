"""SIGTERM / SIGUSR1 during training: a checkpoint of the current iteration, exit status EXIT_PREEMPTED,
and `--resume` reaches exactly the weights of an uninterrupted run."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from detectron2.engine import HookBase

from mdqe.engine.hooks import EXIT_PREEMPTED, Preempted
from mdqe.engine.trainer import Trainer
from tests.conftest import REPO_ROOT

MAX_ITER = 5
# a "random" iteration, fixed so that a failure reproduces
SIGNAL_AT = random.Random(17).randrange(1, MAX_ITER - 1)


class SignalDuring(HookBase):
    """Send `signum` to this process while iteration `iteration` runs (between its before and after step)."""

    def __init__(self, iteration: int, signum: int):
        self.iteration, self.signum = iteration, signum

    def before_step(self):
        if self.trainer.iter == self.iteration:
            os.kill(os.getpid(), self.signum)


def _weights(trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def _trainer(cfg, resume: bool, *hooks) -> Trainer:
    torch.manual_seed(1234)
    trainer = Trainer(cfg)
    trainer.register_hooks(list(hooks))
    trainer.resume_or_load(resume=resume)
    return trainer


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1])
def test_signal_checkpoints_the_current_iteration_and_resume_is_exact(tiny_cfg, tmp_path, signum):
    opts = ("SOLVER.MAX_ITER", MAX_ITER, "SOLVER.CHECKPOINT_PERIOD", 1000, "SEED", 5)
    straight = _trainer(tiny_cfg(tmp_path / "straight", *opts), resume=False)
    straight.train()

    cfg = tiny_cfg(tmp_path / "preempted", *opts)
    trainer = _trainer(cfg, False, SignalDuring(SIGNAL_AT, signum))
    with pytest.raises(Preempted) as stop:
        trainer.train()
    assert stop.value.code == EXIT_PREEMPTED and stop.value.iteration == SIGNAL_AT
    with open(os.path.join(cfg.OUTPUT_DIR, "last_checkpoint")) as f:
        assert f.read() == f"model_{SIGNAL_AT:07d}.pth"
    assert (
        signal.getsignal(signum) is signal.default_int_handler or signal.getsignal(signum) == signal.SIG_DFL
    )

    resumed = _trainer(cfg, resume=True)
    assert resumed.start_iter == SIGNAL_AT + 1
    resumed.train()
    for key, value in _weights(straight).items():
        torch.testing.assert_close(_weights(resumed)[key], value, rtol=0, atol=0, msg=key)


@pytest.mark.slow
@pytest.mark.parametrize(("num_processes", "signum"), [(1, signal.SIGUSR1), (2, signal.SIGTERM)])
def test_train_net_exits_with_the_preemption_status(tmp_path, num_processes, signum):
    """The signal goes to train_net's process; with 2 CPU workers it forwards it to both, and they stop
    after the same iteration."""
    out = tmp_path / "out"
    cmd = [
        sys.executable, "train_net.py", "--config-file", "configs/synthetic/tiny.yaml",
        "--num-gpus", str(num_processes), "--dist-url", "auto",
        "SOLVER.MAX_ITER", "100000", "OUTPUT_DIR", str(out), "DATASETS.TEST", "()",
    ]  # fmt: skip
    env = dict(os.environ, DETECTRON2_DATASETS=str(tmp_path / "datasets"), OMP_NUM_THREADS="1")
    process = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        log = out / "log.txt"
        while not (log.exists() and "Starting training from iteration" in log.read_text()):
            assert process.poll() is None and time.monotonic() < deadline, "training did not start"
            time.sleep(0.5)
        time.sleep(1.0)
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == EXIT_PREEMPTED, stderr.decode()[-2000:]
    name = (out / "last_checkpoint").read_text()
    iteration = torch.load(out / name, weights_only=False)["iteration"]
    assert name == f"model_{iteration:07d}.pth" and 0 <= iteration < 99999
