"""Per-op speed of the compiled kernels at PixelFolder-256's real shapes, against the reference.

On CUDA (default batch 32, bfloat16): bytes moved per second of the memory-bound ops (fold / unfold,
Fourier embedding, bias + leaky ReLU, upfirdn2d) against the device's copy bandwidth (a large clone),
and the modulated conv / StyledConv against the reference grouped conv and against one plain cuDNN
conv of the same shape followed by separate epilogue ops. With ``--device cpu``: every op, cpu
backend against the reference backend. Every op is also timed forward and backward together (a
fixed output gradient), as a training step runs it. Writes results.json and results.md to ``--out``.

    python benchmarks/ops_speed.py --device cuda --out benchmarks/results/ops_speed_h100
    python benchmarks/ops_speed.py --device cpu --batch 2 --out /tmp/ops_speed_cpu
"""
import argparse
import json
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import pixelfolder_ops as ops  # noqa: E402
from pixelfolder_ops import extension  # noqa: E402
from benchmarks.timing import environment, median_seconds  # noqa: E402

GAIN = math.sqrt(2)


def nbytes(*tensors):
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


def leaf(*shape, dtype, device):
    """Random input that requires grad, so the fwd+bwd timings have something to differentiate."""
    return torch.randn(*shape, dtype=dtype, device=device, requires_grad=True)


def memory_bound_cases(batch, dtype, device):
    """(name, extension call, reference call, bytes the op must move, its differentiable inputs) at
    PixelFolder-256's shapes."""
    def randn(*shape):
        return leaf(*shape, dtype=dtype, device=device)

    blur = ops.make_resample_kernel([1, 3, 3, 1], dtype, device)  # a constant: no gradient
    positional = randn(batch, 32, 256, 256)  # the 32-channel positional map of the last stage
    styled = randn(batch, 512, 64, 64)  # a StyledConv A output, before its unfold
    activation, bias = randn(batch, 128, 256, 256), randn(128)
    skip, features = randn(batch, 3, 128, 128), randn(batch, 128, 128, 128)
    frequencies, phases = randn(128, 2), randn(128)
    cases = [
        ("fold (B,32,256,256)", lambda b: ops.fold(positional, backend=b), 2 * nbytes(positional), [positional]),
        ("unfold (B,512,64,64)", lambda b: ops.unfold(styled, backend=b), 2 * nbytes(styled), [styled]),
        ("fourier_embedding (128 ch, 256x256)",
         lambda b: ops.fourier_embedding(frequencies, phases, 256, 256, backend=b),
         128 * 256 * 256 * activation.element_size(), [frequencies, phases]),
        ("fused_leaky_relu (B,128,256,256)", lambda b: ops.fused_leaky_relu(activation, bias, 0.2, GAIN, backend=b),
         2 * nbytes(activation), [activation, bias]),
        ("upfirdn2d skip x2 (B,3,128,128)", lambda b: ops.upfirdn2d(skip, blur * 4, 2, 1, (2, 1), backend=b),
         5 * nbytes(skip), [skip]),
        ("upfirdn2d x2 (B,128,128,128)", lambda b: ops.upfirdn2d(features, blur * 4, 2, 1, (2, 1), backend=b),
         5 * nbytes(features), [features]),
    ]
    compiled = device.type  # the compiled backend of the device: "cpu" or "cuda"
    return [(name, lambda call=call: call(compiled), lambda call=call: call("reference"), moved, leaves)
            for name, call, moved, leaves in cases]


def conv_cases(batch, dtype, device):
    """StyledConv A and B of PixelFolder-256's first fold of its last stage, and its ToRGB: (name,
    extension call, reference call, plain-conv call, differentiable inputs)."""
    def randn(*shape):
        return leaf(*shape, dtype=dtype, device=device)

    compiled = device.type  # the compiled backend of the device: "cpu" or "cuda"
    cases = []
    for name, (c_in, c_out, size, unfold) in {"A 512->256 @64, unfold": (512, 256, 64, True),
                                              "B 64->256 @128": (64, 256, 128, False)}.items():
        x, weight, styles = randn(batch, c_in, size, size), randn(c_out, c_in, 3, 3), randn(batch, c_in)
        weight.data /= math.sqrt(9 * c_in)
        noise, strength, bias = randn(batch, 1, size, size).detach(), randn(1), randn(c_out)
        args = dict(input=x, weight=weight, styles=styles, noise=noise, noise_strength=strength, bias=bias,
                    unfold_output=unfold)
        demod = torch.ones(batch, c_out, 1, 1, dtype=dtype, device=device)

        def plain(x=x, weight=weight, noise=noise, strength=strength, bias=bias, demod=demod, unfold=unfold):
            # One cuDNN conv of the same shape, then the epilogue as separate PyTorch ops.
            out = F.conv2d(x, weight, padding=1) * demod + strength * noise
            out = F.leaky_relu(out + bias.view(1, -1, 1, 1), 0.2) * GAIN
            return ops.unfold(out, backend="reference") if unfold else out

        cases.append((f"styled_conv2d {name}", lambda a=args: ops.styled_conv2d(**a, backend=compiled),
                      lambda a=args: ops.styled_conv2d(**a, backend="reference"), plain,
                      [x, weight, styles, strength, bias]))
        cases.append((f"modulated_conv2d {name}", lambda x=x, w=weight, s=styles: ops.modulated_conv2d(x, w, s, backend=compiled),
                      lambda x=x, w=weight, s=styles: ops.modulated_conv2d(x, w, s, backend="reference"),
                      lambda x=x, weight=weight: F.conv2d(x, weight, padding=1), [x, weight, styles]))
    x, weight, styles = randn(batch, 128, 256, 256), randn(3, 128, 1, 1), randn(batch, 128)
    skip, skip_kernel = randn(batch, 3, 128, 128), ops.make_resample_kernel([1, 3, 3, 1], dtype, device) * 4
    bias = randn(3)
    args = (x, weight, styles, bias, skip, skip_kernel)
    cases.append(("to_rgb 128->3 @256 + skip x2", lambda: ops.to_rgb(*args, backend=compiled),
                  lambda: ops.to_rgb(*args, backend="reference"), lambda: F.conv2d(x, weight),
                  [x, weight, styles, bias, skip]))
    return cases


