import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_resnet_backbone

from mdqe.config import add_mdqe_config
from mdqe.modeling.backbone import SwinTransformerV2

TOOL = Path(__file__).resolve().parents[2] / "tools" / "convert_pretrained.py"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True, timeout=120)


def test_torchvision_resnet50_converts_to_a_detectron2_backbone_without_missing_keys(tmp_path):
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), tmp_path / "r50.pth")
    result = _run("resnet", "--src", str(tmp_path / "r50.pth"), "--dst", str(tmp_path / "R-50.pkl"))
    assert result.returncode == 0, result.stderr
    with open(tmp_path / "R-50.pkl", "rb") as f:
        converted = pickle.load(f)
    assert converted["matching_heuristics"] and converted["__author__"] == "torchvision"
    cfg = get_cfg()
    add_mdqe_config(cfg)
    cfg.MODEL.RESNETS.DEPTH = 50
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = False
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res3", "res4", "res5"]
    backbone = build_resnet_backbone(cfg, ShapeSpec(channels=3))
    state = {k: torch.as_tensor(v) for k, v in converted["model"].items()}
    missing, unexpected = backbone.load_state_dict(state, strict=False)
    assert missing == [] and unexpected == []


def test_official_swin_layout_gets_the_mdqe_backbone_prefix(tmp_path):
    kwargs = dict(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window_size=4)
    source = SwinTransformerV2(**kwargs)
    official = {k: v for k, v in source.state_dict().items() if not re.match(r"norm\d\.", k)}
    official["head.weight"] = torch.zeros(10, 128)  # classifier of the ImageNet model, dropped
    torch.save({"model": official}, tmp_path / "swin.pth")
    result = _run("swin", "--src", str(tmp_path / "swin.pth"), "--dst", str(tmp_path / "swin_d2.pth"))
    assert result.returncode == 0, result.stderr
    converted = torch.load(tmp_path / "swin_d2.pth")["model"]
    assert all(k.startswith("detr.backbone.0.backbone.") for k in converted)
    target = SwinTransformerV2(**kwargs)
    stripped = {k.removeprefix("detr.backbone.0.backbone."): v for k, v in converted.items()}
    missing, unexpected = target.load_state_dict(stripped, strict=False)
    # Only the per-output LayerNorms of the detection backbone are new.
    assert sorted(missing) == sorted(k for k in target.state_dict() if re.match(r"norm\d\.", k))
    assert unexpected == []


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "checkpoint not found"),
        (b"not a checkpoint", "cannot read"),
        ({"a": 1}, "state dict of tensors"),
    ],
)
def test_bad_sources_give_a_clear_error(tmp_path, content, message):
    src = tmp_path / "bad.pth"
    if isinstance(content, bytes):
        src.write_bytes(content)
    elif content is not None:
        torch.save(content, src)
    result = _run("resnet", "--src", str(src), "--dst", str(tmp_path / "out.pkl"))
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_inflate_command_writes_the_inflated_checkpoint(tmp_path):
    key = "detr.transformer_dec.decoder.layers.0.temp_attn_inst.attention_weights.bias"
    torch.save({"model": {key: torch.arange(32.0)}}, tmp_path / "coco_f1.pth")
    result = _run("inflate", "--src", str(tmp_path / "coco_f1.pth"), "--num-frames", "4")
    assert result.returncode == 0, result.stderr
    inflated = torch.load(tmp_path / "coco_f1_inflated_to_f4.pth")["model"][key]
    assert inflated.shape == (8 * 4 * 4,)
