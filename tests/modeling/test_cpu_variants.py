"""MODEL.MDQE.CHANNELS_LAST and MODEL.MDQE.AUTOCAST_BF16 on the tiny config (their effect on the
original's fixture: tests/modeling/test_fixture_variants.py and BENCHMARKS.md)."""

from __future__ import annotations

from pathlib import Path

import torch
from _model_testing import training_clip
from detectron2.config import get_cfg

from mdqe.config import add_mdqe_config
from mdqe.modeling import MDQE

ROOT = Path(__file__).resolve().parents[2]


def tiny_model(*opts) -> MDQE:
    cfg = get_cfg()
    add_mdqe_config(cfg)
    cfg.merge_from_file(str(ROOT / "configs" / "synthetic" / "tiny.yaml"))
    cfg.merge_from_list(list(opts))
    torch.manual_seed(0)
    return MDQE(cfg)


def video(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"image": list(torch.randint(0, 256, (4, 3, 96, 160), dtype=torch.uint8, generator=g))}


def _backbone_and_memory_dtypes(model: MDQE) -> tuple[list[torch.dtype], list[torch.dtype]]:
    backbone, memory = [], []
    hooks = [
        model.detr.backbone.register_forward_hook(lambda m, i, o: backbone.append(o[0][0][0])),
        model.detr.transformer_enc.register_forward_hook(lambda m, i, o: memory.append(o[0].dtype)),
    ]
    try:
        with torch.no_grad():
            model.eval()([video()])
    finally:
        for hook in hooks:
            hook.remove()
    return backbone, memory


def test_channels_last_keeps_the_backbone_channels_last_and_the_results():
    default, fast = tiny_model(), tiny_model("MODEL.MDQE.CHANNELS_LAST", "True")
    conv = fast.detr.backbone[0].backbone.stem.conv1.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    features, _ = _backbone_and_memory_dtypes(fast)
    assert features[0].is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        expected, found = default.eval()([video(1)]), fast.eval()([video(1)])
    assert found["pred_labels"] == expected["pred_labels"]
    torch.testing.assert_close(torch.tensor(found["pred_scores"]), torch.tensor(expected["pred_scores"]))


def test_bfloat16_autocast_runs_the_backbone_in_bfloat16_and_the_encoder_in_float32():
    model = tiny_model("MODEL.MDQE.AUTOCAST_BF16", "True")
    features, memory = _backbone_and_memory_dtypes(model)
    assert {f.dtype for f in features} == {torch.bfloat16}
    assert set(memory) == {torch.float32}
    plain, _ = _backbone_and_memory_dtypes(tiny_model())
    assert {f.dtype for f in plain} == {torch.float32}


def test_bfloat16_autocast_trains_with_float32_losses_and_gradients():
    model = tiny_model("MODEL.MDQE.AUTOCAST_BF16", "True").train()
    losses = model([training_clip(2)])
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)
