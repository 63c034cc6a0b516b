"""Which implementation of multi-scale deformable attention runs: `MDQE_MSDA_BACKEND`.

    MDQE_MSDA_BACKEND=auto     (default) CUDA tensors: the compiled CUDA kernel if `mdqe._C` has it, else
                               the Triton kernel, else the grid_sample reference; CPU tensors: the C++
                               kernel of `mdqe._C`, else the reference
    MDQE_MSDA_BACKEND=cuda     the compiled kernels of `mdqe._C` (its C++ kernel for CPU tensors)
    MDQE_MSDA_BACKEND=triton   the Triton kernel; on CPU tensors only with TRITON_INTERPRET=1 (Triton's
                               interpreter: slow, for checking the kernel on a machine without a GPU)
    MDQE_MSDA_BACKEND=pytorch  the grid_sample reference

The choice is logged once per device type with its reason; an explicit choice that cannot run raises
`MSDABackendError` naming what is missing. The variable is read when a call is traced or run, so a
compiled graph keeps the implementation it was traced with.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os

import torch

from .msda_op import EXTENSION, extension_has_cuda

__all__ = ["BACKENDS", "ENV_VAR", "MSDABackendError", "choose_backend", "select_backend"]

logger = logging.getLogger(__name__)

ENV_VAR = "MDQE_MSDA_BACKEND"
BACKENDS = ("auto", "cuda", "triton", "pytorch")
# what runs: mdqe._C's registered op, the Triton op, or the grid_sample reference
IMPLEMENTATIONS = ("extension", "triton", "pytorch")

_BUILD_HINT = "build it with `bash tools/install.sh` or `pip install --no-build-isolation -e .`"


class MSDABackendError(RuntimeError):
    """An explicitly requested deformable-attention backend cannot run here."""


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def _has_triton() -> bool:
    return importlib.util.find_spec("triton") is not None


def choose_backend(
    requested: str,
    device_type: str,
    *,
    extension: bool,
    extension_cuda: bool,
    triton: bool,
    interpreting: bool,
) -> tuple[str, str]:
    """The implementation for tensors on `device_type` (one of IMPLEMENTATIONS) and why, from what is
    available. Pure: raises MSDABackendError for an explicit choice that cannot run."""
    cuda = device_type == "cuda"
    if requested not in BACKENDS:
        raise MSDABackendError(f"{ENV_VAR}={requested!r} is not one of {', '.join(BACKENDS)}")
    if requested == "pytorch":
        return "pytorch", f"{ENV_VAR}=pytorch"
    if requested == "cuda":
        if not extension:
            raise MSDABackendError(f"{ENV_VAR}=cuda, but mdqe._C is not built: {_BUILD_HINT}")
        if cuda and not extension_cuda:
            raise MSDABackendError(
                f"{ENV_VAR}=cuda, but mdqe._C was built without CUDA: rebuild it on a machine with a CUDA "
                "toolkit (FORCE_CUDA=1 pip install --no-build-isolation -e .), or use "
                f"{ENV_VAR}=triton or auto"
            )
        return "extension", f"{ENV_VAR}=cuda" + ("" if cuda else " (mdqe._C's C++ kernel for CPU tensors)")
    if requested == "triton":
        if not triton:
            raise MSDABackendError(f"{ENV_VAR}=triton, but the triton package is not installed")
        if not cuda and not interpreting:
            raise MSDABackendError(
                f"{ENV_VAR}=triton runs on {device_type} tensors only under Triton's interpreter: set "
                "TRITON_INTERPRET=1 before the first call (or use CUDA tensors)"
            )
        return "triton", f"{ENV_VAR}=triton" + ("" if cuda else " under TRITON_INTERPRET=1")
    # auto
    if cuda:
        if extension_cuda:
            return "extension", "auto: mdqe._C has the CUDA kernel"
        if triton:
            why = "is not built" if not extension else "was built without CUDA"
            return "triton", f"auto: mdqe._C {why}, Triton is installed"
        return "pytorch", "auto: neither mdqe._C's CUDA kernel nor Triton is available"
    if extension:
        return "extension", "auto: mdqe._C's C++ kernel"
    return "pytorch", f"auto: mdqe._C is not built ({_BUILD_HINT})"


@functools.cache
def _select(requested: str, device_type: str, interpreting: bool) -> str:
    backend, reason = choose_backend(
        requested,
        device_type,
        extension=EXTENSION is not None,
        extension_cuda=extension_has_cuda(),
        triton=_has_triton(),
        interpreting=interpreting,
    )
    log = logger.warning if backend == "pytorch" and requested == "auto" else logger.info
    log("multi-scale deformable attention on %s tensors: %s (%s)", device_type, backend, reason)
    return backend


@torch.compiler.assume_constant_result
def select_backend(device_type: str) -> str:
    """The implementation for tensors on `device_type` under the current `MDQE_MSDA_BACKEND` (logged
    once per device type and setting). A constant for torch.compile: traced once, not re-read."""
    requested = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    return _select(requested, device_type, _interpreting())
