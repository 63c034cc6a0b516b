"""ONNX translations of the deformable-attention operator `torch.ops.mdqe.ms_deform_attn`.

`torch.onnx.export(..., dynamo=True)` hands every call of the operator to one of these onnxscript
functions (`custom_translation_table`):

- "gridsample": the operator decomposed into standard ONNX ops, one `GridSample` per level, as the
  PyTorch reference `mdqe.layers.ms_deform_attn_pytorch` computes it (bilinear, zeros outside the map,
  align_corners=False). Runs on every ONNX runtime.
- "tensorrt": one node per call of TensorRT's multi-scale deformable attention plugin
  (`MultiscaleDeformableAttnPlugin_TRT`, plugin/multiscaleDeformableAttnPlugin in NVIDIA/TensorRT): the
  five inputs in the plugin's order (value, spatial_shapes, level_start_index, sampling_locations,
  attention_weights), the two index inputs as int32 (the plugin takes only int32 there), no attributes
  but `plugin_version` (the plugin has no parameters), and the plugin's (N, Lq, M, D) output reshaped
  to the operator's (N, Lq, M * D). TensorRT's ONNX parser builds such a node from its plugin registry;
  onnxruntime cannot run it.

Shapes (the operator's): value (N, S, M, D), spatial_shapes (L, 2) int64, level_start_index (L,) int64,
sampling_locations (N, Lq, M, L, P, 2), attention_weights (N, Lq, M, L, P) -> (N, Lq, M * D). M, D, L
and P are static in MDQE's graphs; N, S and Lq may be dynamic.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import onnx
import onnxscript
from onnxscript import opset18 as op

__all__ = ["MSDA_MODES", "OPSET", "TRT_PLUGIN_DOMAIN", "TRT_PLUGIN_NAME", "translation_table"]

OPSET = 18
TRT_PLUGIN_NAME = "MultiscaleDeformableAttnPlugin_TRT"
TRT_PLUGIN_VERSION = "1"
TRT_PLUGIN_DOMAIN = "trt.plugins"


def _plugin_schema() -> onnx.defs.OpSchema:
    """The plugin's signature for onnxscript, which builds nodes only of ops with a schema (TensorRT itself
    looks the op up by name in its plugin registry)."""
    param = onnx.defs.OpSchema.FormalParameter
    return onnx.defs.OpSchema(
        TRT_PLUGIN_NAME,
        TRT_PLUGIN_DOMAIN,
        1,
        "TensorRT's multi-scale deformable attention plugin.",
        inputs=[
            param("value", "T"),
            param("spatial_shapes", "I"),
            param("level_start_index", "I"),
            param("sampling_locations", "T"),
            param("attention_weights", "T"),
        ],
        outputs=[param("output", "T")],
        type_constraints=[("T", ["tensor(float)", "tensor(float16)"], ""), ("I", ["tensor(int32)"], "")],
        attributes=[onnx.defs.OpSchema.Attribute("plugin_version", onnx.defs.OpSchema.AttrType.STRING, "")],
    )


_trt_plugin = onnxscript.values.Op(
    onnxscript.values.Opset(domain=TRT_PLUGIN_DOMAIN, version=1), TRT_PLUGIN_NAME, _plugin_schema()
)


def _static(dim: Any, name: str) -> int:
    if not isinstance(dim, int):
        raise ValueError(f"ms_deform_attn export: {name} must be static, found {dim}")
    return dim


def _ints(*values: int):
    return op.Constant(value_ints=list(values))


def msda_gridsample(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    """The operator as GridSample per level, weighted sum over levels and points."""
    num_heads = _static(value.shape[2], "the head count M")
    head_dim = _static(value.shape[3], "the head size D")
    num_levels = _static(sampling_locations.shape[3], "the level count L")
    num_points = _static(sampling_locations.shape[4], "the point count P")
    one = _ints(1)
    # (N, Lq, M, L, P, 2) -> (N, M, Lq, L, P, 2), grid coordinates in [-1, 1]
    grids = op.Transpose(op.Sub(op.Mul(sampling_locations, 2.0), 1.0), perm=[0, 2, 1, 3, 4, 5])
    grid_shape = op.Concat(_ints(-1), op.Shape(grids, start=2, end=3), _ints(num_points, 2), axis=0)
    sampled = []
    for level in range(num_levels):
        index = _ints(level)
        size = op.Gather(spatial_shapes, index, axis=0)  # (1, 2)
        height = op.Reshape(op.Gather(size, _ints(0), axis=1), one)
        width = op.Reshape(op.Gather(size, _ints(1), axis=1), one)
        start = op.Gather(level_start_index, index, axis=0)
        end = op.Add(start, op.Mul(height, width))
        # (N, S_l, M, D) -> (N, M, D, S_l) -> (N * M, D, H_l, W_l)
        value_l = op.Transpose(op.Slice(value, start, end, one), perm=[0, 2, 3, 1])
        value_l = op.Reshape(value_l, op.Concat(_ints(-1, head_dim), height, width, axis=0))
        # (N, M, Lq, P, 2) -> (N * M, Lq, P, 2)
        grid_l = op.Reshape(op.Gather(grids, index, axis=3), grid_shape)
        # (N * M, D, Lq, P)
        sampled.append(op.GridSample(value_l, grid_l, mode="bilinear", padding_mode="zeros", align_corners=0))
    # (N * M, D, Lq, L * P)
    stacked = op.Concat(*sampled, axis=3) if num_levels > 1 else sampled[0]
    # (N, Lq, M, L, P) -> (N, M, Lq, L, P) -> (N * M, 1, Lq, L * P)
    weights = op.Transpose(attention_weights, perm=[0, 2, 1, 3, 4])
    weights_shape = op.Concat(
        _ints(-1, 1), op.Shape(weights, start=2, end=3), _ints(num_levels * num_points), axis=0
    )
    weights = op.Reshape(weights, weights_shape)
    out = op.ReduceSum(op.Mul(stacked, weights), _ints(3), keepdims=0)  # (N * M, D, Lq)
    out = op.Reshape(out, op.Concat(_ints(-1, num_heads * head_dim), op.Shape(out, start=2), axis=0))
    return op.Transpose(out, perm=[0, 2, 1])  # (N, Lq, M * D)


def msda_tensorrt(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    """One TensorRT plugin node: (N, Lq, M, D), reshaped to (N, Lq, M * D)."""
    out = _trt_plugin(
        value,
        op.Cast(spatial_shapes, to=onnxscript.INT32.dtype),
        op.Cast(level_start_index, to=onnxscript.INT32.dtype),
        sampling_locations,
        attention_weights,
        plugin_version=TRT_PLUGIN_VERSION,
    )
    return op.Reshape(out, _ints(0, 0, -1))


MSDA_MODES: dict[str, Callable[..., Any]] = {"gridsample": msda_gridsample, "tensorrt": msda_tensorrt}


def translation_table(mode: str) -> dict[Any, Callable[..., Any]]:
    """The `custom_translation_table` of `torch.onnx.export` for `mode` ("gridsample" or "tensorrt")."""
    import torch

    import mdqe.layers  # noqa: F401  (registers torch.ops.mdqe)

    if mode not in MSDA_MODES:
        raise ValueError(f"--msda must be one of {sorted(MSDA_MODES)}, got {mode!r}")
    return {torch.ops.mdqe.ms_deform_attn.default: MSDA_MODES[mode]}
