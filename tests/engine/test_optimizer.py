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


def test_full_model_clipping_with_value_zero_is_off_as_in_the_original():
    cfg = _cfg()
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "full_model"
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 0.0
    assert type(build_optimizer(cfg, Toy())) is torch.optim.AdamW


def _weights(trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def _train_weights(tiny_cfg, out, *opts) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(initial, final) weights of a 2-iteration tiny run."""
    from mdqe.engine.trainer import Trainer

    torch.manual_seed(0)
    trainer = Trainer(tiny_cfg(out, "SOLVER.MAX_ITER", 2, "SEED", 3, *opts))
    trainer.resume_or_load(resume=False)
    initial = _weights(trainer)
    trainer.train()
    return initial, _weights(trainer)


def test_clip_value_zero_trains_exactly_as_without_clipping(tiny_cfg, tmp_path):
    clip = "SOLVER.CLIP_GRADIENTS"
    start, off = _train_weights(tiny_cfg, tmp_path / "off", f"{clip}.ENABLED", False)
    _, zero = _train_weights(
        tiny_cfg,
        tmp_path / "zero",
        *(f"{clip}.ENABLED", True, f"{clip}.CLIP_TYPE", "full_model", f"{clip}.CLIP_VALUE", 0.0),
    )
    assert any(not torch.equal(off[k], start[k]) for k in off)  # the runs did train
    for key, value in off.items():
        assert torch.equal(zero[key], value), key
