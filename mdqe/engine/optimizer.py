"""The original MDQE optimizer: one parameter group per parameter, backbone lr multiplier, clipping."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch
from detectron2.config import CfgNode
from detectron2.solver.build import maybe_add_gradient_clipping

logger = logging.getLogger(__name__)


def parameter_groups(
    model: torch.nn.Module, base_lr: float, weight_decay: float, backbone_multiplier: float
) -> list[dict]:
    """One group per trainable parameter (shared parameters once), as the original.

    Parameters whose name contains "backbone" get `base_lr * backbone_multiplier`; weight decay applies to
    every parameter, norms and embeddings included (the original's rule).
    """
    groups = []
    seen: set[int] = set()
    for name, param in model.named_parameters():
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))
        lr = base_lr * backbone_multiplier if "backbone" in name else base_lr
        groups.append({"params": [param], "lr": lr, "weight_decay": weight_decay})
    return groups


def _full_model_clipping(optim_cls: type[torch.optim.Optimizer], max_norm: float, norm_type: float):
    """Subclass of `optim_cls` whose step() first clips the global gradient norm over all its params."""

    class FullModelGradientClipping(optim_cls):
        def step(self, closure=None):
            params: Iterable[torch.Tensor] = [p for g in self.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type=norm_type)
            return super().step(closure=closure)

    FullModelGradientClipping.__name__ = f"{optim_cls.__name__}WithFullModelGradientClipping"
    return FullModelGradientClipping


def build_optimizer(cfg: CfgNode, model: torch.nn.Module) -> torch.optim.Optimizer:
    """AdamW (or SGD) over per-parameter groups, with the original's gradient clipping.

    Reads SOLVER.{OPTIMIZER, BASE_LR, WEIGHT_DECAY, BACKBONE_MULTIPLIER, MOMENTUM, CLIP_GRADIENTS.*}.
    CLIP_TYPE "full_model" clips only when CLIP_VALUE > 0, as the original; other types are detectron2's.
    OPTIMIZER is case-insensitive ("ADAMW" in the YAMLs, "AdamW" from the original's Swin defaults).
    """
    solver = cfg.SOLVER
    groups = parameter_groups(model, solver.BASE_LR, solver.WEIGHT_DECAY, solver.BACKBONE_MULTIPLIER)
    kind = solver.OPTIMIZER.upper()
    if kind == "ADAMW":
        optim_cls, kwargs = torch.optim.AdamW, {}
    elif kind == "SGD":
        optim_cls, kwargs = torch.optim.SGD, {"momentum": solver.MOMENTUM}
    else:
        raise ValueError(f"SOLVER.OPTIMIZER must be 'ADAMW' or 'SGD', got {solver.OPTIMIZER!r}")
    clip = solver.CLIP_GRADIENTS
    if clip.ENABLED and clip.CLIP_TYPE == "full_model":
        # The original clips the full model only for CLIP_VALUE > 0; 0 (or less) means no clipping,
        # not clipping every gradient to norm 0.
        if clip.CLIP_VALUE > 0:
            optim_cls = _full_model_clipping(optim_cls, clip.CLIP_VALUE, clip.NORM_TYPE)
        else:
            logger.info("SOLVER.CLIP_GRADIENTS.CLIP_VALUE is %s: full-model clipping is off", clip.CLIP_VALUE)
    elif clip.ENABLED:
        optim_cls = maybe_add_gradient_clipping(cfg, optim_cls)
    optimizer = optim_cls(groups, lr=solver.BASE_LR, **kwargs)
    logger.info("Optimizer: %s over %d parameter groups", type(optimizer).__name__, len(groups))
    return optimizer
