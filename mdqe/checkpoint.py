"""Checkpoints: reading with clear errors, strict loading for inference, atomic writes, and the original's
temporal "inflation" of MDQE weights to another clip length.

Reading (`read_checkpoint`) never runs code from the file (`mdqe.checkpoint_io`: a restricted unpickler
for model-zoo `.pkl` files, `torch.load(weights_only=True)` for the rest), verifies a `<file>.sha256`
beside the file when there is one, and turns a truncated, non-checkpoint or unsafe file into one
`UnreadableCheckpointError` (`UnsafeCheckpointError` naming the global an unsafe file asks for).
Inference (`--eval-only`, `tools/demo.py`, `VideoPredictor`) loads strictly (`load_for_inference`): any
missing, unexpected or differently shaped key raises `IncompatibleCheckpointError` with a summary of what
does not fit (class count, clip length of the temporal attention, backbone). Training from MODEL.WEIGHTS
keeps detectron2's semantics (shape-mismatched heads are skipped), logged as one table. `MDQECheckpointer`
writes every file through a temporary file and a rename, and `last_checkpoint` only once the file is
complete, so a kill at any moment leaves the folder resumable from the last complete checkpoint.

Only the temporal instance attention of the decoder (`decoder.layers.*.temp_attn_inst`) has parameters
whose shape depends on the training clip length T (INPUT.SAMPLING_FRAME_NUM). A checkpoint trained with
another T (e.g. COCO single-frame pre-training) is adapted by repeating its per-frame slices along the
frame axis, as the original's `convert_inflated_weights.inflated_weights` does.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode
from tabulate import tabulate

from .checkpoint_io import (
    CheckpointError,
    UnreadableCheckpointError,
    load_checkpoint_file,
)

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
    state_dict = read_checkpoint(path)["model"]
    inflated = inflate_temporal_weights(state_dict, num_frames, num_pretrain_frames, n_heads, n_points)
    name = os.path.splitext(os.path.basename(path))[0]
    out_path = os.path.join(output_dir, f"{name}_inflated_to_f{num_frames}.pth")
    os.makedirs(output_dir, exist_ok=True)
    atomic_torch_save({"model": inflated}, out_path)
    logger.info("Inflated %s from %d to %d frames: %s", path, num_pretrain_frames, num_frames, out_path)
    return out_path


class IncompatibleCheckpointError(CheckpointError):
    """The weights of a checkpoint do not fit the model built from the config."""


def _atomic_write(path: str, write) -> None:
    """Call `write(file)` on a temporary file beside `path`, flush it to disk, then rename it to `path`."""
    directory, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(directory, f".{name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)  # the rename itself survives a power loss
    finally:
        os.close(fd)


def atomic_torch_save(obj: Any, path: str) -> None:
    """`torch.save(obj, path)` such that `path` holds either its old content or the complete new one."""
    _atomic_write(path, lambda f: torch.save(obj, f))


def sha256_of(path: str, chunk_size: int = 1 << 22) -> str:
    """Hex sha256 digest of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def verify_checksum(path: str) -> bool:
    """Check `path` against `<path>.sha256` (sha256sum format "<hex>  <name>") if that file exists.

    Returns whether a checksum was verified; raises UnreadableCheckpointError on a mismatch.
    """
    sidecar = path + ".sha256"
    if not os.path.isfile(sidecar):
        return False
    with open(sidecar) as f:
        fields = f.read().split()
    if not fields or not re.fullmatch(r"[0-9a-fA-F]{64}", fields[0]):
        raise UnreadableCheckpointError(f"{sidecar} does not start with a sha256 hex digest: {fields[:1]}")
    expected, found = fields[0].lower(), sha256_of(path)
    if expected != found:
        raise UnreadableCheckpointError(
            f"checkpoint {path} is corrupted or not the published file: its sha256 is {found}, "
            f"{sidecar} expects {expected}"
        )
    logger.info("Checkpoint %s matches its sha256 (%s)", path, found)
    return True


def _first_sentence(error: Exception) -> str:
    """`Type: first sentence of the message` of an error, or only its type when it says nothing."""
    message = str(error).strip()
    return (
        f"{type(error).__name__}: {message.split('. ')[0].splitlines()[0]}"
        if message
        else type(error).__name__
    )


