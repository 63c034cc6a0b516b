"""The per-iteration step (detectron2's SimpleTrainer / AMPTrainer) with a clear non-finite-loss error,
and a hook that makes every iteration's random draws a function of (seed, iteration, rank)."""

from __future__ import annotations

import random
from collections.abc import Mapping

import numpy as np
import torch
from detectron2.engine import AMPTrainer, HookBase, SimpleTrainer
from detectron2.utils import comm


def check_losses_finite(loss_dict: Mapping[str, torch.Tensor], iteration: int) -> None:
    """Raise FloatingPointError naming the iteration and every NaN/Inf loss term.

    Args:
        loss_dict: scalar loss tensors of one iteration, by name.
        iteration: the trainer's iteration, for the message.
    """
    values = torch.stack([v.detach().float().reshape(()) for v in loss_dict.values()]).cpu()
    finite = torch.isfinite(values)
    if bool(finite.all()):
        return
    names = list(loss_dict)
    bad = ", ".join(f"{names[i]}={values[i].item()}" for i in (~finite).nonzero().flatten().tolist())
    others = ", ".join(f"{names[i]}={values[i].item():.4g}" for i in finite.nonzero().flatten().tolist())
    raise FloatingPointError(
        f"Loss became NaN or Inf at iteration {iteration} (rank {comm.get_rank()}) in "
        f"{int((~finite).sum())} of {len(names)} terms: {bad}. Finite terms: {others or 'none'}. "
        "Try a lower SOLVER.BASE_LR, enable SOLVER.CLIP_GRADIENTS, or check this batch's annotations."
    )


class _FiniteLossMixin:
    """Checks the losses of every step on every process, before the optimizer step and the metric gather."""

    def _write_metrics(
        self, loss_dict: Mapping[str, torch.Tensor], data_time: float, prefix: str = ""
    ) -> None:
        check_losses_finite(loss_dict, self.iter)
        super()._write_metrics(loss_dict, data_time, prefix)


class MDQESimpleTrainer(_FiniteLossMixin, SimpleTrainer):
    """fp32 training step: forward, sum of the loss dict, backward, metrics, optimizer step."""


class MDQEAMPTrainer(_FiniteLossMixin, AMPTrainer):
    """Mixed-precision training step (CUDA only, as detectron2's AMPTrainer)."""


def iteration_seed(seed: int, iteration: int, rank: int) -> int:
    """A 31-bit seed that differs for every (seed, iteration, rank)."""
    mixed = np.random.SeedSequence([seed, iteration, rank]).generate_state(1)[0]
    return int(mixed) & 0x7FFFFFFF


class IterationSeeder(HookBase):
    """Re-seed python, numpy and torch before every step from (SEED, iteration, rank).

    The losses draw random samples (the contrastive terms use `torch.randperm`). Seeding them per
    iteration, instead of once per process, lets a run resumed at iteration k draw exactly what an
    uninterrupted run draws, so both reach the same weights.
    """

    def __init__(self, seed: int):
        self._seed = seed

    def before_step(self) -> None:
        value = iteration_seed(self._seed, self.trainer.iter, comm.get_rank())
        random.seed(value)
        np.random.seed(value)
        torch.manual_seed(value)
