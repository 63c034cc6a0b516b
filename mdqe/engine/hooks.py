"""Training hooks: a loud warning when the first iterations leave every parameter unchanged."""

from __future__ import annotations

import logging

import torch
from detectron2.engine import HookBase

logger = logging.getLogger(__name__)


def parameter_fingerprint(model: torch.nn.Module, samples_per_param: int = 64) -> list[torch.Tensor]:
    """Copies of up to `samples_per_param` evenly strided elements of every trainable parameter.

    Any optimizer step that moves a parameter moves (almost surely) some of these elements, and the copy
    stays small for models of any size.
    """
    out = []
    for param in model.parameters():
        if param.requires_grad:
            flat = param.detach().reshape(-1)
            stride = max(1, flat.numel() // samples_per_param)
            out.append(flat[::stride].clone())
    return out


class FrozenTrainingWarning(HookBase):
    """Warn when `num_iters` iterations after the start left every sampled trainable parameter unchanged.

    A run that never moves (zero learning rate, gradients clipped to norm 0, all parameters frozen)
    otherwise trains for days with a flat loss and no error.
    """

    def __init__(self, num_iters: int = 3):
        self._num_iters = num_iters
        self._start: list[torch.Tensor] | None = None
        self._check_iter = -1

    def before_train(self) -> None:
        self._start = parameter_fingerprint(self.trainer.model)
        self._check_iter = self.trainer.start_iter + self._num_iters - 1

    def after_step(self) -> None:
        if self.trainer.iter != self._check_iter or self._start is None:
            return
        now = parameter_fingerprint(self.trainer.model)
        moved = any(not torch.equal(a, b) for a, b in zip(self._start, now))
        self._start = None
        if moved:
            return
        cfg = getattr(self.trainer, "cfg", None)
        details = ""
        if cfg is not None:
            clip = cfg.SOLVER.CLIP_GRADIENTS
            lrs = sorted({g["lr"] for g in self.trainer.optimizer.param_groups})
            details = (
                f" SOLVER.BASE_LR is {cfg.SOLVER.BASE_LR} (current learning rates {lrs[:3]}), "
                f"SOLVER.CLIP_GRADIENTS ENABLED {clip.ENABLED} CLIP_TYPE {clip.CLIP_TYPE!r} "
                f"CLIP_VALUE {clip.CLIP_VALUE}."
            )
        logger.warning(
            "!!! No trainable parameter changed in the first %d iterations of this run: the model is not "
            "training. Likely causes: a zero learning rate or a zero gradient-clipping value.%s",
            self._num_iters,
            details,
        )