def _model_zoo_layout(data: Any, path: str) -> Any:
    """The layouts of detectron2's `DetectionCheckpointer._load_file` as {"model": weights, ...}: a
    detectron2 model-zoo `.pkl` as it is, a Caffe2 / Detectron `.pkl` (its "blobs", without momenta, for
    name matching), a pycls `.pyth` ("model_state"), a bare state dict under "model"."""
    if not isinstance(data, Mapping):
        return data
    if path.endswith(".pkl"):
        if "model" in data and "__author__" in data:
            return data
        blobs = data.get("blobs", data)
        if not isinstance(blobs, Mapping):
            return blobs
        weights = {k: v for k, v in blobs.items() if not str(k).endswith("_momentum")}
        return {"model": weights, "__author__": "Caffe2", "matching_heuristics": True}
    if path.endswith(".pyth") and isinstance(data.get("model_state"), Mapping):
        state = {k: v for k, v in data["model_state"].items() if not str(k).endswith("num_batches_tracked")}
        return {"model": state, "__author__": "pycls", "matching_heuristics": True}
    return data if "model" in data else {"model": data}


# A tensor may be a view that spans more elements than its storage holds (a buffer made by `.expand`);
# past this many bytes such a view is refused, since the first copy of it would allocate them all.
_EXPANDED_VIEW_BYTES = 1 << 24


def _overreaching_tensor(state: Mapping[str, Any]) -> str | None:
    """The first key whose tensor spans more bytes than its storage holds and than
    `_EXPANDED_VIEW_BYTES` (a crafted stride-0 view), or None."""
    for key, value in state.items():
        spanned = value.numel() * value.element_size()
        if spanned > max(value.untyped_storage().nbytes(), _EXPANDED_VIEW_BYTES):
            return key
    return None


def _as_tensor(array: np.ndarray) -> torch.Tensor:
    """A numpy array of a `.pkl` as a tensor (in native byte order: a file may store big-endian)."""
    return torch.as_tensor(array.astype(array.dtype.newbyteorder("="), copy=False))


def read_checkpoint(path: str) -> dict:
    """The checkpoint at `path` as {"model": state dict of tensors, ...other entries}.

    Accepts detectron2/MDQE `.pth` files ({"model": state_dict, ...}), bare state dicts, the model zoo's
    `.pkl` files and pycls `.pyth` files, loaded without running code from them (`mdqe.checkpoint_io`).
    Raises FileNotFoundError, or UnreadableCheckpointError for a truncated file, a file that is not a
    checkpoint, one that does not match its `.sha256`, or (UnsafeCheckpointError) one that asks for a
    Python global a weights file never needs.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    verify_checksum(path)
    try:
        checkpoint = _model_zoo_layout(load_checkpoint_file(path), path)
    except CheckpointError:
        raise
    except Exception as e:  # the unpickler raises anything (KeyError, EOFError, ...) on a foreign file
        raise UnreadableCheckpointError(
            f"cannot read checkpoint {path} ({os.path.getsize(path)} bytes): it is truncated or not a "
            f"PyTorch checkpoint ({_first_sentence(e)})"
        ) from e
    state = checkpoint.get("model") if isinstance(checkpoint, Mapping) else None
    if not isinstance(state, Mapping) or not state:
        raise UnreadableCheckpointError(
            f"{path} holds no model state dict (found {type(checkpoint).__name__})"
        )
    bad = [
        k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, (torch.Tensor, np.ndarray))
    ]
    if bad:
        raise UnreadableCheckpointError(
            f"{path} is not a model checkpoint: entry {bad[0]!r:.80} is not a tensor"
        )
    checkpoint = dict(checkpoint)
    checkpoint["model"] = {
        k.removeprefix("module."): _as_tensor(v) if isinstance(v, np.ndarray) else v for k, v in state.items()
    }
    overreaching = _overreaching_tensor(checkpoint["model"])
    if overreaching is not None:
        raise UnreadableCheckpointError(
            f"{path} is not a model checkpoint: entry {overreaching!r} spans more elements than it stores"
        )
    return checkpoint


def cast_to_model_dtypes(state: Mapping[str, torch.Tensor], model_state: Mapping[str, torch.Tensor]) -> dict:
    """Floating-point entries cast to the dtype of the model's entry (e.g. a float16 release into a float32
    model); other entries unchanged."""
    out = dict(state)
    for key, value in state.items():
        target = model_state.get(key)
        if target is not None and value.is_floating_point() and target.is_floating_point():
            out[key] = value.to(target.dtype)
    return out


def _first_shape(state: Mapping[str, torch.Tensor], pattern: str) -> tuple[int, ...] | None:
    """Shape of the first entry whose key matches the regex `pattern`."""
    regex = re.compile(pattern)
    return next((tuple(v.shape) for k, v in state.items() if regex.search(k)), None)


def num_classes_of(state: Mapping[str, torch.Tensor]) -> int | None:
    """Number of classes of the decoder's class head (its last linear layer), or None without one."""
    heads = [
        (int(m.group(1)), v)
        for k, v in state.items()
        if (m := re.search(r"(?<!rpn_)cls_embed\.layers\.(\d+)\.bias$", k))
    ]
    return int(max(heads, key=lambda h: h[0])[1].shape[0]) if heads else None


