"""Benchmarks: the paper's Table 1 and, as the kernels land, per-op and whole-model speed."""
