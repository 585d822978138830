"""Whole-generator inference speed and memory: the reference (eager) and its torch.compile
(max-autotune), each as the official code runs (PixelFolder's positional branch once per image) and
with that branch hoisted out of the batch as the fused modes run it (``*_hoisted``), the fused
backends, the `auto` backend with channels-last weights and activations, and `auto` under CUDA graphs,
in one run. Each row's speed-up is given against both eager baselines, so that the data-flow gain and
the kernels' gain read apart; its TFLOP/s counts the FLOPs that mode performs (the hoisted branch once
per call, not once per image).

    python -m benchmarks.model_speed --out DIR [--device cuda] [--models PixelFolder,StyleGAN2,...]
        [--batches 1,32,128] [--dtypes float32,bfloat16]
        [--modes reference,reference_hoisted,compile,compile_hoisted,cuda,triton,auto,channels_last,cudagraphs]

Writes model_speed.json and model_speed.md (and model_speed.png where matplotlib is installed) to
DIR. A configuration that cannot run here (a backend not built, out of memory) is reported with its
error instead of a figure.
"""
from training import extras

if __name__ == "__main__":
    extras.require("bench")  # before the imports that need it

import argparse
import json
import os

import torch

import models
import pixelfolder_ops
from benchmarks.complexity import gmacs_per_image_and_call
from benchmarks.generators import (BASELINE_MODES, EAGER_BASELINES, GENERATOR_NAMES, build_generator,
                                   official_data_flow, runs_mode)
from benchmarks.timing import (comma_list, compare_to_baselines, environment, matmul_tflops, median_seconds,
                               ratio_text, write_results)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
MODES = tuple(BASELINE_MODES) + ("cuda", "triton", "auto", "channels_last", "cudagraphs")


def dtype_name(dtype):
    return str(dtype).replace("torch.", "")


def forward_for(mode, name, batch, device, dtype):
    """A no-argument callable running one batch through the generator in ``mode``."""
    generator = build_generator(name, official_data_flow=official_data_flow(mode))
    generator = generator.to(device=device, dtype=dtype).eval().requires_grad_(False)
    z = torch.randn(batch, generator.style_dim, device=device, dtype=dtype)
    backend = "reference" if mode in BASELINE_MODES else {"channels_last": "auto", "cudagraphs": "auto"}.get(mode, mode)
    pixelfolder_ops.set_backend(backend)  # raises BackendUnavailableError for a backend not built here
    if mode == "channels_last":
        models.to_channels_last(generator)
    if mode.startswith("compile"):
        compiled = torch.compile(generator, mode="max-autotune")
        return lambda: compiled(z)
    if mode != "cudagraphs":
        return lambda: generator(z)
    if device.type != "cuda":
        raise RuntimeError("CUDA graphs need a CUDA device")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm up outside the graph: allocator and autotuning settle
        for _ in range(3):
            generator(z)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        generator(z)
    return graph.replay


def measure(name, mode, batch, device, dtype, warmup, repeats):
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    try:
        with torch.inference_mode():
            forward = forward_for(mode, name, batch, device, dtype)
            seconds = median_seconds(forward, device, warmup, repeats)
    except (RuntimeError, pixelfolder_ops.BackendUnavailableError) as error:  # includes out-of-memory
        return {"error": f"{type(error).__name__}: {str(error).splitlines()[0]}"}
    finally:
        pixelfolder_ops.set_backend(None)
    row = {"im_per_s": batch / seconds}
    if device.type == "cuda":
        row["peak_mib_per_image"] = torch.cuda.max_memory_allocated(device) / 2 ** 20 / batch
    return row


