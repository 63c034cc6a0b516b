"""A training run whose first iterations leave the model unchanged says so loudly."""

from __future__ import annotations

import logging

import torch

from mdqe.engine.trainer import Trainer


def _train(cfg) -> None:
    torch.manual_seed(0)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()


def _frozen_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "No trainable parameter changed" in r.getMessage()]


def test_zero_learning_rate_warns_naming_the_likely_causes(tiny_cfg, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="mdqe.engine.hooks"):
        _train(tiny_cfg(tmp_path, "SOLVER.BASE_LR", 0.0, "SOLVER.MAX_ITER", 3))
    (message,) = _frozen_warnings(caplog)
    assert "zero learning rate" in message and "SOLVER.BASE_LR is 0.0" in message
    assert "CLIP_VALUE" in message


def test_a_training_run_does_not_warn(tiny_cfg, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="mdqe.engine.hooks"):
        _train(tiny_cfg(tmp_path, "SOLVER.MAX_ITER", 3))
    assert _frozen_warnings(caplog) == []
