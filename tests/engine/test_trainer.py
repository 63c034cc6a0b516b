"""What a user sees from a training run: progress lines, metrics.json, TensorBoard events, checkpoints."""

from __future__ import annotations

import glob
import json
import logging
import os

import pytest
import torch

from mdqe.engine.trainer import Trainer

MAX_ITER = 4


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture(scope="module")
def run(tiny_cfg, tmp_path_factory) -> tuple[str, list[str]]:
    """(output folder, progress lines) of a short training run that logs every iteration."""
    out = tmp_path_factory.mktemp("trainer")
    cfg = tiny_cfg(out, "SOLVER.MAX_ITER", MAX_ITER, "SOLVER.CHECKPOINT_PERIOD", 1000)
    printer_logger = logging.getLogger("detectron2.utils.events")
    handler = _Lines()
    printer_logger.addHandler(handler)
    try:
        torch.manual_seed(0)
        trainer = Trainer(cfg)
        trainer.resume_or_load(resume=False)
        trainer.train()
    finally:
        printer_logger.removeHandler(handler)
    return str(out), handler.lines


def test_progress_line_shows_iteration_eta_losses_lr_and_data_time(run):
    _, lines = run
    last = [line for line in lines if "iter:" in line][-1]
    for field in (
        f"iter: {MAX_ITER - 1}",
        "eta:",
        "total_loss:",
        "loss_mask:",
        "loss_cls:",
        "lr:",
        "data_time:",
    ):
        assert field in last, last


def test_metrics_json_and_tensorboard_events_are_written(run):
    out, _ = run
    with open(os.path.join(out, "metrics.json")) as f:
        records = [json.loads(line) for line in f]
    last = records[-1]
    assert last["iteration"] == MAX_ITER - 1
    assert {
        "total_loss",
        "loss_sem_cls_query_init",
        "loss_reid_query_init",
        "lr",
        "data_time",
        "time",
    } <= last.keys()
    assert glob.glob(os.path.join(out, "events.out.tfevents.*"))


def test_final_checkpoint_holds_model_iteration_and_optimizer_state(run):
    out, _ = run
    checkpoint = torch.load(os.path.join(out, "model_final.pth"), weights_only=False)
    assert checkpoint["iteration"] == MAX_ITER - 1
    assert checkpoint["trainer"]["_trainer"]["optimizer"]["state"]
    assert "LRScheduler" in checkpoint["trainer"]["hooks"]
