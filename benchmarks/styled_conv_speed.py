"""StyledConv speed at PixelFolder-256's layer shapes: the fused Triton kernel against the best unfused
PyTorch formulation (input scaling, cuDNN conv, separate epilogue ops; also under torch.compile) and the
reference's grouped conv; forward and backward; TFLOP/s against the measured bf16 matmul rate.

    python -m benchmarks.styled_conv_speed --out benchmarks/results/styled_conv_speed

Needs a CUDA GPU. Writes results.json and results.md (device, versions, date) to --out.
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


def layer_inputs(batch, in_channels, out_channels, resolution, dtype):
    def make(*shape, scale=1.0, offset=0.0):
        return (torch.randn(*shape, device="cuda") * scale + offset).to(dtype).requires_grad_()
    x = make(batch, in_channels, resolution, resolution).detach().to(memory_format=torch.channels_last)
    return (x.requires_grad_(), make(out_channels, in_channels, 3, 3, scale=(9 * in_channels) ** -0.5),
            make(batch, in_channels, offset=1.0), make(batch, 1, resolution, resolution), make(1), make(out_channels))


def formulations(compile_unfused):
    """name -> f(x, weight, styles, noise, strength, bias, unfold_output)."""
    found = {
        "fused (triton)": lambda *a: ops.styled_conv2d(*a[:6], unfold_output=a[6], backend="triton"),
        "unfused (cuDNN)": unfused_styled_conv,
        "reference (grouped conv)": lambda *a: ops.styled_conv2d(*a[:6], unfold_output=a[6], backend="reference"),
    }
    if compile_unfused:
        found["unfused (torch.compile)"] = torch.compile(unfused_styled_conv, dynamic=False)
    return found


def measure_layer(in_channels, out_channels, resolution, unfold_output, args, dtype, functions):
    inputs = layer_inputs(args.batch, in_channels, out_channels, resolution, dtype)
    flops = 2 * args.batch * resolution ** 2 * out_channels * in_channels * 9
    row = {"in_channels": in_channels, "out_channels": out_channels, "resolution": resolution,
           "unfold_output": unfold_output, "gflop": flops / 1e9, "forward_ms": {}, "forward_tflops": {},
           "forward_backward_ms": {}, "backward_ms": {}}
    grad = torch.randn_like(functions["unfused (cuDNN)"](*inputs, unfold_output))
    for name, function in functions.items():
        with torch.no_grad():
            forward = time_ms(lambda: function(*inputs, unfold_output), args.warmup, args.repeats)
        # A fresh graph per step (what training does); the backward is the difference.
        step = time_ms(lambda: torch.autograd.grad(function(*inputs, unfold_output), inputs, grad),
                       args.warmup, args.repeats)
        row["forward_ms"][name], row["forward_backward_ms"][name] = forward, step
        row["forward_tflops"][name] = flops / forward / 1e9
        row["backward_ms"][name] = step - forward
    return row


def markdown(report):
    names = list(report["layers"][0]["forward_ms"])
    lines = [f"# StyledConv speed, PixelFolder-256 layers, batch {report['batch']}, {report['dtype']}", "",
             f"{report['device']}; torch {report['torch']}, triton {report['triton']}, CUDA {report['cuda']}; "
             f"{report['date']}. Median of {report['repeats']} CUDA-event timings after {report['warmup']} "
             f"warm-up calls. Matmul rate ({report['dtype']}, 8192^3): {report['matmul_tflops']:.0f} TFLOP/s.", "",
             "## Forward (ms; TFLOP/s in brackets)", "",
             "| C_in -> C_out @ res | unfold | " + " | ".join(names) + " | fused speed-up vs unfused |",
             "|---|---|" + "---:|" * (len(names) + 1)]
    for row in report["layers"]:
        cells = [f"{row['forward_ms'][n]:.3f} ({row['forward_tflops'][n]:.0f})" for n in names]
        speedup = row["forward_ms"]["unfused (cuDNN)"] / row["forward_ms"]["fused (triton)"]
        lines.append(f"| {row['in_channels']} -> {row['out_channels']} @ {row['resolution']} | "
                     f"{'yes' if row['unfold_output'] else 'no'} | " + " | ".join(cells) + f" | {speedup:.2f}x |")
    lines += ["", "## Backward (ms: forward + backward, less the forward)", "",
              "| C_in -> C_out @ res | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for row in report["layers"]:
        lines.append(f"| {row['in_channels']} -> {row['out_channels']} @ {row['resolution']} | "
                     + " | ".join(f"{row['backward_ms'][n]:.3f}" for n in names) + " |")
    lines += ["", "## Largest layers: fused forward against the matmul rate", ""]
    for row in report["layers"]:
        if (row["in_channels"], row["out_channels"], row["resolution"]) in LARGEST:
            achieved = row["forward_tflops"]["fused (triton)"]
            lines.append(f"- {row['in_channels']} -> {row['out_channels']} @ {row['resolution']}: {achieved:.0f} "
                         f"TFLOP/s, {100 * achieved / report['matmul_tflops']:.0f}% of the matmul rate")
    totals = {n: sum(row["forward_ms"][n] for row in report["layers"]) for n in names}
    lines += ["", "All 12 layers, forward: " + ", ".join(f"{n} {t:.2f} ms" for n, t in totals.items()), ""]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for results.json and results.md")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--dtype", choices=DTYPES, default="bf16")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile'd unfused formulation")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("styled_conv_speed: needs a CUDA GPU, and none is visible to PyTorch; nothing was measured.")
    import triton

    dtype = DTYPES[args.dtype]
    functions = formulations(compile_unfused=not args.no_compile)
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
