"""Wall time and peak memory of a block of GPU or CPU work."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from mdqe.utils.memory import PeakRSS

__all__ = ["PeakMemory", "median_seconds", "synchronize"]


def synchronize() -> None:
    """Wait for the queued CUDA work, if there is a GPU (so that wall time covers it)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 2, calls: int = 1) -> float:
    """Median wall time of one call of `fn`, over `repeats` samples of `calls` back-to-back calls each
    (more calls per sample amortise the synchronisation of short GPU work), after `warmup` calls."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        synchronize()
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        synchronize()
        samples.append((time.perf_counter() - start) / calls)
    return sorted(samples)[len(samples) // 2]


class PeakMemory:
    """Total peak memory of the enclosed block, weights and inputs included: the peak of torch's CUDA
    allocator on a GPU (`cuda=True`), else the process's peak resident set size (`PeakRSS`).

    After the block, `value` is e.g. "1.23 GiB", "1.23 GiB RSS", or "n/a" where RSS cannot be read.
    """

    def __init__(self, cuda: bool):
        self.cuda = cuda
        self.value = ""

    def __enter__(self) -> PeakMemory:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        else:
            self.rss = PeakRSS().__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            self.value = f"{torch.cuda.max_memory_allocated() / 2**30:.2f} GiB"
        else:
            self.rss.__exit__(*exc)
            peak = self.rss.peak_kib
            self.value = "n/a" if peak is None else f"{peak / 2**20:.2f} GiB RSS"
