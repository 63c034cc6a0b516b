"""Export MDQE to ONNX: the frame encoder and the clip decoders (`mdqe.deploy.graphs`) and a manifest.

One clip decoder per clip length 1..T (T = MODEL.MDQE.SAMPLING_FRAME_NUM_TEST): whole-video inference
decodes clips of T frames and, at a video's end or for a video shorter than T, shorter ones, and the
decoder's graph depends on the clip length. The graphs are written to a new folder (or, with
`force`, over the files of an earlier export) and checked with `onnx.checker`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any

import onnx
import torch
from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog
from torch.export import Dim

from mdqe.checkpoint import CheckpointError, load_for_inference
from mdqe.inference import VideoInferenceParams
from mdqe.modeling.meta_arch import MDQE

from .graphs import HEAD_NAMES, QUERY_NAMES, ClipDecoder, FrameEncoder, features_to_named
from .manifest import FORMAT, MANIFEST_NAME, WEIGHTS_KEY, DeployError, clip_decoder_name, file_sha256
from .msda_onnx import MSDA_MODES, OPSET, translation_table

__all__ = ["export_onnx"]

logger = logging.getLogger(__name__)


def _build_model(cfg: CfgNode, config_name: str) -> MDQE:
    if cfg.MODEL.META_ARCHITECTURE != "MDQE":
        raise DeployError(
            f"{config_name}: MODEL.META_ARCHITECTURE is {cfg.MODEL.META_ARCHITECTURE!r}, not 'MDQE'"
        )
    weights = cfg.MODEL.WEIGHTS
    if not weights:
        raise DeployError(f"{config_name}: MODEL.WEIGHTS is empty; an export needs trained weights")
    if not os.path.isfile(weights):
        raise DeployError(f"{config_name}: MODEL.WEIGHTS {weights} is not a file")
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.MDQE.COMPILE = False
    model = MDQE(cfg)
    if model.is_image:
        raise DeployError(
            f"{config_name}: DATASETS.TEST {cfg.DATASETS.TEST[0]} is an image test set; the export covers "
            "whole-video inference (use a video config)"
        )
    try:
        load_for_inference(model, weights, cfg, config_name)
    except (CheckpointError, FileNotFoundError) as e:
        raise DeployError(str(e)) from None
    return model.eval()


def _value_shapes(value_info: list[onnx.ValueInfoProto]) -> list[dict[str, Any]]:
    out = []
    for info in value_info:
        dims = info.type.tensor_type.shape.dim
        out.append({"name": info.name, "shape": [d.dim_param or d.dim_value for d in dims]})
    return out


def _export(
    module: torch.nn.Module,
    args: tuple[torch.Tensor, ...],
    path: Path,
    names: tuple[list[str], list[str]],
    dynamic_shapes: Any,
    msda: str,
    weights_sha256: str,
    what: str,
) -> dict[str, Any]:
    input_names, output_names = names
    try:
        program = torch.onnx.export(
            module,
            args,
            dynamo=True,
            input_names=input_names,
            output_names=output_names,
            dynamic_shapes=dynamic_shapes,
            opset_version=OPSET,
            custom_translation_table=translation_table(msda),
            optimize=True,
            verbose=False,
        )
    except Exception as e:  # the exporter raises many kinds; each becomes one error naming the graph
        logger.debug("export of the %s failed", what, exc_info=True)
        raise DeployError(f"the {what} could not be exported: {_summary(e)}") from None
    program.model.metadata_props[WEIGHTS_KEY] = weights_sha256
    program.save(str(path))
    graph = onnx.load(str(path), load_external_data=False)
    try:
        # full_check runs strict shape inference, which a node of an ONNX-unknown op (the plugin) fails
        onnx.checker.check_model(str(path), full_check=msda == "gridsample")
    except onnx.checker.ValidationError as e:
        raise DeployError(f"onnx.checker rejects the {what} ({path}): {e}") from None
    return {
        "file": path.name,
        "sha256": file_sha256(path),
        "inputs": _value_shapes(list(graph.graph.input)),
        "outputs": _value_shapes(list(graph.graph.output)),
    }


def _summary(error: Exception) -> str:
    """The root cause of an exporter error in one line (its "Exception summary" lists the chain, root
    first), e.g. "ValueError: ..."."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if "## Exception summary" in lines:
        cause = lines[lines.index("## Exception summary") + 1]
        return cause.replace("<class '", "").replace("'>", "", 1)
    return f"{type(error).__name__}: {lines[0] if lines else ''}"


