"""Checkpoint compatibility: the model's state_dict is the original's, key for key, and official-layout
checkpoints load without missing or unexpected keys."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg

from mdqe.config import add_mdqe_config
from mdqe.modeling import MDQE

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ["R50_ovis_360", "R50_ytvis19", "R50_ytvis21", "R50_coco", "R101_ytvis19", "swinl_ovis"]


def _cfg(name: str):
    cfg = get_cfg()
    add_mdqe_config(cfg)
    cfg.merge_from_file(str(REPO_ROOT / "configs" / f"{name}.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    return cfg


def _layout(reference_dir: Path, name: str) -> list[tuple[str, str, str]]:
    lines = (reference_dir / f"state_dict_{name}.tsv").read_text().splitlines()
    return [tuple(line.split("\t")) for line in lines]


@pytest.mark.parametrize("name", CONFIGS)
def test_state_dict_layout_equals_original(reference_dir, name):
    with torch.device("meta"):
        model = MDQE(_cfg(name))
    mine = [
        (key, ",".join(str(d) for d in value.shape), str(value.dtype).removeprefix("torch."))
        for key, value in model.state_dict().items()
    ]
    expected = _layout(reference_dir, name)
    assert len(mine) == len(expected)
    for position, (got, want) in enumerate(zip(mine, expected)):
        assert got == want, f"entry {position}"


@pytest.fixture(scope="module")
def r50_ovis_model():
    torch.manual_seed(0)
    return MDQE(_cfg("R50_ovis_360"))


def test_integer_buffers_equal_the_originals(reference_dir, r50_ovis_model):
    fixture = torch.load(reference_dir / "fixtures" / "r50_ovis_seed1.pt", weights_only=False)
    state = r50_ovis_model.state_dict()
    ints = {k: v for k, v in state.items() if not v.is_floating_point()}
    assert set(ints) == set(fixture["int_buffers"])
    for key, value in fixture["int_buffers"].items():
        assert torch.equal(ints[key], value), key


def test_generated_checkpoint_loads_without_missing_or_unexpected_keys(
    reference_dir, gen_weights, r50_ovis_model, tmp_path, caplog
):
    ints = {k: v for k, v in r50_ovis_model.state_dict().items() if not v.is_floating_point()}
    weights = gen_weights.make_state_dict(
        gen_weights.read_layout(reference_dir / "state_dict_R50_ovis_360.tsv"), 1, integers=ints
    )
    path = tmp_path / "model_final.pth"
    torch.save({"model": weights}, path)
    with caplog.at_level(logging.WARNING):
        result = DetectionCheckpointer(r50_ovis_model).load(str(path))
    assert result == {}
    assert "missing" not in caplog.text.lower() and "unexpected" not in caplog.text.lower()
    # aliased keys share one module: the later (`decoder.*`) key's value is the one that sticks
    dec = r50_ovis_model.detr.transformer_dec
    assert dec.decoder.norm is dec.decoder_norm
    torch.testing.assert_close(
        dec.decoder_norm.weight.detach(), weights["detr.transformer_dec.decoder.norm.weight"]
    )
    stem = "detr.backbone.0.backbone.stem.conv1.weight"
    torch.testing.assert_close(
        r50_ovis_model.detr.backbone[0].backbone.stem.conv1.weight.detach(), weights[stem]
    )

    # the same check does see a missing key
    del weights["detr.transformer_enc.level_embed"]
    torch.save({"model": weights}, path)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        DetectionCheckpointer(r50_ovis_model).load(str(path))
    assert "detr.transformer_enc.level_embed" in caplog.text
