"""Training hooks: a loud warning when the first iterations leave every parameter unchanged, and a
checkpoint plus a distinct exit status on preemption signals."""

from __future__ import annotations

import logging
import signal
import threading

import torch
from detectron2.engine import HookBase
from detectron2.utils import comm

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


# Exit status of a training run stopped by SIGTERM / SIGUSR1 after writing its checkpoint: EX_TEMPFAIL of
# sysexits.h ("try again later"). `--resume` continues it; tools/submit_slurm.py requeues on it.
EXIT_PREEMPTED = 75
PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class Preempted(SystemExit):
    """Raised out of the training loop once the preemption checkpoint is written."""

    def __init__(self, signum: int, iteration: int):
        super().__init__(EXIT_PREEMPTED)
        self.signum = signum
        self.iteration = iteration


class PreemptionCheckpointer(HookBase):
    """On SIGTERM or SIGUSR1 (SLURM's warning before a time limit or preemption), finish the current
    iteration, write `model_<iter>.pth` (and `last_checkpoint`), and leave with exit status EXIT_PREEMPTED.

    The signal only sets a flag; the checkpoint is written between iterations, so it holds a consistent
    model, optimizer, scheduler and iteration and `--resume` continues exactly. With several processes the
    flag is combined over all of them each iteration, so every process stops after the same iteration.
    A handler installed before training (e.g. submitit's requeue) is called once the checkpoint is written.
    """

    def __init__(self):
        self._signum = 0
        self._previous: dict[int, object] = {}

    def _on_signal(self, signum: int, frame) -> None:
        self._signum = signum
        logger.warning("Received %s: checkpointing after this iteration", signal.Signals(signum).name)

    def before_train(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            logger.warning("Training outside the main thread: no checkpoint on SIGTERM/SIGUSR1")
            return
        for signum in PREEMPTION_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._on_signal)

    def after_train(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def after_step(self) -> None:
        signum = self._signum
        if comm.get_world_size() > 1:
            signum = max(comm.all_gather(signum))
        if not signum:
            return
        iteration = self.trainer.iter
        self.trainer.checkpointer.save(f"model_{iteration:07d}", iteration=iteration)
        comm.synchronize()
        previous = self._previous.get(signum)
        if callable(previous) and previous is not signal.default_int_handler:
            previous(signum, None)  # e.g. submitit's requeue, now that the checkpoint is complete
        logger.warning(
            "Stopped by %s after iteration %d; checkpoint written. Continue with --resume (exit status %d)",
            signal.Signals(signum).name,
            iteration,
            EXIT_PREEMPTED,
        )
        raise Preempted(signum, iteration)