def _check_output(directory: Path, force: bool) -> None:
    if directory.exists() and not directory.is_dir():
        raise DeployError(f"--output {directory} exists and is not a folder")
    if directory.is_dir() and any(directory.iterdir()) and not force:
        raise DeployError(f"--output {directory} is not empty; pass --force to overwrite its files")
    directory.mkdir(parents=True, exist_ok=True)


def export_onnx(
    cfg: CfgNode, output: str | Path, msda: str = "gridsample", force: bool = False, config_name: str = ""
) -> dict[str, Any]:
    """Export the model of `cfg` (with MODEL.WEIGHTS) to ONNX graphs and a manifest in `output`.

    Args:
        cfg: an MDQE config of a video test set, with MODEL.WEIGHTS.
        output: the folder to write; it must be new or empty unless `force`.
        msda: "gridsample" (standard ONNX ops) or "tensorrt" (TensorRT plugin nodes), see `msda_onnx`.
        force: overwrite the files of an earlier export in `output`.
        config_name: the config's name for the manifest and messages.

    Returns:
        the manifest (also written to `output`/manifest.json).

    Raises:
        DeployError: a config or weights that cannot be exported, an occupied output folder, or a graph
            that the exporter or onnx.checker rejects.
    """
    config_name = config_name or "the given config"
    if msda not in MSDA_MODES:
        raise DeployError(f"--msda must be one of {sorted(MSDA_MODES)}, got {msda!r}")
    model = _build_model(cfg, config_name)
    directory = Path(output)
    _check_output(directory, force)
    weights_sha256 = file_sha256(cfg.MODEL.WEIGHTS)
    params = VideoInferenceParams.build(cfg)
    clip_len = params.clip_len

    # example frames of the test resize's short side; batch, height and width are dynamic in the graph
    height = max(cfg.INPUT.MIN_SIZE_TEST, 2 * model.size_divisibility)
    width = height * 4 // 3 + 8
    frames = torch.rand(clip_len, 3, height, width) * 255
    with torch.no_grad():
        named = features_to_named(model._frame_features(*_padded(model, frames)))
    output_names = list(named)
    dims = {
        0: Dim("frames", min=1, max=1024),
        2: Dim("height", min=64, max=4096),
        3: Dim("width", min=64, max=4096),
    }
    graphs = {
        "frame_encoder": _export(
            FrameEncoder(model).eval(),
            (frames,),
            directory / "frame_encoder.onnx",
            (["frames"], output_names),
            ({**dims},),
            msda,
            weights_sha256,
            "frame encoder",
        )
    }
    value_names = [name for name in output_names if name.startswith("values.")]
    input_names = ["spatial_shapes", *QUERY_NAMES, *value_names]
    for num_frames in range(clip_len, 0, -1):
        args = tuple(
            named[name][:num_frames] if name != "spatial_shapes" else named[name] for name in input_names
        )
        # token counts (dimension 1 of the values) follow the frame size; the rest is static
        dynamic = [
            {1: Dim("tokens_" + n.replace(".", "_"), min=1)} if n.startswith("values.") else None
            for n in input_names
        ]
        name = clip_decoder_name(num_frames)
        graphs[name] = _export(
            ClipDecoder(model, num_frames).eval(),
            args,
            directory / f"{name}.onnx",
            (input_names, list(HEAD_NAMES)),
            (dynamic[0], tuple(dynamic[1:])),  # forward(spatial_shapes, *tensors)
            msda,
            weights_sha256,
            f"clip decoder for {num_frames}-frame clips",
        )
    dec = model.detr.transformer_dec
    manifest = {
        "format": FORMAT,
        "config": config_name,
        "weights": cfg.MODEL.WEIGHTS,
        "weights_sha256": weights_sha256,
        "opset": OPSET,
        "msda": msda,
        "test_resize": {
            "min_size": cfg.INPUT.MIN_SIZE_TEST,
            "max_size": cfg.INPUT.MAX_SIZE_TEST,
            "format": cfg.INPUT.FORMAT,
        },
        "inference": dataclasses.asdict(params),
        "class_names": list(MetadataCatalog.get(cfg.DATASETS.TEST[0]).get("thing_classes", []))
        if cfg.DATASETS.TEST
        else [],
        "decoder": {"num_layers": len(dec.decoder.layers), "num_levels": cfg.MODEL.MDQE.NUM_FEATURE_LEVELS},
        "graphs": graphs,
    }
    (directory / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
    logger.info("Exported %s to %s (%d graphs, --msda %s)", config_name, directory, len(graphs), msda)
    return manifest


def _padded(model: MDQE, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """What `FrameEncoder` hands the per-frame part: normalised, padded frames and their sizes."""
    images = model.preprocess(list(frames))
    return images.tensor, torch.tensor(images.image_sizes)
