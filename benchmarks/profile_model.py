"""Where a generator's time goes: a per-kernel table from torch.profiler of its inference forward
and of whole training steps, on one backend.

    python -m benchmarks.profile_model --out DIR [--device cuda] [--model PixelFolder] [--batch 128]
        [--dtype bfloat16] [--backend auto] [--train-batch 32] [--rows 25]

Writes profile.json and profile.md to DIR: for each profiled region, the kernels (CPU ops on the
CPU) by self time, with their share of the total and their call counts.
"""
from training import extras

if __name__ == "__main__":
    extras.require("train")  # before the imports that need it

import argparse
import os
import tempfile
from types import SimpleNamespace

import torch
from torch.profiler import ProfilerActivity, profile

import pixelfolder_ops
from benchmarks.generators import GENERATOR_NAMES, build_generator
from benchmarks.model_speed import DTYPES
from benchmarks.timing import environment, synchronize, write_results
from benchmarks.train_speed import trainer_for


def kernel_table(prof, device, rows):
    """The ``rows`` events with the most self time on ``device``: name, ms, share, calls."""
    attribute = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events = [e for e in prof.key_averages() if getattr(e, attribute) > 0]
    total = sum(getattr(e, attribute) for e in events)
    events.sort(key=lambda e: getattr(e, attribute), reverse=True)
    return {"total_ms": total / 1e3,
            "kernels": [{"name": e.key, "ms": getattr(e, attribute) / 1e3, "share": getattr(e, attribute) / total,
                         "calls": e.count} for e in events[:rows]]}


def profiled(region, device, repeats):
    """The profile of ``repeats`` calls of ``region`` after one untimed call."""
    region()
    synchronize(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(repeats):
            region()
        synchronize(device)
    return prof


def markdown(report):
    lines = [f"{report['device']}; torch {report['torch']}; Triton {report['triton']}; {report['date']}"]
    for name, table in report["profiles"].items():
        lines += ["", f"### {name}: {table['total_ms']:.1f} ms of kernel time in all", "",
                  "| kernel | ms | share | calls |", "|---|---:|---:|---:|"]
        lines += [f"| `{k['name'][:90]}` | {k['ms']:.2f} | {k['share']:.1%} | {k['calls']} |" for k in table["kernels"]]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for profile.json and profile.md")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--model", default="PixelFolder", choices=GENERATOR_NAMES)
    parser.add_argument("--batch", type=int, default=128, help="inference batch")
    parser.add_argument("--dtype", default="bfloat16", choices=DTYPES)
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--train-batch", type=int, default=32, help="training batch (0: no training profile)")
    parser.add_argument("--size", type=int, default=256, help="training resolution")
    parser.add_argument("--width", type=float, default=1.0, help="training: scales every channel count")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rows", type=int, default=25)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    os.makedirs(args.out, exist_ok=True)
    report = {**environment(device), "settings": vars(args), "profiles": {}}

    pixelfolder_ops.set_backend(args.backend)
    try:
        generator = build_generator(args.model).to(device=device, dtype=DTYPES[args.dtype]).eval().requires_grad_(False)
        z = torch.randn(args.batch, generator.style_dim, device=device, dtype=DTYPES[args.dtype])
        with torch.inference_mode():
            prof = profiled(lambda: generator(z), device, args.repeats)
        report["profiles"][f"{args.model} inference, batch {args.batch}, {args.dtype}, {args.backend}"] = \
            kernel_table(prof, device, args.rows)
        if args.train_batch:
            settings = SimpleNamespace(size=args.size, width=args.width, batch=args.train_batch, r1_every=16,
                                       amp="bf16" if args.dtype == "bfloat16" else "none")
            with tempfile.TemporaryDirectory() as out:
                trainer = trainer_for(args.backend, args.model, settings, device, out)

                def cycle():
                    for _ in range(settings.r1_every):
                        trainer.train_step()

                prof = profiled(cycle, device, 1)
            report["profiles"][f"{args.model} training, {settings.r1_every} steps with one R1, batch "
                               f"{args.train_batch}, amp {settings.amp}, {args.backend}"] = kernel_table(prof, device, args.rows)
    finally:
        pixelfolder_ops.set_backend(None)
    write_results(args.out, "profile", report, markdown(report))
    return report


if __name__ == "__main__":
    main()
