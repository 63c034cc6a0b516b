"""Checkpoint files: temporal inflation, checksum and dtype handling, strict loading with a summary of what
does not fit, atomic writes that survive a kill -9 halfway."""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from mdqe.checkpoint import (
    IncompatibleCheckpointError,
    MDQECheckpointer,
    UnreadableCheckpointError,
    describe_mismatch,
    inflate_checkpoint_file,
    inflate_temporal_weights,
    load_for_inference,
    read_checkpoint,
)
from tests.conftest import REPO_ROOT

H, K, C = 8, 4, 6
PREFIX = "detr.transformer_dec.decoder.layers.0.temp_attn_inst."


def _temporal_state(frames: int) -> dict[str, torch.Tensor]:
    # Frame f of every entry holds the value f + 1, so the frame layout can be read back.
    f = torch.arange(1, frames + 1, dtype=torch.float32)
    return {
        PREFIX + "attention_weights.weight": f.view(1, frames, 1, 1)
        .expand(H, frames, K, C)
        .reshape(-1, C)
        .clone(),
        PREFIX + "attention_weights.bias": f.view(1, frames, 1).expand(H, frames, K).reshape(-1).clone(),
        PREFIX + "sampling_grid_offsets.weight": f.view(1, frames, 1, 1, 1)
        .expand(H, frames, K, 2, C)
        .reshape(-1, C)
        .clone(),
        PREFIX + "sampling_grid_offsets.bias": f.view(1, frames, 1, 1)
        .expand(H, frames, K, 2)
        .reshape(-1)
        .clone(),
        PREFIX + "sampling_offsets": f.view(1, 1, 1, frames, 1, 1).expand(1, 1, H, frames, K, 2).clone(),
        PREFIX + "lvl_spatial_scales": torch.full((frames,), 2, dtype=torch.int64),
        "detr.transformer_dec.decoder.layers.0.cross_attn.attention_weights.bias": torch.zeros(128),
    }


def _frames_of(sd: dict[str, torch.Tensor], frames: int) -> dict[str, list[float]]:
    return {
        "aw": sd[PREFIX + "attention_weights.weight"].view(H, frames, K, C)[0, :, 0, 0].tolist(),
        "awb": sd[PREFIX + "attention_weights.bias"].view(H, frames, K)[0, :, 0].tolist(),
        "go": sd[PREFIX + "sampling_grid_offsets.weight"].view(H, frames, K, 2, C)[0, :, 0, 0, 0].tolist(),
        "gob": sd[PREFIX + "sampling_grid_offsets.bias"].view(H, frames, K, 2)[0, :, 0, 0].tolist(),
        "so": sd[PREFIX + "sampling_offsets"][0, 0, 0, :, 0, 0].tolist(),
    }


def test_single_frame_source_is_copied_to_every_frame():
    out = inflate_temporal_weights(_temporal_state(1), num_frames=4, num_pretrain_frames=1)
    assert all(v == [1.0] * 4 for v in _frames_of(out, 4).values())
    assert out[PREFIX + "lvl_spatial_scales"].tolist() == [2, 2, 2, 2]


def test_multi_frame_source_repeats_frames_consecutively_as_the_original():
    # Original repeat count for a 4-frame source is num_frames: [f1, f1, f2, f2, ...][:2] = [f1, f1].
    out = inflate_temporal_weights(_temporal_state(4), num_frames=2, num_pretrain_frames=4)
    assert all(v == [1.0, 1.0] for v in _frames_of(out, 2).values())
    out = inflate_temporal_weights(_temporal_state(2), num_frames=3, num_pretrain_frames=2)
    assert all(v == [1.0, 1.0, 1.0] for v in _frames_of(out, 3).values())


def test_other_entries_are_untouched():
    sd = _temporal_state(1)
    out = inflate_temporal_weights(sd, num_frames=4, num_pretrain_frames=1)
    key = "detr.transformer_dec.decoder.layers.0.cross_attn.attention_weights.bias"
    assert out[key] is sd[key]


def test_inflated_checkpoint_file_is_written_in_output_dir(tmp_path):
    src = tmp_path / "coco_f1.pth"
    torch.save({"model": _temporal_state(1)}, src)
    path = inflate_checkpoint_file(str(src), 4, 1, str(tmp_path / "out"))
    assert path.endswith("out/coco_f1_inflated_to_f4.pth")
    sd = torch.load(path)["model"]
    assert sd[PREFIX + "attention_weights.weight"].shape == (H * 4 * K, C)


def _toy(hidden: int = 3) -> torch.nn.Sequential:
    return torch.nn.Sequential(torch.nn.Linear(4, hidden), torch.nn.Linear(hidden, 2))


def test_strict_loading_accepts_fitting_weights(tmp_path):
    model = _toy()
    good = tmp_path / "good.pth"
    torch.save({"model": {k: torch.ones_like(v) for k, v in model.state_dict().items()}}, good)
    load_for_inference(model, str(good))
    assert torch.equal(model[0].weight, torch.ones(3, 4))


