"""Multi-scale deformable attention: the compiled kernels against the grid_sample reference; the module."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from mdqe.layers import ms_deform_attn, ms_deform_attn_pytorch, msda_backend, msda_op

needs_kernel = pytest.mark.skipif(msda_op.EXTENSION is None, reason="mdqe._C is not built")

LEVELS = ((6, 9), (3, 5), (2, 2), (1, 3))


def make_inputs(
    levels=LEVELS,
    batch: int = 2,
    queries: int = 7,
    heads: int = 3,
    channels: int = 5,
    points: int = 2,
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
    device: str = "cpu",
) -> tuple[torch.Tensor, ...]:
    """Random op inputs; locations cover [-0.25, 1.25] so that some fall partly or wholly off the maps.

    Returns:
        value (N, S, M, D), spatial_shapes (L, 2), level_start_index (L,),
        sampling_locations (N, Lq, M, L, P, 2), attention_weights (N, Lq, M, L, P).
    """
    gen = torch.Generator().manual_seed(seed)
    shapes = torch.tensor(levels, dtype=torch.int64)
    sizes = shapes.prod(1)
    starts = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    value = torch.randn(batch, int(sizes.sum()), heads, channels, generator=gen, dtype=dtype)
    locations = (
        torch.rand(batch, queries, heads, len(levels), points, 2, generator=gen, dtype=dtype) * 1.5 - 0.25
    )
    weights = torch.rand(batch, queries, heads, len(levels), points, generator=gen, dtype=dtype)
    return tuple(t.to(device) for t in (value, shapes, starts, locations, weights))


def naive_ms_deform_attn(value, spatial_shapes, sampling_locations, attention_weights):
    """Bilinear sampling written out point by point (zeros outside, pixel coordinate = x * W - 0.5)."""
    n, _, m, d = value.shape
    _, lq, _, num_levels, num_points, _ = sampling_locations.shape
    out = value.new_zeros(n, lq, m, d)
    start = 0
    for lvl in range(num_levels):
        h, w = (int(v) for v in spatial_shapes[lvl])
        grid = value[:, start : start + h * w].reshape(n, h, w, m, d)
        start += h * w
        for b in range(n):
            for q in range(lq):
                for head in range(m):
                    for p in range(num_points):
                        x, y = sampling_locations[b, q, head, lvl, p].tolist()
                        px, py = x * w - 0.5, y * h - 0.5
                        x0, y0 = math.floor(px), math.floor(py)
                        a = attention_weights[b, q, head, lvl, p]
                        for yy, wy in ((y0, 1 - (py - y0)), (y0 + 1, py - y0)):
                            for xx, wx in ((x0, 1 - (px - x0)), (x0 + 1, px - x0)):
                                if 0 <= yy < h and 0 <= xx < w:
                                    out[b, q, head] += a * wy * wx * grid[b, yy, xx, head]
    return out.flatten(2)


def test_reference_matches_naive_bilinear_sampling():
    value, shapes, _, locations, weights = make_inputs(batch=2, queries=3, heads=2, channels=3)
    expected = naive_ms_deform_attn(value, shapes, locations, weights)
    torch.testing.assert_close(ms_deform_attn_pytorch(value, shapes, locations, weights), expected)


@needs_kernel
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-10), (torch.float32, 1e-5)])
@pytest.mark.parametrize("channels", [5, 24])
def test_kernel_forward_matches_reference(dtype, tol, channels):
    value, shapes, starts, locations, weights = make_inputs(dtype=dtype, channels=channels)
    assert (locations < 0).any() and (locations > 1).any()
    out = ms_deform_attn(value, shapes, starts, locations, weights)
    expected = ms_deform_attn_pytorch(value, shapes, locations, weights)
    assert out.shape == (2, 7, 3 * channels) and out.dtype == dtype
    torch.testing.assert_close(out, expected, rtol=0, atol=tol)


@needs_kernel
def test_kernel_forward_accepts_non_contiguous_inputs():
    value, shapes, starts, locations, weights = make_inputs()
    value_t = value.transpose(1, 2).contiguous().transpose(1, 2)  # (N, S, M, D) view, M-major memory
    locations_t = torch.stack([locations, -locations], dim=-1)[..., 0]
    weights_t = weights.transpose(0, 1).contiguous().transpose(0, 1)
    shapes_t = torch.stack([shapes[:, 0], shapes[:, 1]], dim=1).t().contiguous().t()
    assert not any(t.is_contiguous() for t in (value_t, locations_t, weights_t, shapes_t))
    out = ms_deform_attn(value_t, shapes_t, starts, locations_t, weights_t)
    expected = ms_deform_attn_pytorch(value, shapes, locations, weights)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-10)


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_kernel_backward_matches_reference(dtype):
    inputs = make_inputs(dtype=dtype)
    value, shapes, starts, locations, weights = (t.requires_grad_(t.is_floating_point()) for t in inputs)
    grad = torch.randn(2, 7, 15, dtype=dtype, generator=torch.Generator().manual_seed(1))
    differentiable = (value, locations, weights)
    got = torch.autograd.grad(ms_deform_attn(value, shapes, starts, locations, weights), differentiable, grad)
    expected = torch.autograd.grad(
        ms_deform_attn_pytorch(value, shapes, locations, weights), differentiable, grad
    )
    tol = 1e-10 if dtype == torch.float64 else 1e-4
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=tol, atol=tol)


@needs_kernel
def test_kernel_gradcheck_float64():
    value, shapes, starts, locations, weights = make_inputs(
        levels=((3, 4), (2, 1)), queries=3, heads=2, channels=2
    )
    differentiable = tuple(t.requires_grad_() for t in (value, locations, weights))
    assert torch.autograd.gradcheck(
        lambda v, loc, w: ms_deform_attn(v, shapes, starts, loc, w), differentiable, eps=1e-6, atol=1e-6
    )


@needs_kernel
def test_kernel_backward_is_thread_count_independent():
    # one (batch, head) pair and enough work to parallelise: the backward splits the queries between
    # per-thread copies of the value gradient, which must sum to the serial result
    inputs = make_inputs(levels=((16, 16), (8, 8)), batch=1, queries=2048, heads=1, channels=8, points=4)
    value, shapes, starts, locations, weights = (t.requires_grad_(t.is_floating_point()) for t in inputs)
    grad = torch.randn(1, 2048, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    threads = torch.get_num_threads()
    results = []
    try:
        for num_threads in (1, 2):
            torch.set_num_threads(num_threads)
            out = ms_deform_attn(value, shapes, starts, locations, weights)
            results.append(torch.autograd.grad(out, (value, locations, weights), grad))
    finally:
        torch.set_num_threads(threads)
    expected = torch.autograd.grad(
        ms_deform_attn_pytorch(value, shapes, locations, weights), (value, locations, weights), grad
    )
    for serial, parallel, e in zip(*results, expected):
        torch.testing.assert_close(parallel, serial, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(serial, e, rtol=1e-10, atol=1e-10)


@needs_kernel
def test_kernel_samples_exact_pixel_centres():
    # a location at the centre of pixel (row 1, col 2) of a 3x4 map returns that pixel's value
    value = torch.arange(12 * 2, dtype=torch.float64).view(1, 12, 1, 2)
    shapes = torch.tensor([[3, 4]])
    starts = torch.tensor([0])
    locations = torch.tensor([(2 + 0.5) / 4, (1 + 0.5) / 3], dtype=torch.float64).view(1, 1, 1, 1, 1, 2)
    weights = torch.ones(1, 1, 1, 1, 1, dtype=torch.float64)
    out = ms_deform_attn(value, shapes, starts, locations, weights)
    torch.testing.assert_close(out.view(2), value[0, 1 * 4 + 2, 0])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: {**a, "value": a["value"][0]}, "value must be"),
        (lambda a: {**a, "spatial_shapes": a["spatial_shapes"][:, :1]}, "spatial_shapes must be"),
        (lambda a: {**a, "level_start_index": a["level_start_index"][:2]}, "level_start_index must be"),
        (lambda a: {**a, "spatial_shapes": a["spatial_shapes"].int()}, "must be int64"),
        (
            lambda a: {**a, "sampling_locations": a["sampling_locations"][..., :1]},
            "sampling_locations must be",
        ),
        (
            lambda a: {**a, "sampling_locations": a["sampling_locations"][:, :, :2]},
            "sampling_locations must be",
        ),
        (lambda a: {**a, "attention_weights": a["attention_weights"][..., :1]}, "attention_weights must be"),
        (lambda a: {**a, "attention_weights": a["attention_weights"].float()}, "must have value's dtype"),
        (lambda a: {**a, "value": a["value"][:, :-1]}, "sum to"),
        (lambda a: {**a, "value": a["value"].long()}, "floating point"),
    ],
)
def test_bad_inputs_raise_clear_errors(change, message):
    value, shapes, starts, locations, weights = make_inputs()
    args = {
        "value": value,
        "spatial_shapes": shapes,
        "level_start_index": starts,
        "sampling_locations": locations,
        "attention_weights": weights,
    }
    with pytest.raises(ValueError, match=message):
        ms_deform_attn(**change(args))


@needs_kernel
def test_registered_op_checks_its_inputs():
    value, shapes, starts, locations, weights = make_inputs()
    forward, backward = torch.ops.mdqe.ms_deform_attn, torch.ops.mdqe.ms_deform_attn_backward
    with pytest.raises(RuntimeError, match="attention_weights must be"):
        forward(value, shapes, starts, locations, weights[..., :1])
    with pytest.raises(RuntimeError, match="does not fit in value"):
        forward(value, shapes, starts + 1, locations, weights)
    with pytest.raises(RuntimeError, match="float32 and float64"):
        forward(value.half(), shapes, starts, locations.half(), weights.half())
    with pytest.raises(RuntimeError, match="grad_output must be"):
        backward(value, shapes, starts, locations, weights, value.new_zeros(2, 7, 14))


def test_falls_back_to_reference_with_one_warning(monkeypatch, caplog):
    monkeypatch.setattr(msda_backend, "EXTENSION", None)
    monkeypatch.delenv(msda_backend.ENV_VAR, raising=False)
    msda_backend._select.cache_clear()
    value, shapes, starts, locations, weights = make_inputs()
    try:
        with caplog.at_level(logging.WARNING, logger=msda_backend.__name__):
            out = ms_deform_attn(value, shapes, starts, locations, weights)
            ms_deform_attn(value, shapes, starts, locations, weights)
    finally:
        msda_backend._select.cache_clear()
    torch.testing.assert_close(out, ms_deform_attn_pytorch(value, shapes, locations, weights))
    warnings = [r for r in caplog.records if "not built" in r.getMessage()]
    assert len(warnings) == 1 and "pip install --no-build-isolation -e ." in warnings[0].getMessage()


@pytest.mark.gpu
@needs_kernel
@pytest.mark.parametrize("channels", [5, 32])
def test_cuda_matches_cpu_kernel(channels):
    if not msda_op.extension_has_cuda():
        pytest.skip("mdqe._C was built without CUDA")
    inputs = make_inputs(dtype=torch.float32, channels=channels, queries=50)
    grad = torch.randn(2, 50, 3 * channels, generator=torch.Generator().manual_seed(1))
    results = []
    for device in ("cpu", "cuda"):
        value, shapes, starts, locations, weights = (t.to(device) for t in inputs)
        differentiable = tuple(t.requires_grad_() for t in (value, locations, weights))
        out = ms_deform_attn(value, shapes, starts, locations, weights)
        results.append((out, *torch.autograd.grad(out, differentiable, grad.to(device))))
    for cpu, cuda in zip(*results):
        torch.testing.assert_close(cuda.cpu(), cpu, rtol=1e-5, atol=1e-5)


@pytest.mark.gpu
@needs_kernel
def test_cuda_gradcheck_float64():
    if not msda_op.extension_has_cuda():
        pytest.skip("mdqe._C was built without CUDA")
    value, shapes, starts, locations, weights = make_inputs(
        levels=((3, 4), (2, 1)), queries=3, heads=2, channels=2, device="cuda"
    )
    differentiable = tuple(t.requires_grad_() for t in (value, locations, weights))
    assert torch.autograd.gradcheck(
        lambda v, loc, w: ms_deform_attn(v, shapes, starts, loc, w), differentiable, eps=1e-6, atol=1e-6
    )


@pytest.mark.gpu
@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_reduced_precision_matches_float32(dtype):
    if not msda_op.extension_has_cuda():
        pytest.skip("mdqe._C was built without CUDA")
    value, shapes, starts, locations, weights = make_inputs(dtype=torch.float32, channels=32, device="cuda")
    differentiable = tuple(t.to(dtype).requires_grad_() for t in (value, locations, weights))
    out = ms_deform_attn(differentiable[0], shapes, starts, differentiable[1], differentiable[2])
    grads = torch.autograd.grad(out, differentiable, torch.ones_like(out))
    assert out.dtype == dtype and all(g.dtype == dtype for g in grads)
    expected = ms_deform_attn(value, shapes, starts, locations, weights)
    tol = 2e-2 if dtype == torch.float16 else 1e-1
    torch.testing.assert_close(out.float(), expected, rtol=tol, atol=tol)
