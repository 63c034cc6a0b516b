"""Mixed-precision training (SOLVER.AMP.ENABLED) on CUDA: detectron2's AMPTrainer path of the Trainer."""

from __future__ import annotations

import os

import pytest
import torch

from mdqe.engine.train_loop import MDQEAMPTrainer
from mdqe.engine.trainer import Trainer


@pytest.mark.gpu
def test_amp_training_steps_and_checkpoints_the_grad_scaler(tiny_cfg, tmp_path):
    cfg = tiny_cfg(tmp_path, "MODEL.DEVICE", "cuda", "SOLVER.AMP.ENABLED", True, "SOLVER.MAX_ITER", 3)
    torch.manual_seed(0)
    trainer = Trainer(cfg)
    assert isinstance(trainer._trainer, MDQEAMPTrainer)
    trainer.resume_or_load(resume=False)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.train()
    after = trainer.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    checkpoint = torch.load(os.path.join(cfg.OUTPUT_DIR, "model_final.pth"), weights_only=False)
    assert "grad_scaler" in checkpoint["trainer"]["_trainer"]