def temporal_frames_of(state: Mapping[str, torch.Tensor]) -> int | None:
    """Clip length the decoder's temporal attention was built for (sampling_offsets is (1,1,H,T,K,2))."""
    shape = _first_shape(state, rf"\.{TEMPORAL_MODULE}\.sampling_offsets$")
    return shape[3] if shape else None


def backbone_of(state: Mapping[str, torch.Tensor]) -> str:
    """A readable name of the backbone in a state dict: "Swin-L", "ResNet-101", ... or "unknown"."""
    patch = _first_shape(state, r"backbone\.patch_embed\.proj\.weight$")
    if patch is not None:
        return {96: "Swin-T/S", 128: "Swin-B", 192: "Swin-L"}.get(patch[0], f"Swin (embed dim {patch[0]})")
    res4 = {m.group(1) for k in state if (m := re.search(r"backbone\.res4\.(\d+)\.", k))}
    if res4:
        bottleneck = any(re.search(r"backbone\.res4\.0\.conv3\.", k) for k in state)
        names = (
            {6: "ResNet-50", 23: "ResNet-101", 36: "ResNet-152"}
            if bottleneck
            else {2: "ResNet-18", 6: "ResNet-34"}
        )
        return names.get(len(res4), f"ResNet ({len(res4)} res4 blocks)")
    return "unknown"


def describe_mismatch(
    state: Mapping[str, torch.Tensor], model_state: Mapping[str, torch.Tensor], cfg: CfgNode | None = None
) -> list[str]:
    """What does not fit between a checkpoint's `state` and the model's `model_state`; [] if it fits.

    The first items explain the usual causes in terms of config keys (backbone, class count, clip length of
    the temporal attention); the last counts and exemplifies the missing, unexpected and reshaped keys.
    """
    missing = [k for k in model_state if k not in state]
    unexpected = [k for k in state if k not in model_state]
    shapes = [k for k in model_state if k in state and tuple(state[k].shape) != tuple(model_state[k].shape)]
    if not (missing or unexpected or shapes):
        return []
    causes = []
    ours, theirs = backbone_of(model_state), backbone_of(state)
    if ours != theirs:
        name = cfg.MODEL.BACKBONE.NAME if cfg is not None else "?"
        causes.append(f"{theirs} checkpoint, {ours} config (MODEL.BACKBONE.NAME {name})")
    ours, theirs = num_classes_of(model_state), num_classes_of(state)
    if ours != theirs and None not in (ours, theirs):
        causes.append(f"class head has {theirs} classes, config MODEL.MDQE.NUM_CLASSES is {ours}")
    ours, theirs = temporal_frames_of(model_state), temporal_frames_of(state)
    if ours != theirs and None not in (ours, theirs):
        causes.append(
            f"decoder temporal attention is for {theirs} frames, config INPUT.SAMPLING_FRAME_NUM {ours}: "
            f"pass INPUT.PRETRAIN_FRAME_NUM {theirs} to inflate"
        )
    counts = [
        f"{len(keys)} {what} (e.g. {', '.join(detail(k) for k in keys[:2])})"
        for keys, what, detail in (
            (missing, "missing keys", str),
            (unexpected, "unexpected keys", str),
            (
                shapes,
                "shape mismatches",
                lambda k: f"{k} {tuple(state[k].shape)} vs {tuple(model_state[k].shape)}",
            ),
        )
        if keys
    ]
    return [*causes, "; ".join(counts)]


