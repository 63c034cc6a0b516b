#!/usr/bin/env python
"""Parameter count, FLOPs and structure of the MDQE model of a config (fvcore), as detectron2's tool.

    python tools/analyze_model.py --config-file configs/R50_ovis_360.yaml --tasks parameter flop
    python tools/analyze_model.py --config-file configs/swinl_ovis.yaml --tasks flop --frames 2 --height 480

FLOPs are counted for one test clip (INPUT.SAMPLING_FRAME_NUM_TEST frames by default) through the
backbone, encoder, mask head, query initialisation, decoder and heads: everything but the tracker.
One fused multiply-add counts as one flop (fvcore's convention); the deformable attention op counts its
bilinear sampling and weighting.
"""

from __future__ import annotations

import argparse
import math

import torch
from torch import nn


def ms_deform_attn_flops(inputs, outputs) -> int:
    """fvcore handle: per output element and sampled point, 4 bilinear corners plus the weighting."""
    from fvcore.nn.jit_handles import get_shape

    value_shape = get_shape(inputs[0])  # (N, S, M, D)
    weights_shape = get_shape(inputs[4])  # (N, Lq, M, L, P)
    return math.prod(weights_shape) * value_shape[-1] * 5


def attention_flops(inputs, outputs) -> int:
    """fvcore handle for scaled_dot_product_attention: q @ k^T and attn @ v."""
    from fvcore.nn.jit_handles import get_shape

    q, k = get_shape(inputs[0]), get_shape(inputs[1])  # (..., Lq, D), (..., Lk, D)
    return 2 * math.prod(q) * k[-2]


class ClipNetwork(nn.Module):
    """MDQE's network on one clip: frames (T, 3, H, W) -> class probabilities, coefficients, mask features."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, frames: torch.Tensor):
        features = self.model.frame_features(list(frames))
        heads = self.model.decode_clip(features)
        return heads.cls_probs, heads.mask_coeff, features.tensors["mask_feats"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", required=True)
    parser.add_argument(
        "--tasks", nargs="+", choices=["parameter", "flop", "structure"], default=["parameter"]
    )
    parser.add_argument(
        "--frames", type=int, default=None, help="clip length (default SAMPLING_FRAME_NUM_TEST)"
    )
    parser.add_argument("--height", type=int, default=None, help="input height (default INPUT.MIN_SIZE_TEST)")
    parser.add_argument("--width", type=int, default=None, help="input width (default 16:9 of the height)")
    parser.add_argument("--max-depth", type=int, default=4, help="depth of the parameter table")
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[], help="config overrides KEY VALUE ...")
    args = parser.parse_args(argv)

    from detectron2.config import get_cfg
    from detectron2.modeling import build_model
    from fvcore.nn import FlopCountAnalysis, flop_count_table, parameter_count_table

    from mdqe import add_mdqe_config

    cfg = get_cfg()
    add_mdqe_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", *args.opts])
    cfg.freeze()
    model = build_model(cfg).eval()

    if "parameter" in args.tasks:
        total = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
        print(f"parameters: {total:,}")
        print(parameter_count_table(model, max_depth=args.max_depth))
    if "structure" in args.tasks:
        print(model)
    if "flop" in args.tasks:
        frames = args.frames or cfg.MODEL.MDQE.SAMPLING_FRAME_NUM_TEST
        height = args.height or cfg.INPUT.MIN_SIZE_TEST
        width = args.width or round(height * 16 / 9)
        clip = torch.randint(0, 256, (frames, 3, height, width), dtype=torch.uint8).float()
        analysis = FlopCountAnalysis(ClipNetwork(model), (clip,))
        analysis.set_op_handle("prim::PythonOp._MSDeformAttnFunction", ms_deform_attn_flops)
        analysis.set_op_handle("aten::scaled_dot_product_attention", attention_flops)
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        with torch.no_grad():
            total = analysis.total()
        per_frame = total / frames / 1e9
        print(
            f"clip of {frames} frames at {height}x{width}: {total / 1e9:.1f} GFLOPs ({per_frame:.1f}/frame)"
        )
        print(flop_count_table(analysis, max_depth=3))
        skipped = analysis.unsupported_ops()
        if skipped:
            print("ops not counted:", dict(skipped))


if __name__ == "__main__":
    main()
