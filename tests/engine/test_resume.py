"""A run stopped after iteration k and resumed with --resume ends with the same weights as an
uninterrupted run (same seed; the data stream and the losses' random draws depend only on the seed
and the iteration)."""

from __future__ import annotations

import json
import os

import pytest
import torch
from detectron2.engine import HookBase

from mdqe.engine.trainer import Trainer

MAX_ITER = 4
STOP_AFTER = 2  # iterations done before the interruption


class Interrupted(Exception):
    pass


class InterruptAfter(HookBase):
    """Raise after `num_iters` iterations, once the periodic checkpointer has written that iteration."""

    def __init__(self, num_iters: int):
        self.num_iters = num_iters

    def after_step(self):
        if self.trainer.iter + 1 == self.num_iters:
            raise Interrupted


def _train(cfg, resume: bool, interrupt_after: int | None = None) -> dict[str, torch.Tensor]:
    torch.manual_seed(1234)  # model init; a resumed run replaces it by the checkpoint
    trainer = Trainer(cfg)
    if interrupt_after is not None:
        trainer.register_hooks([InterruptAfter(interrupt_after)])
    trainer.resume_or_load(resume=resume)
    trainer.train()
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


@pytest.fixture(scope="module")
def runs(tiny_cfg, tmp_path_factory) -> dict[str, tuple[dict[str, torch.Tensor], str]]:
    """(final weights, output folder) of the uninterrupted and of the interrupted-then-resumed run."""
    results = {}
    for kind in ("straight", "resumed"):
        out = tmp_path_factory.mktemp(kind)
        opts = ("SOLVER.MAX_ITER", MAX_ITER, "SOLVER.CHECKPOINT_PERIOD", STOP_AFTER, "SEED", 5)
        cfg = tiny_cfg(out, *opts)
        if kind == "straight":
            weights = _train(cfg, resume=False)
        else:
            with pytest.raises(Interrupted):
                _train(cfg, resume=False, interrupt_after=STOP_AFTER)
            weights = _train(cfg, resume=True)
        results[kind] = (weights, str(out))
    return results


def test_resumed_run_reaches_the_uninterrupted_weights(runs):
    straight, resumed = runs["straight"][0], runs["resumed"][0]
    assert straight.keys() == resumed.keys()
    for key, value in straight.items():
        torch.testing.assert_close(resumed[key], value, rtol=0, atol=0, msg=key)


def test_resumed_run_continues_from_the_checkpoint_iteration(runs):
    out = runs["resumed"][1]
    with open(os.path.join(out, "last_checkpoint")) as f:
        assert f.read().strip() == "model_final.pth"
    with open(os.path.join(out, "metrics.json")) as f:
        iterations = [json.loads(line)["iteration"] for line in f]
    assert iterations == sorted(set(iterations)) and iterations[-1] == MAX_ITER - 1


def test_training_changed_the_weights_after_the_checkpoint(runs):
    """Guards the equality test: iterations k..n did change the weights the resumed run started from."""
    weights, out = runs["straight"]
    checkpoint = torch.load(os.path.join(out, f"model_{STOP_AFTER - 1:07d}.pth"), weights_only=False)["model"]
    assert any(not torch.equal(checkpoint[k], v) for k, v in weights.items())