def _adapt_clip_length(state: dict, model_state: Mapping[str, torch.Tensor], cfg: CfgNode | None) -> dict:
    """Inflate the temporal attention when the config says the weights are for INPUT.PRETRAIN_FRAME_NUM
    frames and the model is for another INPUT.SAMPLING_FRAME_NUM; otherwise return `state` unchanged."""
    frames, model_frames = temporal_frames_of(state), temporal_frames_of(model_state)
    if cfg is None or frames is None or frames == model_frames or frames != cfg.INPUT.PRETRAIN_FRAME_NUM:
        return state
    logger.info(
        "Inflating the temporal attention of the checkpoint from %d to %d frames", frames, model_frames
    )
    return inflate_temporal_weights(
        state, model_frames, frames, n_heads=cfg.MODEL.MDQE.NHEADS, n_points=cfg.MODEL.MDQE.DEC_NUM_POINTS
    )


def check_fits(
    model: torch.nn.Module, path: str, cfg: CfgNode | None = None, config_name: str = "this config"
) -> dict[str, torch.Tensor]:
    """The state dict of checkpoint `path`, ready for `model.load_state_dict(..., strict=True)`.

    Works on a model built on the meta device (only keys, shapes and dtypes are used). With `cfg`, weights
    for INPUT.PRETRAIN_FRAME_NUM frames are inflated to the model's clip length. Raises
    IncompatibleCheckpointError naming the checkpoint, the config and what does not fit.
    """
    model_state = model.state_dict()
    state = _adapt_clip_length(read_checkpoint(path)["model"], model_state, cfg)
    problems = describe_mismatch(state, model_state, cfg)
    if problems:
        raise IncompatibleCheckpointError(
            f"checkpoint {path} does not fit the model of {config_name}: " + "; ".join(problems)
        )
    return cast_to_model_dtypes(state, model_state)


def load_for_inference(
    model: torch.nn.Module, path: str, cfg: CfgNode | None = None, config_name: str = "this config"
) -> None:
    """Load checkpoint `path` into `model` strictly (see `check_fits`); float16 weights are cast."""
    model.load_state_dict(check_fits(model, path, cfg, config_name), strict=True)
    logger.info("Loaded %s (strict)", path)


class MDQECheckpointer(DetectionCheckpointer):
    """detectron2's checkpointer with atomic writes, checksum-verified reads with clear errors, float16
    weights cast to the model's dtypes, and one table of the keys skipped when training from MODEL.WEIGHTS."""

    def save(self, name: str, **kwargs: Any) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        data.update({key: obj.state_dict() for key, obj in self.checkpointables.items()})
        data.update(kwargs)
        basename = f"{name}.pth"
        path = os.path.join(self.save_dir, basename)
        logger.info("Saving checkpoint to %s", path)
        atomic_torch_save(data, path)
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        path = os.path.join(self.save_dir, "last_checkpoint")
        _atomic_write(path, lambda f: f.write(last_filename_basename.encode()))

    def _load_file(self, filename: str) -> dict:
        return read_checkpoint(filename)

    def _load_model(self, checkpoint: Any):
        model_state = self.model.state_dict()
        checkpoint["model"] = cast_to_model_dtypes(checkpoint["model"], model_state)
        return super()._load_model(checkpoint)

    def _log_incompatible_keys(self, incompatible) -> None:
        if incompatible.incorrect_shapes:
            rows = [(k, tuple(a), tuple(b)) for k, a, b in incompatible.incorrect_shapes]
            table = tabulate(
                rows, headers=["skipped key", "checkpoint shape", "model shape"], tablefmt="pipe"
            )
            logger.warning(
                "%d entries of the checkpoint do not fit the model and were skipped:\n%s", len(rows), table
            )
        super()._log_incompatible_keys(incompatible._replace(incorrect_shapes=[]))
