"""Compile the Triton kernels of multi-scale deformable attention for a GPU on a machine without one.

Triton compiles a kernel for a named target (e.g. sm_80, sm_90) without a GPU: its front end, optimiser,
LLVM and the bundled ptxas run on the host. That catches type, shape and API errors that Triton's
interpreter does not (the interpreter runs the kernel as NumPy). The launches compiled here are the ones
the operators make (`forward_launch` / `backward_launch`), on example tensors that are never read, and the
arguments are bound the way Triton's launcher binds them, so this also checks that the run-time sizes are
not specialised on: two problems of different frame sizes, query counts, batches, levels and points must
give the same compiled kernel.

Needs Triton's real compiler, so TRITON_INTERPRET must not be set when this module is imported.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource, make_backend
from triton.runtime.jit import create_function_from_signature

from . import msda_triton

__all__ = [
    "BuildResult",
    "Problem",
    "build_kernels",
    "register_usage",
    "specialisation",
    "unspecialised_sizes_problems",
]

ARCHS = (80, 90)
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
HEAD_DIMS = (24, 32)


@dataclass(frozen=True)
class Problem:
    """The sizes of one call: batch N, levels (H_l, W_l), heads M, channels D, queries Lq, points P."""

    batch: int
    levels: tuple[tuple[int, int], ...]
    heads: int
    channels: int
    queries: int
    points: int


@dataclass
class BuildResult:
    arch: int
    kernel: str
    dtype: str
    channels: int
    seconds: float
    cubin_bytes: int
    shared_bytes: int
    registers: int
    spill_bytes: int


def _require_compiler() -> None:
    if msda_triton.INTERPRETED:
        raise RuntimeError(
            "the Triton kernels were loaded for Triton's interpreter (TRITON_INTERPRET is set): unset it "
            "to compile them for a GPU target"
        )


def launches(problem: Problem, dtype: torch.dtype) -> dict[str, msda_triton.Launch]:
    """The forward and backward launches of `problem` on example CPU tensors (never read)."""
    n, m, d, lq, p = problem.batch, problem.heads, problem.channels, problem.queries, problem.points
    num_levels = len(problem.levels)
    tokens = sum(h * w for h, w in problem.levels)
    value = torch.empty(n, tokens, m, d, dtype=dtype)
    shapes = torch.tensor(problem.levels, dtype=torch.int64)
    starts = torch.zeros(num_levels, dtype=torch.int64)
    locations = torch.empty(n, lq, m, num_levels, p, 2, dtype=dtype)
    weights = torch.empty(n, lq, m, num_levels, p, dtype=dtype)
    inputs = (value, shapes, starts, locations, weights)
    output = torch.empty(n, lq, m * d, dtype=dtype)
    grad_value = torch.empty(value.shape, dtype=torch.float32)
    return {
        "forward": msda_triton.forward_launch(*inputs, output),
        "backward": msda_triton.backward_launch(
            *inputs, output, grad_value, torch.empty_like(locations), torch.empty_like(weights)
        ),
    }


KERNELS = {"forward": msda_triton._forward_kernel, "backward": msda_triton._backward_kernel}


def _bind(kernel, launch: msda_triton.Launch, target: GPUTarget):
    backend = make_backend(target)
    binder = create_function_from_signature(kernel.signature, kernel.params, backend)
    bound_args, specialization, options = binder(*launch.args, **launch.kwargs)
    return backend, bound_args, specialization, options


def specialisation(kernel_name: str, launch: msda_triton.Launch, arch: int) -> list[tuple]:
    """What Triton's launcher keys the compiled kernel on for `launch` (types, alignments, constexprs)."""
    _require_compiler()
    return list(_bind(KERNELS[kernel_name], launch, GPUTarget("cuda", arch, 32))[2])


