#!/usr/bin/env python
"""Benchmark the multi-scale deformable attention kernels against the grid_sample reference.

The default shape is the R50 OVIS 360p encoder: 4 frames of 360x640 padded to 384x640, levels at strides
8/16/32/64 (48x80, 24x40, 12x20, 6x10), 8 heads, 4 points, 256 channels (32 per head), one query per
encoder token (Lq = S = 5100).

Every variant (implementation x forward / forward+backward) runs in its own subprocess, so that its peak
memory is its own: the extra peak is the process's peak resident set size during the timed runs (VmHWM,
reset after a warm-up run) minus its resident size before them, i.e. what the op allocates on top of its
inputs (on CUDA: the peak of torch's allocator over the allocated memory before the runs). Prints a table,
then one JSON line with every figure.

    python tools/benchmarks/benchmark_ms_deform_attn.py [--device cpu|cuda] [--dtype float32|float64] \\
        [--threads T]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch

from mdqe.layers import msda_op
from mdqe.layers.ms_deform_attn import ms_deform_attn, ms_deform_attn_pytorch
from mdqe.layers.msda_backend import ENV_VAR
from mdqe.utils.memory import PeakRSS

LEVELS = ((48, 80), (24, 40), (12, 20), (6, 10))
IMPLS = {
    "cpp": "C++/CUDA kernel (torch.ops.mdqe.ms_deform_attn)",
    "triton": "Triton kernel (torch.ops.mdqe.ms_deform_attn_triton; CUDA only)",
    "pytorch": "grid_sample reference",
}
# MDQE_MSDA_BACKEND of each implementation that goes through `ms_deform_attn`
BACKEND = {"cpp": "cuda", "triton": "triton"}
MODES = ("forward", "forward+backward")


def make_inputs(args: argparse.Namespace) -> tuple[torch.Tensor, ...]:
    """Random inputs of the benchmark shape; locations spread a little beyond [0, 1] as in training.

    Returns:
        value (N, S, M, D), spatial_shapes (L, 2), level_start_index (L,),
        sampling_locations (N, S, M, L, P, 2), attention_weights (N, S, M, L, P), softmax-normalised.
    """
    gen = torch.Generator().manual_seed(0)
    dtype = getattr(torch, args.dtype)
    shapes = torch.tensor(LEVELS, dtype=torch.int64)
    sizes = shapes.prod(1)
    starts = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    s, m, num_levels = int(sizes.sum()), args.heads, len(LEVELS)
    d, p, n = args.channels // m, args.points, args.frames
    value = torch.randn(n, s, m, d, generator=gen, dtype=dtype)
    locations = torch.rand(n, s, m, num_levels, p, 2, generator=gen, dtype=dtype) * 1.2 - 0.1
    weights = torch.randn(n, s, m, num_levels * p, generator=gen, dtype=dtype).softmax(-1)
    weights = weights.view(n, s, m, num_levels, p)
    device = torch.device(args.device)
    return (
        value.to(device),
        shapes.to(device),
        starts.to(device),
        locations.to(device),
        weights.to(device),
    )


def run_op(impl: str, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    value, shapes, starts, locations, weights = inputs
    if impl in BACKEND:  # the process was started with MDQE_MSDA_BACKEND=BACKEND[impl]
        return ms_deform_attn(value, shapes, starts, locations, weights)
    return ms_deform_attn_pytorch(value, shapes, locations, weights)


def worker(args: argparse.Namespace) -> dict:
    """Time one variant in this process and measure its extra peak memory."""
    inputs = make_inputs(args)
    value, _, _, locations, weights = inputs
    backward = args.mode == "forward+backward"
    for t in (value, locations, weights):
        t.requires_grad_(backward)
    grad = torch.randn(value.shape[0], locations.shape[1], value.shape[2] * value.shape[3], dtype=value.dtype)
    grad = grad.to(value.device)
    cuda = value.is_cuda

    def step() -> None:
        out = run_op(args.impl, inputs)
        if backward:
            torch.autograd.grad(out, (value, locations, weights), grad)
        if cuda:
            torch.cuda.synchronize()

    step()  # warm-up: thread pools, lazy initialisation
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    times = []
    with PeakRSS() as rss:
        for _ in range(args.repeats):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
    extra = torch.cuda.max_memory_allocated() - base if cuda else rss.extra_bytes
    return {"time_s": statistics.median(times), "min_time_s": min(times), "peak_extra_bytes": extra}


def max_difference(args: argparse.Namespace) -> float:
    """Largest |kernel - reference| of the forward at the benchmark shape."""
    inputs = make_inputs(args)
    with torch.no_grad():
        return (run_op("cpp", inputs) - run_op("pytorch", inputs)).abs().max().item()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--frames", type=int, default=4, help="batch N (frames of the clip)")
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--points", type=int, default=4)
    parser.add_argument("--channels", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    parser.add_argument("--impl", choices=list(IMPLS), help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.impl is not None:  # subprocess of one variant
        print(json.dumps(worker(args)))
        return
    if msda_op.EXTENSION is None:
        sys.exit(
            "mdqe._C is not built: run `bash tools/install.sh` or `pip install --no-build-isolation -e .`"
        )

    common = [
        f"--{k}={getattr(args, k)}" for k in ("device", "dtype", "frames", "heads", "points", "channels")
    ]
    common += [f"--repeats={args.repeats}", f"--threads={torch.get_num_threads()}"]
    # A fixed mmap threshold makes glibc return every freed large block to the system, so that the
    # resident size measures live tensors rather than what the allocator kept from the warm-up run.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(1 << 20)}
    impls = [impl for impl in IMPLS if impl != "triton" or args.device == "cuda"]
    results: dict[str, dict[str, dict]] = {impl: {} for impl in impls}
    for mode in MODES:
        for impl in impls:
            cmd = [sys.executable, __file__, *common, f"--impl={impl}", f"--mode={mode}"]
            env[ENV_VAR] = BACKEND.get(impl, "pytorch")
            proc = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
            line = proc.stdout.strip().splitlines()[-1]
            results[impl][mode] = json.loads(line)

    s = sum(h * w for h, w in LEVELS)
    shape = {
        "N": args.frames,
        "S": s,
        "Lq": s,
        "M": args.heads,
        "D": args.channels // args.heads,
        "L": len(LEVELS),
        "P": args.points,
        "levels": [list(level) for level in LEVELS],
    }
    threads = torch.get_num_threads()
    print(f"shape {shape}, {args.dtype} on {args.device}, {threads} threads, torch {torch.__version__}")
    print(f"{'variant':<60} {'time (ms)':>10} {'peak extra (MB)':>16} {'speed-up':>9} {'memory':>7}")
    for mode in MODES:
        ref = results["pytorch"][mode]
        for impl in impls:
            name, r = IMPLS[impl], results[impl][mode]
            speedup = ref["time_s"] / r["time_s"]
            memory = r["peak_extra_bytes"] / ref["peak_extra_bytes"]
            print(
                f"{mode + ', ' + name:<60} {r['time_s'] * 1e3:>10.1f} {r['peak_extra_bytes'] / 2**20:>16.1f} "
                f"{speedup:>8.1f}x {memory:>7.2f}"
            )
    summary = {
        "benchmark": "ms_deform_attn",
        "device": args.device,
        "dtype": args.dtype,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "shape": shape,
        "max_abs_diff_forward": max_difference(args),
        "results": results,
        "speedup_forward_backward": results["pytorch"]["forward+backward"]["time_s"]
        / results["cpp"]["forward+backward"]["time_s"],
        "memory_ratio_forward_backward": results["cpp"]["forward+backward"]["peak_extra_bytes"]
        / results["pytorch"]["forward+backward"]["peak_extra_bytes"],
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
