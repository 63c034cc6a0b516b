"""mdqe.benchmark.gpu_check.op_shapes: the timed shapes are R50_ovis_360's deformable-attention calls."""

from __future__ import annotations

import math

from detectron2.config import get_cfg

from mdqe.benchmark.gpu_check.op_shapes import op_shapes
from mdqe.benchmark.gpu_check.repo import REPO
from mdqe.config import add_mdqe_config
from mdqe.modeling.build import num_grid_queries

# MDQE's feature levels (ResNet C3-C5 and one more stride-2 convolution) and the frame padding
STRIDES = (8, 16, 32, 64)
SIZE_DIVISIBILITY = 32


def test_the_op_shapes_are_those_of_r50_ovis_360_at_360p():
    cfg = get_cfg()
    add_mdqe_config(cfg)
    cfg.merge_from_file(str(REPO / "configs" / "R50_ovis_360.yaml"))
    mdqe = cfg.MODEL.MDQE
    height = math.ceil(cfg.INPUT.MIN_SIZE_TEST / SIZE_DIVISIBILITY) * SIZE_DIVISIBILITY
    width = 640  # OVIS videos are 16:9
    levels = tuple((height // s, width // s) for s in STRIDES[: mdqe.NUM_FEATURE_LEVELS])
    frames, queries = mdqe.SAMPLING_FRAME_NUM_TEST, num_grid_queries(cfg)
    encoder, cross, temporal = op_shapes(dry_run=False)
    for shape in (encoder, cross, temporal):
        assert (shape.heads, shape.channels) == (mdqe.NHEADS, mdqe.HIDDEN_DIM // mdqe.NHEADS)
    assert encoder.points == mdqe.ENC_NUM_POINTS and cross.points == temporal.points == mdqe.DEC_NUM_POINTS
    tokens = sum(h * w for h, w in levels)
    assert [(c.batch, c.queries, c.levels) for c in encoder.calls] == [(frames, tokens, levels)]
    assert [(c.batch, c.queries, c.levels) for c in cross.calls] == [(frames, queries, levels)]
    # one call per feature level, the clip's frames as the op's levels
    assert [(c.batch, c.queries, c.levels) for c in temporal.calls] == [
        (1, queries, (level,) * cfg.INPUT.SAMPLING_FRAME_NUM) for level in levels
    ]


def test_the_dry_run_shapes_have_the_same_names():
    assert [s.name for s in op_shapes(dry_run=True)] == [s.name for s in op_shapes(dry_run=False)]


def test_a_shape_describes_its_calls():
    assert (
        op_shapes(dry_run=False)[2]
        .describe()
        .startswith(
            "decoder temporal: 4 calls: N 1, Lq 196, levels 4 x 48x80; N 1, Lq 196, levels 4 x 24x40;"
        )
    )