def copy_bandwidth(device, repeats):
    """Bytes per second of a clone of a 1 GiB tensor (read + write)."""
    big = torch.empty(2 ** 28, dtype=torch.float32, device=device)
    seconds = median_seconds(lambda: big.clone(), device, warmup=3, repeats=repeats)
    return 2 * nbytes(big) / seconds


def run(args):
    device = torch.device(args.device)
    reason = extension.unavailable_reason(device.type)
    if reason is not None:
        raise SystemExit(f"ops_speed: the {device.type} backend is unavailable: {reason}")
    dtype = getattr(torch, args.dtype)

    def timed(function):
        with torch.no_grad():
            return median_seconds(function, device, args.warmup, args.repeats)

    def timed_with_backward(function, leaves):
        """Forward and backward (a fixed random output gradient): what a training step spends on it."""
        grad_output = []

        def step():
            out = function()
            if not grad_output:
                grad_output.append(torch.randn_like(out))
            torch.autograd.grad(out, leaves, grad_output[0])
        return median_seconds(step, device, max(1, args.warmup), args.repeats)

    torch.manual_seed(0)
    results = {"environment": {**environment(device), "extension": extension.build_info()}, "batch": args.batch, "dtype": args.dtype, "memory_bound": [],
               "conv": []}
    bandwidth = copy_bandwidth(device, args.repeats) if device.type == "cuda" else None
    results["copy_bandwidth_GBps"] = bandwidth and bandwidth / 1e9
    for name, ours, theirs, moved, leaves in memory_bound_cases(args.batch, dtype, device):
        seconds, reference_seconds = timed(ours), timed(theirs)
        results["memory_bound"].append({
            "op": name, "ms": seconds * 1e3, "reference_ms": reference_seconds * 1e3,
            "GBps": moved / seconds / 1e9, "fraction_of_copy": bandwidth and moved / seconds / bandwidth,
            "fwd_bwd_ms": timed_with_backward(ours, leaves) * 1e3,
            "reference_fwd_bwd_ms": timed_with_backward(theirs, leaves) * 1e3})
    for name, ours, theirs, plain, leaves in conv_cases(args.batch, dtype, device):
        results["conv"].append({
            "op": name, "ms": timed(ours) * 1e3, "reference_ms": timed(theirs) * 1e3,
            "plain_conv_ms": timed(plain) * 1e3, "fwd_bwd_ms": timed_with_backward(ours, leaves) * 1e3,
            "reference_fwd_bwd_ms": timed_with_backward(theirs, leaves) * 1e3})
    return results


def markdown(results):
    env = results["environment"]
    lines = [f"# pixelfolder_ops speed: {env['device']}", "",
             f"{env['date']}; torch {env['torch']}, CUDA {env['cuda']}; batch {results['batch']}, {results['dtype']}.", ""]
    if results["copy_bandwidth_GBps"]:
        lines += [f"Device copy bandwidth (clone of 1 GiB): {results['copy_bandwidth_GBps']:.0f} GB/s.", ""]
    def backward(r):
        return (f"{r['fwd_bwd_ms']:.3f} | {r['reference_fwd_bwd_ms']:.3f} | "
                f"{r['reference_fwd_bwd_ms'] / r['fwd_bwd_ms']:.2f}x")

    lines += ["| op | ms | reference ms | speed-up | GB/s | of copy bandwidth | fwd+bwd ms | reference fwd+bwd ms | "
              "speed-up |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results["memory_bound"]:
        fraction = f"{r['fraction_of_copy']:.0%}" if r["fraction_of_copy"] else "-"
        lines.append(f"| {r['op']} | {r['ms']:.3f} | {r['reference_ms']:.3f} | {r['reference_ms'] / r['ms']:.2f}x | "
                     f"{r['GBps']:.1f} | {fraction} | {backward(r)} |")
    lines += ["", "| op | ms | reference (grouped conv) ms | speed-up | plain conv (+ separate epilogue) ms | "
              "fwd+bwd ms | reference fwd+bwd ms | speed-up |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results["conv"]:
        lines.append(f"| {r['op']} | {r['ms']:.3f} | {r['reference_ms']:.3f} | {r['reference_ms'] / r['ms']:.2f}x | "
                     f"{r['plain_conv_ms']:.3f} | {backward(r)} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--out", required=True, help="folder for results.json and results.md")
    parser.add_argument("--batch", type=int, default=None, help="default: 32 on CUDA, 2 on the CPU")
    parser.add_argument("--dtype", default=None, help="default: bfloat16 on CUDA, float32 on the CPU")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per op (median); default 50 / 5")
    parser.add_argument("--warmup", type=int, default=None, help="untimed calls first; default 5 / 1")
    args = parser.parse_args(argv)
    cuda = args.device == "cuda"
    args.batch = args.batch or (32 if cuda else 2)
    args.dtype = args.dtype or ("bfloat16" if cuda else "float32")
    args.repeats = args.repeats or (50 if cuda else 5)
    args.warmup = args.warmup if args.warmup is not None else (5 if cuda else 1)
    results = run(args)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    text = markdown(results)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
