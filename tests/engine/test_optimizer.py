import pytest
import torch
from detectron2.config import get_cfg

from mdqe.config import add_mdqe_config
from mdqe.engine.optimizer import build_optimizer, parameter_groups


class Toy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = torch.nn.Linear(3, 3)
        self.head = torch.nn.Linear(3, 2)
        self.shared = self.head  # a shared module is optimised once
        self.frozen = torch.nn.Linear(2, 2)
        self.frozen.requires_grad_(False)


def _cfg(**solver):
    cfg = get_cfg()
    add_mdqe_config(cfg)
    cfg.SOLVER.OPTIMIZER = "ADAMW"
    cfg.SOLVER.BASE_LR = 1e-4
    cfg.SOLVER.WEIGHT_DECAY = 0.05
    cfg.SOLVER.BACKBONE_MULTIPLIER = 0.1
    for k, v in solver.items():
        setattr(cfg.SOLVER, k, v)
    return cfg


def test_one_group_per_trainable_parameter_with_backbone_multiplier():
    model = Toy()
    groups = parameter_groups(model, base_lr=1e-4, weight_decay=0.05, backbone_multiplier=0.1)
    assert len(groups) == 4  # backbone w/b, head w/b; shared alias and frozen params excluded
    lrs = {id(g["params"][0]): g["lr"] for g in groups}
    assert lrs[id(model.backbone.weight)] == pytest.approx(1e-5)
    assert lrs[id(model.head.weight)] == pytest.approx(1e-4)
    assert all(g["weight_decay"] == 0.05 for g in groups)


def test_optimizer_name_is_case_insensitive_and_validated():
    assert isinstance(build_optimizer(_cfg(OPTIMIZER="AdamW"), Toy()), torch.optim.AdamW)
    with pytest.raises(ValueError, match=r"SOLVER\.OPTIMIZER"):
        build_optimizer(_cfg(OPTIMIZER="LAMB"), Toy())


def test_full_model_clipping_bounds_the_global_gradient_norm():
    cfg = _cfg()
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "full_model"
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 0.01
    cfg.SOLVER.CLIP_GRADIENTS.NORM_TYPE = 2.0
    model = Toy()
    optimizer = build_optimizer(cfg, model)
    (model.head(model.backbone(torch.ones(4, 3))) * 100).sum().backward()
    optimizer.step()
    params = [p for p in model.parameters() if p.grad is not None]
    total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
    assert total.item() == pytest.approx(0.01, rel=1e-4)