def test_strict_loading_names_checkpoint_config_and_the_misfits(tmp_path):
    bad = tmp_path / "bad.pth"
    torch.save({"model": _toy(hidden=5).state_dict()}, bad)
    with pytest.raises(
        IncompatibleCheckpointError, match=r"bad\.pth does not fit the model of my\.yaml: "
    ) as e:
        load_for_inference(_toy(), str(bad), config_name="my.yaml")
    assert "3 shape mismatches (e.g. 0.weight (5, 4) vs (3, 4)" in str(e.value)
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_for_inference(_toy(), str(tmp_path / "missing.pth"))


def test_missing_and_unexpected_keys_are_counted():
    model_state = {"a": torch.zeros(2), "b": torch.zeros(2)}
    (summary,) = describe_mismatch({"a": torch.zeros(2), "c": torch.zeros(1)}, model_state)
    assert summary == "1 missing keys (e.g. b); 1 unexpected keys (e.g. c)"
    assert describe_mismatch(dict(model_state), model_state) == []


def test_float16_checkpoint_loads_into_the_float32_model(tmp_path):
    model = _toy()
    half = {k: (v + 0.1234567).half() for k, v in model.state_dict().items()}
    path = tmp_path / "half.pth"
    torch.save({"model": half}, path)
    load_for_inference(model, str(path))
    for key, value in model.state_dict().items():
        assert value.dtype == torch.float32
        assert torch.equal(value, half[key].float()), key
    torch.save({"model": half}, path)  # training from MODEL.WEIGHTS casts as well
    model = _toy()
    MDQECheckpointer(model).load(str(path))
    assert torch.equal(model[1].bias, half["1.bias"].float())


def _write_sha256(path, digest: str) -> None:
    with open(f"{path}.sha256", "w") as f:
        f.write(f"{digest}  {os.path.basename(path)}\n")


def test_sha256_beside_the_checkpoint_is_verified(tmp_path):
    model = _toy()
    path = tmp_path / "release.pth"
    torch.save({"model": model.state_dict()}, path)
    _write_sha256(path, hashlib.sha256(path.read_bytes()).hexdigest())
    load_for_inference(_toy(), str(path))
    wrong = "0" * 64
    _write_sha256(path, wrong)
    found = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(UnreadableCheckpointError) as e:
        load_for_inference(_toy(), str(path))
    assert str(path) in str(e.value) and wrong in str(e.value) and found in str(e.value)


@pytest.mark.parametrize("kind", ["truncated", "text", "json", "tensor"])
def test_a_truncated_or_non_checkpoint_file_gives_one_clear_error(tmp_path, kind):
    path = tmp_path / "weights.pth"
    if kind == "truncated":
        torch.save({"model": _toy().state_dict()}, path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif kind == "text":
        path.write_text("hello")  # 'h' is a pickle opcode: the unpickler fails with a KeyError
    elif kind == "json":
        path.write_text('{"not": "a checkpoint"}')
    else:
        torch.save(torch.zeros(3), path)
    with pytest.raises(UnreadableCheckpointError, match=r"weights\.pth"):
        read_checkpoint(str(path))


def test_training_start_skips_reshaped_heads_and_logs_them_as_a_table(tmp_path, caplog):
    path = tmp_path / "other_head.pth"
    other = _toy()
    other[1] = torch.nn.Linear(3, 7)
    torch.save({"model": other.state_dict()}, path)
    model = _toy()
    with caplog.at_level(logging.WARNING, logger="mdqe.checkpoint"):
        MDQECheckpointer(model).load(str(path))
    assert torch.equal(model[0].weight, other[0].weight)  # fitting weights are loaded
    text = caplog.text
    assert "2 entries of the checkpoint do not fit the model and were skipped" in text
    assert "| 1.weight" in text and "(7, 3)" in text and "(2, 3)" in text


def test_save_writes_last_checkpoint_only_after_the_file(tmp_path):
    checkpointer = MDQECheckpointer(_toy(), save_dir=str(tmp_path))
    checkpointer.save("model_0000001", iteration=1)
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000001.pth"]  # no temporary left


KILLED_WRITE = """
import os, signal, sys, torch
import mdqe.checkpoint as ck
model = torch.nn.Linear(64, 64)
checkpointer = ck.MDQECheckpointer(model, save_dir=sys.argv[1])
checkpointer.save("model_0000001", iteration=1)
def half_then_kill(obj, f):
    f.write(b"PK" + b"x" * 4096)  # the first bytes of a zip archive, then the process dies
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)
ck.torch.save = half_then_kill
model.weight.data.add_(1)
checkpointer.save("model_0000002", iteration=2)
"""


def test_a_checkpoint_write_killed_halfway_leaves_the_previous_one(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(KILLED_WRITE), str(tmp_path)], cwd=REPO_ROOT, timeout=120
    )
    assert result.returncode == -9
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"
    assert not (tmp_path / "model_0000002.pth").exists()
    checkpointer = MDQECheckpointer(torch.nn.Linear(64, 64), save_dir=str(tmp_path))
    assert checkpointer.resume_or_load("", resume=True)["iteration"] == 1
