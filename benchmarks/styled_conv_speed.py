"""StyledConv speed at PixelFolder-256's layer shapes, forward and backward, in one run: the reference
(official grouped conv) and its torch.compile, the best unfused PyTorch formulation (input scaling, one
cuDNN conv, separate epilogue ops) and its torch.compile, and the `cuda`, `triton` and `auto` backends;
TFLOP/s against the measured matmul rate.

    python -m benchmarks.styled_conv_speed --out benchmarks/results/styled_conv_speed [--no-compile]

Needs a CUDA GPU. Writes results.json and results.md (device, versions, date) to --out. A formulation that
cannot run here (a backend not built) is listed with its error and the others go on.
"""
import argparse
import datetime
import json
import math
import os
import sys

import torch
import torch.nn.functional as F

import pixelfolder_ops as ops
from benchmarks.timing import matmul_tflops, median_seconds

# PixelFolder-256's 12 StyledConvs in forward order: (C_in, C_out, resolution of the conv). The first of
# each fold step unfolds its output.
LAYERS = [(512, 512, 4), (128, 512, 8), (512, 512, 8), (128, 512, 16), (512, 512, 16), (128, 512, 32),
          (512, 512, 32), (128, 512, 64), (512, 256, 64), (64, 256, 128), (256, 128, 128), (32, 128, 256)]
LARGEST = [(512, 256, 64), (256, 128, 128)]
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def time_ms(fn, warmup, repeats):
    """Median milliseconds of ``fn`` over ``repeats`` CUDA-event-timed calls, after ``warmup`` calls."""
    return 1e3 * median_seconds(fn, torch.device("cuda"), warmup, repeats)