def markdown(report):
    lines = [f"{report['device']}; torch {report['torch']}; Triton {report['triton']}; {report['date']}",
             "Measured dense matmul (TFLOP/s): " + ", ".join(f"{d} {r:.3g}" for d, r in report["matmul_tflops"].items()),
             "",
             "TFLOP/s count the FLOPs each mode performs: the hoisted positional branch once per call.", "",
             "| model | dtype | batch | mode | im/s | vs reference | vs reference_hoisted | GFLOP/image | TFLOP/s | "
             "of matmul | peak MiB/image |",
             "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in report["results"]:
        if "error" in row:
            lines.append(f"| {row['model']} | {row['dtype']} | {row['batch']} | {row['mode']} | "
                         f"{row['error']} | | | | | | |")
            continue
        memory = f"{row['peak_mib_per_image']:.1f}" if "peak_mib_per_image" in row else ""
        lines.append(f"| {row['model']} | {row['dtype']} | {row['batch']} | {row['mode']} | {row['im_per_s']:.1f} | "
                     f"{ratio_text(row, 'speedup_vs_reference')} | {ratio_text(row, 'speedup_vs_reference_hoisted')} | "
                     f"{row['gflop_per_image']:.2f} | {row['tflops']:.3g} | {row['fraction_of_matmul']:.1%} | {memory} |")
    return "\n".join(lines)


def plot(report, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = [r for r in report["results"] if "error" not in r]
    configs = sorted({(r["model"], r["dtype"], r["batch"]) for r in rows})
    modes = [m for m in MODES if any(r["mode"] == m for r in rows)]
    figure, axes = plt.subplots(2, 1, figsize=(max(8, len(configs) * 0.9), 9))
    width = 0.8 / max(1, len(modes))
    for metric, axis, label in (("im_per_s", axes[0], "images/s"), ("peak_mib_per_image", axes[1], "peak MiB/image")):
        for k, mode in enumerate(modes):
            values = [next((r.get(metric, 0) for r in rows if (r["model"], r["dtype"], r["batch"]) == c
                            and r["mode"] == mode), 0) for c in configs]
            axis.bar([i + k * width for i in range(len(configs))], values, width, label=mode)
        axis.set_ylabel(label)
        axis.set_xticks([i + 0.4 - width / 2 for i in range(len(configs))])
        axis.set_xticklabels([f"{m}\n{d} b{b}" for m, d, b in configs], fontsize=7)
        axis.set_yscale("log")
    axes[0].legend(fontsize=8)
    axes[0].set_title(f"Generators at 256x256 on {report['device']}")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return True


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for model_speed.json, .md and .png")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", default="PixelFolder,StyleGAN2,CIPS,INR-GAN", type=comma_list(GENERATOR_NAMES, "model"))
    parser.add_argument("--batches", default="1,32,128")
    parser.add_argument("--dtypes", default="float32,bfloat16", type=comma_list(DTYPES, "dtype"))
    parser.add_argument("--modes", default=",".join(MODES), type=comma_list(MODES, "mode"))
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)
    names, modes = args.models, args.modes
    device = torch.device(args.device)
    dtypes = [DTYPES[d] for d in args.dtypes]
    batches = [int(b) for b in args.batches.split(",")]
    os.makedirs(args.out, exist_ok=True)

    report = {**environment(device), "matmul_tflops": {}, "results": []}
    for dtype in dtypes:
        report["matmul_tflops"][dtype_name(dtype)] = matmul_tflops(device, dtype, 8192 if device.type == "cuda" else 1024)
    # (per image, per call) GMACs of each model as each data flow runs it
    gmacs = {(name, official): gmacs_per_image_and_call(build_generator(name, official_data_flow=official))
             for name in names for official in {official_data_flow(m) for m in modes if runs_mode(name, m)}}
    for name in names:
        for dtype in dtypes:
            for batch in batches:
                baselines = dict.fromkeys(EAGER_BASELINES)
                for mode in (m for m in modes if runs_mode(name, m)):
                    row = {"model": name, "dtype": dtype_name(dtype), "batch": batch, "mode": mode,
                           **measure(name, mode, batch, device, dtype, args.warmup, args.repeats)}
                    if "im_per_s" in row:
                        per_image, per_call = gmacs[name, official_data_flow(mode)]
                        row["gflop_per_image"] = 2 * (per_image + per_call / batch)
                        row["tflops"] = row["gflop_per_image"] * row["im_per_s"] / 1e3
                        row["fraction_of_matmul"] = row["tflops"] / report["matmul_tflops"][dtype_name(dtype)]
                        if mode in baselines:
                            baselines[mode] = row
                        compare_to_baselines(row, baselines)
                    report["results"].append(row)
                    print(json.dumps(row), flush=True)
    write_results(args.out, "model_speed", report, markdown(report))
    if not plot(report, os.path.join(args.out, "model_speed.png")):
        print("matplotlib is not installed: no plot written")
    return report


if __name__ == "__main__":
    main()
