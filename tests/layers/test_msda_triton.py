"""The Triton kernels of multi-scale deformable attention against the C++ kernel.

On a machine without a GPU they run on CPU tensors in Triton's interpreter (tests/conftest.py sets
TRITON_INTERPRET=1), which is slow: the shapes are tiny but cover what the model meets (a 1x1 level,
samples off the map and on its borders, frames as levels, head dims 24 and 32, odd query counts). With a
GPU the same tests run the compiled kernels on CUDA tensors. Tolerances: float32 inputs 1e-5 of the
largest magnitude; float16 / bfloat16 inputs (float32 arithmetic inside, one rounding of each result to
the input dtype) 2e-3 / 1.6e-2 of it, about two units in the last place.
"""

from __future__ import annotations

import pytest
import torch
import torch._dynamo
from test_ms_deform_attn import LEVELS, make_inputs
from test_msda_op import attend, forward_backward, make_module, module_inputs

from mdqe.layers import ms_deform_attn, msda_backend

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TOLERANCE = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


@pytest.fixture(autouse=True)
def _triton_backend(monkeypatch):
    """Every call of `ms_deform_attn` in these tests runs the Triton operator."""
    monkeypatch.setenv(msda_backend.ENV_VAR, "triton")
    yield
    msda_backend._select.cache_clear()


def border_locations(levels, batch: int, queries: int, heads: int, points: int) -> torch.Tensor:
    """(N, Lq, M, L, P, 2) locations drawn from the special values of each level: its edges 0 and 1,
    the first and last pixel centres, the last positions where a corner is still on the map, the first
    ones where none is (pixel coordinate exactly -1 or W), and a few inside."""
    gen = torch.Generator().manual_seed(3)
    per_level = []
    for h, w in levels:
        coords = []
        for size in (w, h):
            special = torch.tensor(
                [0.0, 1.0, 0.5 / size, 1 - 0.5 / size, -0.5 / size, 1 + 0.5 / size, -0.49 / size, 0.37]
            )
            pick = torch.randint(len(special), (batch, queries, heads, points), generator=gen)
            coords.append(special[pick])
        per_level.append(torch.stack(coords, dim=-1))
    return torch.stack(per_level, dim=3)


def temporal_inputs(frames: int, size: tuple[int, int], **kwargs) -> tuple[torch.Tensor, ...]:
    """MDQE's temporal mode: the T frames of one feature level are the op's levels (same shape each)."""
    value, shapes, starts, locations, weights = make_inputs(levels=(size,) * frames, **kwargs)
    assert (shapes == shapes[0]).all() and starts.tolist() == [i * size[0] * size[1] for i in range(frames)]
    return value, shapes, starts, locations, weights


CASES = {
    "1x1 level, off-map samples, D=24": dict(
        levels=((5, 7), (1, 1)), batch=2, queries=13, heads=2, channels=24, points=3
    ),
    "MDQE's 4 levels, D=32, 7 queries": dict(levels=LEVELS, batch=1, queries=7, heads=2, channels=32),
    "one query, D=5": dict(levels=((2, 3),), batch=1, queries=1, heads=3, channels=5, points=1),
}


def _inputs(case: str, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, ...]:
    if case == "borders":
        levels = ((4, 6), (3, 3), (1, 1))
        value, shapes, starts, _, weights = make_inputs(
            levels=levels, batch=2, queries=9, heads=2, channels=32, dtype=dtype
        )
        return value, shapes, starts, border_locations(levels, 2, 9, 2, 2).to(dtype), weights
    if case == "temporal":
        return temporal_inputs(3, (4, 5), batch=2, queries=9, heads=2, channels=32, points=4, dtype=dtype)
    return make_inputs(dtype=dtype, **CASES[case])


def _forward_and_grads(inputs, seed: int = 1):
    value, shapes, starts, locations, weights = (
        t.detach().clone().requires_grad_(t.is_floating_point()) for t in inputs
    )
    out = ms_deform_attn(value, shapes, starts, locations, weights)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed)).to(out)
    return (out.detach(), *torch.autograd.grad(out, (value, locations, weights), grad))


