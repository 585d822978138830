"""Timing, environment and result-writing helpers shared by the benchmarks."""
import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import time

import torch


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_of(fn, device):
    """Wall time of one synchronized call of ``fn()``; on CUDA timed with events."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median_seconds(fn, device, warmup=1, repeats=3):
    """Median wall time of ``fn()`` over ``repeats`` synchronized calls, after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    return statistics.median(seconds_of(fn, device) for _ in range(repeats))


def spread(seconds, batch):
    """Images/s: the median of the timed calls and their interquartile range (low, high)."""
    if len(seconds) == 1:
        return batch / seconds[0], (batch / seconds[0],) * 2
    first, _, third = statistics.quantiles(seconds, n=4, method="inclusive")
    return batch / statistics.median(seconds), (batch / third, batch / first)


def matmul_tflops(device, dtype, size=8192, warmup=2, repeats=10):
    """The device's measured dense matmul rate (TFLOP/s): the ceiling compute-bound kernels are held to."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    return 2 * size ** 3 / median_seconds(lambda: a @ b, device, warmup, repeats) / 1e12


def device_name(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def environment(device):
    """Device, driver and software versions, and the date, for a benchmark report."""
    info = {"device": device_name(device), "torch": torch.__version__, "cuda": torch.version.cuda,
            "python": platform.python_version(), "date": datetime.date.today().isoformat()}
    if device.type == "cuda":
        try:
            info["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                            capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            info["driver"] = "unknown (nvidia-smi failed)"
    try:
        import triton
        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    return info


def compare_to_baselines(row, baselines):
    """Adds to a measured row its speed (and, where both have it, its peak memory per image) relative to
    each measured baseline row of the same configuration: ``speedup_vs_<mode>``, ``memory_vs_<mode>``."""
    for mode, baseline in baselines.items():
        if baseline is None or "im_per_s" not in baseline:
            continue
        row[f"speedup_vs_{mode}"] = row["im_per_s"] / baseline["im_per_s"]
        if "peak_mib_per_image" in row and "peak_mib_per_image" in baseline:
            row[f"memory_vs_{mode}"] = row["peak_mib_per_image"] / baseline["peak_mib_per_image"]


def ratio_text(row, key):
    """'1.23x', or '' where the row has no such ratio."""
    return f"{row[key]:.2f}x" if key in row else ""


def write_results(out, stem, report, table):
    """OUT/stem.json (every figure) and OUT/stem.md (the table), and the table on stdout."""
    with open(os.path.join(out, f"{stem}.json"), "w") as f:
        json.dump(report, f, indent=2)
    with open(os.path.join(out, f"{stem}.md"), "w") as f:
        f.write(table + "\n")
    print(table)


def comma_list(allowed, what):
    """An argparse type: a comma-separated subset of ``allowed``, as a list."""
    def parse(text):
        values = [v.strip() for v in text.split(",") if v.strip()]
        unknown = [v for v in values if v not in allowed]
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown {what}(s) {', '.join(unknown)}; choose from {', '.join(allowed)}")
        return values
    return parse
