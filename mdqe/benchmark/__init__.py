"""Benchmark helpers: synthetic inputs, timing and peak memory (`tools/benchmarks/`), and the GPU check
(`mdqe.benchmark.gpu_check`, run by `tools/gpu_check.py`)."""
