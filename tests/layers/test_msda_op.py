"""The registered operator `torch.ops.mdqe.ms_deform_attn`: opcheck (schema, fake kernel, autograd
registration, AOT dispatch), and MDQE's attention module under torch.compile and torch.export."""

from __future__ import annotations

import pytest
import torch
import torch._dynamo
from test_ms_deform_attn import make_inputs

from mdqe.layers import msda_backend
from mdqe.modeling.deform_attn import MDQEDeformAttn


@pytest.fixture(autouse=True)
def _compiled_extension(monkeypatch):
    """The C++ kernel of mdqe._C for every call in these tests (the default on CPU)."""
    monkeypatch.setenv(msda_backend.ENV_VAR, "auto")
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("requires_grad", [True, False])
def test_operator_passes_opcheck(dtype, requires_grad):
    value, shapes, starts, locations, weights = make_inputs(dtype=dtype, queries=5, heads=2, channels=4)
    for t in (value, locations, weights):
        t.requires_grad_(requires_grad)
    torch.library.opcheck(torch.ops.mdqe.ms_deform_attn.default, (value, shapes, starts, locations, weights))


def test_backward_operator_passes_opcheck():
    value, shapes, starts, locations, weights = make_inputs(
        dtype=torch.float32, queries=5, heads=2, channels=4
    )
    grad = torch.randn(2, 5, 8)
    torch.library.opcheck(
        torch.ops.mdqe.ms_deform_attn_backward.default, (value, shapes, starts, locations, weights, grad)
    )


LEVEL_SHAPES = [(6, 8), (3, 4), (2, 2), (1, 1)]


def make_module(mode: str) -> MDQEDeformAttn:
    torch.manual_seed(0)
    module = MDQEDeformAttn(d_model=32, n_levels=4, n_heads=2, n_points=2, n_frames=3, mode=mode)
    with torch.no_grad():
        for p in module.parameters():  # away from the zero initialisation, so that every path matters
            p.add_(torch.randn_like(p) * 0.05)
    return module


def module_inputs(module: MDQEDeformAttn, queries: int, levels=LEVEL_SHAPES, seed: int = 1):
    """(query (N, Q, C), boxes (N, Q, 4), source tokens, spatial_shapes): spatial mode attends the levels
    of N = 2 frames; temporal mode the 3 frames of one clip (N = 1)."""
    gen = torch.Generator().manual_seed(seed)
    tokens = sum(h * w for h, w in levels)
    batch = 2 if module.mode == "spatial" else 1
    query = torch.randn(batch, queries, 32, generator=gen)
    boxes = torch.rand(batch, queries, 4, generator=gen) * 0.5 + 0.25
    frames = batch if module.mode == "spatial" else 3
    src = torch.randn(frames, tokens, 32, generator=gen)
    return query, boxes, src, torch.tensor(levels)


def attend(module: MDQEDeformAttn, query, boxes, src, spatial_shapes, levels=LEVEL_SHAPES):
    """The module's forward as the model calls it, from the source tokens (value projection included);
    the level sizes that split the tokens in temporal mode are ints, as the model carries them."""
    if module.mode == "spatial":
        value = module.project_value(src)
    else:
        value = [v.unsqueeze(0) for v in module.project_value_levels(src, levels)]
    return module(query, boxes, value, spatial_shapes)


def forward_backward(fn, module: MDQEDeformAttn, inputs):
    module.zero_grad()
    query, boxes, src, shapes = (t.clone().requires_grad_(t.is_floating_point()) for t in inputs)
    out = fn(module, query, boxes, src, shapes)
    out.square().sum().backward()
    return out.detach(), query.grad, src.grad, [p.grad.clone() for p in module.parameters()]


@pytest.mark.parametrize("mode", ["spatial", "temporal"])
def test_compiled_module_has_no_graph_break_and_equals_eager(mode):
    module = make_module(mode)
    inputs = module_inputs(module, queries=11)
    explanation = torch._dynamo.explain(attend)(module, *inputs)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1
    eager = forward_backward(attend, module, inputs)
    compiled = forward_backward(torch.compile(attend, fullgraph=True), module, inputs)
    torch.testing.assert_close(compiled[0], eager[0], rtol=1e-5, atol=1e-6)
    for got, expected in zip([*compiled[1:3], *compiled[3]], [*eager[1:3], *eager[3]]):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_compiled_module_with_dynamic_sizes_compiles_once():
    module = make_module("spatial")
    frames = torch._dynamo.testing.CompileCounter()
    compiled = torch.compile(attend, backend=frames, fullgraph=True, dynamic=True)
    for queries, levels in ((11, LEVEL_SHAPES), (17, [(10, 12), (5, 6), (3, 3), (2, 2)]), (5, [(4, 6)] * 4)):
        inputs = module_inputs(module, queries, levels)
        torch.testing.assert_close(compiled(module, *inputs), attend(module, *inputs), rtol=1e-5, atol=1e-6)
    assert frames.frame_count == 1


def test_exported_module_holds_the_operator_as_one_node():
    module = make_module("spatial")
    query, boxes, src, shapes = module_inputs(module, queries=11)
    program = torch.export.export(module, (query, boxes, module.project_value(src), shapes))
    targets = [node.target for node in program.graph.nodes if node.op == "call_function"]
    assert targets.count(torch.ops.mdqe.ms_deform_attn.default) == 1
    assert not any("grid_sampler" in str(t) for t in targets)
    torch.testing.assert_close(
        program.module()(query, boxes, module.project_value(src), shapes),
        module(query, boxes, module.project_value(src), shapes),
    )