def _cpp(inputs, monkeypatch, seed: int = 1):
    """The same through the C++ kernel, on float32 CPU copies of the inputs."""
    monkeypatch.setenv(msda_backend.ENV_VAR, "cuda")
    try:
        return _forward_and_grads(
            tuple(t.cpu().float() if t.is_floating_point() else t.cpu() for t in inputs), seed
        )
    finally:
        monkeypatch.setenv(msda_backend.ENV_VAR, "triton")


def _assert_close(got: torch.Tensor, expected: torch.Tensor, tol: float, what: str) -> None:
    scale = float(expected.abs().max()) or 1.0
    torch.testing.assert_close(
        got.cpu().float(), expected, rtol=tol, atol=tol * scale, msg=lambda m: f"{what}: {m}"
    )


@pytest.mark.parametrize("case", [*CASES, "borders", "temporal"])
def test_triton_forward_and_gradients_equal_the_cpp_kernel(case, monkeypatch):
    inputs = tuple(t.to(DEVICE) for t in _inputs(case))
    if case == "borders":
        locations = inputs[3]
        assert ((locations == 0) | (locations == 1)).any() and ((locations < 0) & (locations > -0.2)).any()
    got = _forward_and_grads(inputs)
    expected = _cpp(inputs, monkeypatch)
    for name, g, e in zip(("output", "grad value", "grad locations", "grad weights"), got, expected):
        assert g.dtype == torch.float32 and g.device.type == DEVICE
        _assert_close(g, e, TOLERANCE[torch.float32], f"{case}, {name}")
    assert expected[2].abs().sum() > 0 and expected[1].abs().sum() > 0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_triton_reduced_precision_inputs_accumulate_in_float32(dtype, monkeypatch):
    inputs = tuple(
        t.to(DEVICE, dtype) if t.is_floating_point() else t.to(DEVICE)
        for t in _inputs("temporal", torch.float32)
    )
    got = _forward_and_grads(inputs)
    expected = _cpp(inputs, monkeypatch)  # the same rounded inputs, in float32
    for name, g, e in zip(("output", "grad value", "grad locations", "grad weights"), got, expected):
        assert g.dtype == dtype
        _assert_close(g, e, TOLERANCE[dtype], f"{dtype}, {name}")


def test_triton_value_gradient_sums_duplicate_targets(monkeypatch):
    # every query samples the same pixel centre: all their contributions land on one value row
    value, shapes, starts, _, weights = make_inputs(
        levels=((3, 4),), batch=1, queries=70, heads=1, channels=24, dtype=torch.float32
    )
    locations = torch.tensor([2.5 / 4, 1.5 / 3]).expand(1, 70, 1, 1, 2, 2).contiguous()
    inputs = tuple(t.to(DEVICE) for t in (value, shapes, starts, locations, weights))
    got = _forward_and_grads(inputs)
    expected = _cpp(inputs, monkeypatch)
    _assert_close(got[1], expected[1], TOLERANCE[torch.float32], "grad value")
    row = 1 * 4 + 2
    assert got[1][0, row].abs().sum() > 0 and got[1][0, :row].abs().sum() == 0


def test_triton_operator_passes_opcheck():
    value, shapes, starts, locations, weights = (
        t.to(DEVICE) for t in _inputs("1x1 level, off-map samples, D=24")
    )
    args = (value.requires_grad_(), shapes, starts, locations.requires_grad_(), weights.requires_grad_())
    torch.library.opcheck(torch.ops.mdqe.ms_deform_attn_triton.default, args)


def test_compiled_module_with_the_triton_operator_equals_eager():
    torch._dynamo.reset()
    module = make_module("spatial").to(DEVICE)
    inputs = tuple(t.to(DEVICE) for t in module_inputs(module, queries=11))
    eager = forward_backward(attend, module, inputs)
    compiled = forward_backward(torch.compile(attend, fullgraph=True), module, inputs)
    torch._dynamo.reset()
    torch.testing.assert_close(compiled[0], eager[0], rtol=1e-5, atol=1e-6)
    for got, expected in zip(compiled[3], eager[3]):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