def compile_launch(kernel_name: str, launch: msda_triton.Launch, arch: int):
    """Compile the kernel of `launch` for sm_`arch` as Triton's launcher would; returns the compiled kernel
    (its `asm` holds ttir ... ptx and cubin)."""
    _require_compiler()
    kernel = KERNELS[kernel_name]
    target = GPUTarget("cuda", arch, 32)
    backend, bound_args, specialization, options = _bind(kernel, launch, target)
    options, signature, constexprs, attrs = kernel._pack_args(
        backend, dict(launch.kwargs), bound_args, specialization, options
    )
    return triton.compile(
        ASTSource(kernel, signature, constexprs, attrs), target=target, options=options.__dict__
    )


def register_usage(compiled, arch: int) -> tuple[int, int]:
    """(registers per thread, spill stores + loads in bytes) of a compiled kernel, from `ptxas -v` (the
    ptxas that Triton uses) on its PTX."""
    from triton.backends.nvidia.compiler import get_ptxas

    with tempfile.TemporaryDirectory() as tmp:
        ptx = Path(tmp) / "kernel.ptx"
        ptx.write_text(compiled.asm["ptx"])
        suffix = "a" if arch >= 90 else ""
        cmd = [
            get_ptxas(arch).path,
            "-v",
            f"--gpu-name=sm_{arch}{suffix}",
            str(ptx),
            "-o",
            str(ptx.with_suffix(".o")),
        ]
        report = subprocess.run(cmd, capture_output=True, text=True, check=True).stderr
    registers = re.search(r"Used (\d+) registers", report)
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", report)
    if registers is None or spills is None:
        raise RuntimeError(f"unexpected ptxas -v report: {report!r}")
    return int(registers.group(1)), int(spills.group(1)) + int(spills.group(2))


def build_kernels(
    archs: tuple[int, ...] = ARCHS,
    dtypes: tuple[str, ...] = tuple(DTYPES),
    head_dims: tuple[int, ...] = HEAD_DIMS,
) -> list[BuildResult]:
    """Compile the forward and backward kernels for every architecture, input dtype and head dim."""
    results = []
    for arch in archs:
        for dtype in dtypes:
            for channels in head_dims:
                problem = Problem(
                    batch=2, levels=((6, 8), (3, 4)), heads=8, channels=channels, queries=70, points=4
                )
                for name, launch in launches(problem, DTYPES[dtype]).items():
                    start = time.perf_counter()
                    compiled = compile_launch(name, launch, arch)
                    seconds = time.perf_counter() - start
                    registers, spill_bytes = register_usage(compiled, arch)
                    results.append(
                        BuildResult(
                            arch=arch,
                            kernel=name,
                            dtype=dtype,
                            channels=channels,
                            seconds=seconds,
                            cubin_bytes=len(compiled.asm["cubin"]),
                            shared_bytes=int(compiled.metadata.shared),
                            registers=registers,
                            spill_bytes=spill_bytes,
                        )
                    )
    return results


def unspecialised_sizes_problems(channels: int = 32) -> list[Problem]:
    """Problems that differ in every run-time size (a 360p and a 720p encoder call with other batches, a
    decoder call, MDQE's temporal mode with 3 frames as levels and one point, sizes divisible by 16), with
    the same head dim."""
    levels_360p = ((48, 80), (24, 40), (12, 20), (6, 10))
    levels_720p = ((90, 160), (45, 80), (23, 40), (12, 20))

    def problem(batch: int, levels: tuple[tuple[int, int], ...], queries: int, points: int = 4) -> Problem:
        return Problem(batch, levels, heads=8, channels=channels, queries=queries, points=points)

    return [
        problem(4, levels_360p, sum(h * w for h, w in levels_360p)),
        problem(1, levels_720p, sum(h * w for h, w in levels_720p)),
        problem(3, levels_360p, 196),
        problem(1, ((24, 40),) * 3, 196, points=1),
        problem(2, ((32, 32), (16, 16)), 1280),  # sizes divisible by 16, which Triton would specialise on
    ]