def unfused_styled_conv(x, weight, styles, noise, strength, bias, unfold_output):
    """The fastest plain-PyTorch StyledConv: modulate the activations, one dense cuDNN conv over the batch,
    demodulate and the rest of the epilogue as separate ops."""
    demod = torch.rsqrt(styles.float().square() @ weight.float().square().sum(dim=(2, 3)).t() + 1e-8)
    out = F.conv2d(x * styles[:, :, None, None], weight, padding=weight.shape[-1] // 2)
    out = out * demod.to(x.dtype)[:, :, None, None] + strength * noise + bias[None, :, None, None]
    out = F.leaky_relu(out, 0.2) * math.sqrt(2)
    return ops.unfold(out, backend="reference") if unfold_output else out


def layer_inputs(batch, in_channels, out_channels, resolution, dtype, device="cuda", memory_format=torch.channels_last):
    """(x, weight, styles, noise, noise_strength, bias) of one StyledConv, all requiring gradients."""
    def make(*shape, scale=1.0, offset=0.0):
        return (torch.randn(*shape, device=device) * scale + offset).to(dtype).requires_grad_()
    x = make(batch, in_channels, resolution, resolution).detach().to(memory_format=memory_format)
    return (x.requires_grad_(), make(out_channels, in_channels, 3, 3, scale=(9 * in_channels) ** -0.5),
            make(batch, in_channels, offset=1.0), make(batch, 1, resolution, resolution), make(1), make(out_channels))


def backend_call(name):
    return lambda *a: ops.styled_conv2d(*a[:6], unfold_output=a[6], backend=name)


def formulations(compile_baselines):
    """name -> f(x, weight, styles, noise, strength, bias, unfold_output)."""
    found = {"reference": backend_call("reference"), "unfused (cuDNN)": unfused_styled_conv}
    if compile_baselines:
        found["reference (torch.compile)"] = torch.compile(backend_call("reference"), dynamic=False)
        found["unfused (torch.compile)"] = torch.compile(unfused_styled_conv, dynamic=False)
    for backend in ("cuda", "triton", "auto"):
        found[backend] = backend_call(backend)
    return found


def measure_layer(in_channels, out_channels, resolution, unfold_output, args, dtype, functions):
    inputs = layer_inputs(args.batch, in_channels, out_channels, resolution, dtype)
    flops = 2 * args.batch * resolution ** 2 * out_channels * in_channels * 9
    row = {"in_channels": in_channels, "out_channels": out_channels, "resolution": resolution,
           "unfold_output": unfold_output, "gflop": flops / 1e9, "forward_ms": {}, "forward_tflops": {},
           "forward_backward_ms": {}, "backward_ms": {}, "errors": {}}
    grad = torch.randn_like(unfused_styled_conv(*inputs, unfold_output))
    for name, function in functions.items():
        try:
            with torch.no_grad():
                forward = time_ms(lambda: function(*inputs, unfold_output), args.warmup, args.repeats)
            # A fresh graph per step (what training does); the backward is the difference.
            step = time_ms(lambda: torch.autograd.grad(function(*inputs, unfold_output), inputs, grad),
                           args.warmup, args.repeats)
        except (RuntimeError, ops.BackendUnavailableError) as error:  # a backend not built, out of memory
            row["errors"][name] = f"{type(error).__name__}: {str(error).splitlines()[0]}"
            continue
        row["forward_ms"][name], row["forward_backward_ms"][name] = forward, step
        row["forward_tflops"][name] = flops / forward / 1e9
        row["backward_ms"][name] = step - forward
    return row


def ratio(row, key, numerator, denominator):
    """row[key][numerator] / row[key][denominator], or None where either was not measured."""
    values = row[key]
    return values[numerator] / values[denominator] if numerator in values and denominator in values else None


def backward_speedups(report):
    """The issue's per-StyledConv backward target: the composite (`cuda`) backward's time over the fused
    (`triton`) backward's, per layer (None where either is missing)."""
    return [ratio(row, "backward_ms", "cuda", "triton") for row in report["layers"]]


def _cells(values):
    return " | ".join("-" if v is None else f"{v:.2f}x" for v in values)


def markdown(report):
    names = list(dict.fromkeys(n for row in report["layers"] for n in (*row["forward_ms"], *row["errors"])))
    lines = [f"# StyledConv speed, PixelFolder-256 layers, batch {report['batch']}, {report['dtype']}", "",
             f"{report['device']}; torch {report['torch']}, triton {report['triton']}, CUDA {report['cuda']}; "
             f"{report['date']}. Median of {report['repeats']} CUDA-event timings after {report['warmup']} "
             f"warm-up calls. Matmul rate ({report['dtype']}, 8192^3): {report['matmul_tflops']:.0f} TFLOP/s.", ""]
    errors = {n: e for row in report["layers"] for n, e in row["errors"].items()}
    lines += [f"Not measured: {n}: {e}" for n, e in errors.items()] + ([""] if errors else [])

    def table(key, cell, extra_names, extra_cells):
        out = ["| C_in -> C_out @ res | unfold | " + " | ".join(names + extra_names) + " |",
               "|---|---|" + "---:|" * (len(names) + len(extra_names))]
        for row in report["layers"]:
            cells = [cell(row, n) if n in row[key] else "-" for n in names]
            out.append(f"| {row['in_channels']} -> {row['out_channels']} @ {row['resolution']} | "
                       f"{'yes' if row['unfold_output'] else 'no'} | " + " | ".join(cells + extra_cells(row)) + " |")
        return out

    lines += ["## Forward (ms; TFLOP/s in brackets)", ""]
    lines += table("forward_ms", lambda row, n: f"{row['forward_ms'][n]:.3f} ({row['forward_tflops'][n]:.0f})",
                   ["triton vs unfused", "triton vs cuda"],
                   lambda row: [_cells([ratio(row, "forward_ms", "unfused (cuDNN)", "triton"),
                                        ratio(row, "forward_ms", "cuda", "triton")])])
    lines += ["", "## Backward (ms: forward + backward, less the forward)", ""]
    lines += table("backward_ms", lambda row, n: f"{row['backward_ms'][n]:.3f}",
                   ["triton vs cuda (target >= 2x)"],
                   lambda row: [_cells([ratio(row, "backward_ms", "cuda", "triton")])])
    lines += ["", "## Largest layers: fused forward against the matmul rate", ""]
    for row in report["layers"]:
        if (row["in_channels"], row["out_channels"], row["resolution"]) in LARGEST and "triton" in row["forward_tflops"]:
            achieved = row["forward_tflops"]["triton"]
            lines.append(f"- {row['in_channels']} -> {row['out_channels']} @ {row['resolution']}: {achieved:.0f} "
                         f"TFLOP/s, {100 * achieved / report['matmul_tflops']:.0f}% of the matmul rate")
    for key, what in (("forward_ms", "forward"), ("backward_ms", "backward")):
        totals = {n: sum(row[key][n] for row in report["layers"]) for n in names
                  if all(n in row[key] for row in report["layers"])}
        lines += ["", f"All 12 layers, {what}: " + ", ".join(f"{n} {t:.2f} ms" for n, t in totals.items())]
    return "\n".join(lines + [""])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for results.json and results.md")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--dtype", choices=DTYPES, default="bf16")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile'd baselines")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("styled_conv_speed: needs a CUDA GPU, and none is visible to PyTorch; nothing was measured.")
    import triton

    dtype = DTYPES[args.dtype]
    functions = formulations(compile_baselines=not args.no_compile)
    layers = []
    for index, (in_channels, out_channels, resolution) in enumerate(LAYERS):
        layers.append(measure_layer(in_channels, out_channels, resolution, index % 2 == 0, args, dtype, functions))
        print(f"{in_channels} -> {out_channels} @ {resolution}: " + ", ".join(
            f"{n} {ms:.3f} ms" for n, ms in layers[-1]["forward_ms"].items()), flush=True)
    report = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
              "cuda": torch.version.cuda, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
              "batch": args.batch, "dtype": args.dtype, "warmup": args.warmup, "repeats": args.repeats,
              "matmul_tflops": matmul_tflops(torch.device("cuda"), dtype, 8192, args.warmup, args.repeats), "layers": layers}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.json"), "w") as file:
        json.dump(report, file, indent=2)
    with open(os.path.join(args.out, "results.md"), "w") as file:
        file.write(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
