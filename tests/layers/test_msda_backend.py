"""`MDQE_MSDA_BACKEND`: which deformable-attention implementation runs, why, and the errors of a choice
that cannot run."""

from __future__ import annotations

import logging

import pytest
import torch
from test_ms_deform_attn import make_inputs

from mdqe.layers import ms_deform_attn, ms_deform_attn_pytorch, msda_backend
from mdqe.layers.msda_backend import MSDABackendError, choose_backend

EVERYTHING = dict(extension=True, extension_cuda=True, triton=True, interpreting=False)


@pytest.fixture(autouse=True)
def _fresh_choice():
    msda_backend._select.cache_clear()
    yield
    msda_backend._select.cache_clear()


@pytest.mark.parametrize(
    ("requested", "device", "available", "expected", "reason"),
    [
        ("auto", "cuda", {}, "extension", "has the CUDA kernel"),
        ("auto", "cuda", {"extension_cuda": False}, "triton", "built without CUDA, Triton is installed"),
        ("auto", "cuda", {"extension": False, "extension_cuda": False}, "triton", "is not built"),
        ("auto", "cuda", {"extension_cuda": False, "triton": False}, "pytorch", "neither"),
        ("auto", "cpu", {}, "extension", "C++ kernel"),
        ("auto", "cpu", {"extension": False, "extension_cuda": False}, "pytorch", "not built"),
        ("cuda", "cuda", {}, "extension", "MDQE_MSDA_BACKEND=cuda"),
        ("cuda", "cpu", {"extension_cuda": False}, "extension", "C++ kernel for CPU tensors"),
        ("triton", "cuda", {}, "triton", "MDQE_MSDA_BACKEND=triton"),
        ("triton", "cpu", {"interpreting": True}, "triton", "TRITON_INTERPRET=1"),
        ("pytorch", "cuda", {}, "pytorch", "MDQE_MSDA_BACKEND=pytorch"),
        (
            "pytorch",
            "cpu",
            {"extension": False, "extension_cuda": False, "triton": False},
            "pytorch",
            "pytorch",
        ),
    ],
)
def test_choice_and_reason(requested, device, available, expected, reason):
    backend, why = choose_backend(requested, device, **{**EVERYTHING, **available})
    assert backend == expected and reason in why


@pytest.mark.parametrize(
    ("requested", "device", "available", "message"),
    [
        ("cuda", "cuda", {"extension": False, "extension_cuda": False}, "mdqe._C is not built"),
        ("cuda", "cuda", {"extension_cuda": False}, "built without CUDA"),
        ("cuda", "cpu", {"extension": False, "extension_cuda": False}, "mdqe._C is not built"),
        ("triton", "cpu", {}, "set TRITON_INTERPRET=1"),
        ("triton", "cuda", {"triton": False}, "triton package is not installed"),
        ("cudnn", "cuda", {}, "is not one of auto, cuda, triton, pytorch"),
    ],
)
def test_unavailable_explicit_choice_names_what_is_missing(requested, device, available, message):
    with pytest.raises(MSDABackendError, match=message):
        choose_backend(requested, device, **{**EVERYTHING, **available})


def test_choice_is_logged_once_with_its_reason(monkeypatch, caplog):
    monkeypatch.setenv(msda_backend.ENV_VAR, "pytorch")
    value, shapes, starts, locations, weights = make_inputs()
    with caplog.at_level(logging.INFO, logger=msda_backend.__name__):
        out = ms_deform_attn(value, shapes, starts, locations, weights)
        ms_deform_attn(value, shapes, starts, locations, weights)
    messages = [r.getMessage() for r in caplog.records if r.name == msda_backend.__name__]
    assert messages == [
        "multi-scale deformable attention on cpu tensors: pytorch (MDQE_MSDA_BACKEND=pytorch)"
    ]
    torch.testing.assert_close(out, ms_deform_attn_pytorch(value, shapes, locations, weights), rtol=0, atol=0)


def test_variable_is_case_and_space_tolerant(monkeypatch):
    monkeypatch.setenv(msda_backend.ENV_VAR, " PyTorch ")
    assert msda_backend.select_backend("cpu") == "pytorch"


def test_triton_on_cpu_without_the_interpreter_is_a_clear_error(monkeypatch):
    monkeypatch.setenv(msda_backend.ENV_VAR, "triton")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    value, shapes, starts, locations, weights = make_inputs(dtype=torch.float32)
    with pytest.raises(MSDABackendError, match="MDQE_MSDA_BACKEND=triton runs on cpu tensors only under"):
        ms_deform_attn(value, shapes, starts, locations, weights)


def test_unknown_value_is_a_clear_error(monkeypatch):
    monkeypatch.setenv(msda_backend.ENV_VAR, "fast")
    value, shapes, starts, locations, weights = make_inputs()
    with pytest.raises(MSDABackendError, match="MDQE_MSDA_BACKEND='fast' is not one of"):
        ms_deform_attn(value, shapes, starts, locations, weights)
