"""Checkpoint utilities: the original's temporal "inflation" of MDQE weights to another clip length.

Only the temporal instance attention of the decoder (`decoder.layers.*.temp_attn_inst`) has parameters
whose shape depends on the training clip length T (INPUT.SAMPLING_FRAME_NUM). A checkpoint trained with
another T (e.g. COCO single-frame pre-training) is adapted by repeating its per-frame slices along the
frame axis, as the original's `convert_inflated_weights.inflated_weights` does.
"""

from __future__ import annotations

import logging
import os

import torch

logger = logging.getLogger(__name__)

TEMPORAL_MODULE = "temp_attn_inst"


def _repeat_frames(t: torch.Tensor, frame_axis: int, repeats: int, num_frames: int) -> torch.Tensor:
    """Repeat each frame along `frame_axis` `repeats` times in a row; keep the first `num_frames`."""
    return t.repeat_interleave(repeats, dim=frame_axis).narrow(frame_axis, 0, num_frames)


def inflate_temporal_weights(
    state_dict: dict[str, torch.Tensor],
    num_frames: int,
    num_pretrain_frames: int,
    n_heads: int = 8,
    n_points: int = 4,
) -> dict[str, torch.Tensor]:
    """Adapt the clip-length-dependent entries of a state dict from `num_pretrain_frames` to `num_frames`.

    Entries of `...temp_attn_inst.`:
      attention_weights.weight (H*F*K, C) / .bias (H*F*K,)
      sampling_grid_offsets.weight (H*F*K*2, C) / .bias (H*F*K*2,)
      sampling_offsets (1, 1, H, F, K, 2) buffer;  lvl_spatial_scales (F,) buffer
    Each source frame is repeated `r` times consecutively and the first `num_frames` are kept, with the
    original's repeat count r = num_frames + (1 // num_pretrain_frames) (num_frames + 1 for a single-frame
    source, num_frames otherwise). Returns a new dict; other entries are shared, not copied.
    """
    src = num_pretrain_frames
    repeats = max(num_frames + 1 // src, 1)  # the original's operator precedence, kept on purpose
    out = dict(state_dict)
    for key, value in state_dict.items():
        if f".{TEMPORAL_MODULE}." not in key:
            continue
        module, name = key.split(".")[-2:]
        if module in ("attention_weights", "sampling_grid_offsets") and name in ("weight", "bias"):
            xy = 2 if module == "sampling_grid_offsets" else 1
            rest = value.shape[1:]
            v = value.reshape(n_heads, src, n_points, xy, *rest)
            v = _repeat_frames(v, 1, repeats, num_frames)
            out[key] = v.reshape(n_heads * num_frames * n_points * xy, *rest)
        elif name == "sampling_offsets" and module == TEMPORAL_MODULE:
            out[key] = _repeat_frames(value, 3, repeats, num_frames)
        elif name == "lvl_spatial_scales" and module == TEMPORAL_MODULE:
            out[key] = _repeat_frames(value, 0, repeats, num_frames)
    return out


def inflate_checkpoint_file(
    path: str, num_frames: int, num_pretrain_frames: int, output_dir: str, n_heads: int = 8, n_points: int = 4
) -> str:
    """Write `<output_dir>/<name>_inflated_to_f<T>.pth` from the checkpoint at `path`; returns its path."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    state_dict = checkpoint.get("model", checkpoint)
    inflated = inflate_temporal_weights(state_dict, num_frames, num_pretrain_frames, n_heads, n_points)
    name = os.path.splitext(os.path.basename(path))[0]
    out_path = os.path.join(output_dir, f"{name}_inflated_to_f{num_frames}.pth")
    os.makedirs(output_dir, exist_ok=True)
    tmp = out_path + ".tmp"
    torch.save({"model": inflated}, tmp)
    os.replace(tmp, out_path)
    logger.info("Inflated %s from %d to %d frames: %s", path, num_pretrain_frames, num_frames, out_path)
    return out_path


class IncompatibleCheckpointError(ValueError):
    """The weights of a checkpoint do not fit the model built from the config."""


def load_checkpoint_strict(model: torch.nn.Module, path: str) -> None:
    """Load `path` into `model` through detectron2's checkpointer, refusing weights that do not fit.

    Missing keys, unexpected keys and shape mismatches raise IncompatibleCheckpointError naming the file
    and a few offending keys (detectron2 alone only logs them and leaves those weights random).
    """
    from detectron2.checkpoint import DetectionCheckpointer

    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    checkpointer = DetectionCheckpointer(model)
    try:
        checkpoint = checkpointer._load_file(path)
    except Exception as e:
        raise IncompatibleCheckpointError(f"cannot read checkpoint {path}: {e}") from e
    incompatible = checkpointer._load_model(checkpoint)
    problems = []
    if incompatible.incorrect_shapes:
        shapes = ", ".join(f"{k} {tuple(a)} vs {tuple(b)}" for k, a, b in incompatible.incorrect_shapes[:3])
        problems.append(
            f"{len(incompatible.incorrect_shapes)} shape mismatches (checkpoint vs model: {shapes})"
        )
    if incompatible.missing_keys:
        problems.append(
            f"{len(incompatible.missing_keys)} missing keys (e.g. {incompatible.missing_keys[:3]})"
        )
    if incompatible.unexpected_keys:
        keys = incompatible.unexpected_keys[:3]
        problems.append(f"{len(incompatible.unexpected_keys)} unexpected keys (e.g. {keys})")
    if problems:
        raise IncompatibleCheckpointError(
            f"the weights in {path} do not fit the model of this config: " + "; ".join(problems)
        )
