import torch

from mdqe.checkpoint import inflate_checkpoint_file, inflate_temporal_weights

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


def test_strict_loading_accepts_fitting_weights_and_names_the_misfits(tmp_path):
    import pytest

    from mdqe.checkpoint import IncompatibleCheckpointError, load_checkpoint_strict

    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    good = tmp_path / "good.pth"
    torch.save({"model": {k: torch.ones_like(v) for k, v in model.state_dict().items()}}, good)
    load_checkpoint_strict(model, str(good))
    assert torch.equal(model[0].weight, torch.ones(3, 4))

    other = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Linear(5, 2))
    bad = tmp_path / "bad.pth"
    torch.save({"model": other.state_dict()}, bad)
    with pytest.raises(
        IncompatibleCheckpointError, match=r"bad\.pth do not fit.*shape mismatches.*0\.weight"
    ):
        load_checkpoint_strict(model, str(bad))
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_checkpoint_strict(model, str(tmp_path / "missing.pth"))
