#!/usr/bin/env python
"""Build check of the Triton kernels of multi-scale deformable attention, for machines without a GPU.

Compiles the forward and backward kernels for each GPU architecture, input dtype and head dim (down to
cubin, with the ptxas that Triton ships), and checks that problems of different frame sizes, query counts,
batches, levels and points bind to the same compiled kernel (nothing is recompiled for a new input size).
Prints one table (with ptxas's register and spill counts); exits 1 if a kernel fails to compile or is
specialised on a run-time size.

    python tools/check_triton_build.py                      # sm_80 and sm_90, fp32/fp16/bf16, D = 24 and 32
    python tools/check_triton_build.py --archs 90 --dtypes bfloat16 --head-dims 32
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--archs", type=int, nargs="+", default=[80, 90], help="compute capabilities x10")
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float16", "bfloat16"])
    parser.add_argument("--head-dims", type=int, nargs="+", default=[24, 32], help="channels per head")
    args = parser.parse_args()
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        print("check_triton_build: unset TRITON_INTERPRET: the kernels must be compiled, not interpreted")
        return 2

    # a fresh cache: every kernel is compiled, none is taken from an earlier run's cache
    cache = tempfile.TemporaryDirectory(prefix="mdqe-triton-build-")
    os.environ["TRITON_CACHE_DIR"] = cache.name
    import triton

    from mdqe.layers import msda_triton_build as build

    unknown = sorted(set(args.dtypes) - set(build.DTYPES))
    if unknown:
        print(f"check_triton_build: unknown dtype(s) {unknown}; choose from {sorted(build.DTYPES)}")
        return 2
    start = time.perf_counter()
    print(
        f"check_triton_build: triton {triton.__version__}, targets {', '.join(f'sm_{a}' for a in args.archs)}"
    )
    print(
        "| target | kernel | dtype | D | compile s | cubin bytes | shared bytes | registers | spilled bytes |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    try:
        results = build.build_kernels(tuple(args.archs), tuple(args.dtypes), tuple(args.head_dims))
    except Exception as e:  # a compile error is what this check exists to report
        print(f"check_triton_build: FAILED to compile: {type(e).__name__}: {e}")
        return 1
    for r in results:
        print(
            f"| sm_{r.arch} | {r.kernel} | {r.dtype} | {r.channels} | {r.seconds:.2f} | {r.cubin_bytes} "
            f"| {r.shared_bytes} | {r.registers} | {r.spill_bytes} |"
        )
    failures = []
    for channels in args.head_dims:
        problems = build.unspecialised_sizes_problems(channels)
        for kernel in ("forward", "backward"):
            keys = [
                build.specialisation(
                    kernel, build.launches(p, build.DTYPES[args.dtypes[0]])[kernel], args.archs[0]
                )
                for p in problems
            ]
            if any(k != keys[0] for k in keys[1:]):
                failures.append(f"{kernel} D={channels}: {keys}")
    if failures:
        print(
            "check_triton_build: FAILED: a run-time size changes the compiled kernel:\n  "
            + "\n  ".join(failures)
        )
        return 1
    sizes = len(build.unspecialised_sizes_problems())
    print(
        f"check_triton_build: OK in {time.perf_counter() - start:.1f} s ({len(results)} kernels; "
        f"{sizes} problem sizes bind to one kernel per dtype and head dim)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
