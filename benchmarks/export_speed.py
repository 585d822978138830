"""Images/s of a generator run eagerly, as a torch.export program and as an AOTInductor package, in
the same process on the same inputs (training.export makes the last two).

    python -m benchmarks.export_speed --out DIR [--model PixelFolder] [--size 256] [--batch 4]
                                      [--backend auto] [--device cpu|cuda] [--dtype float32]

Writes DIR/export_speed.json and .md. The models are random-weight generators of the paper's
configuration: speed does not depend on the weights.
"""
import argparse
import os
import tempfile

import torch

import pixelfolder_ops
from benchmarks.generators import GENERATOR_NAMES, build_generator
from benchmarks.timing import environment, median_seconds, write_results
from training import export


def measure(generator, batch, backend, device, dtype, work_dir):
    """{mode: seconds per batch} for eager, torch.export and AOTInductor, on the same z."""
    z = torch.randn(batch, generator.style_dim, device=device)
    module = export.ExportableGenerator(generator, 1.0, False, "const", 0, dtype)
    seconds = {}
    with torch.no_grad(), pixelfolder_ops.use_backend(backend):
        seconds["eager"] = median_seconds(lambda: module(z), device, warmup=2, repeats=5)
    for aoti in (False, True):
        path = os.path.join(work_dir, f"generator{'-aoti' if aoti else ''}.pt2")
        export.export(generator, path, batch=batch, backend=backend, aoti=aoti, device=device, dtype=dtype)
        run = export.load_program(path, torch.load(export.check_path(path), weights_only=True)["metadata"])
        with torch.no_grad():
            seconds["aoti" if aoti else "export"] = median_seconds(lambda: run(z), device, warmup=2, repeats=5)
    return seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--model", choices=GENERATOR_NAMES, default="PixelFolder")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=tuple(export.DTYPES), default="float32")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    device = torch.device(args.device)
    torch.manual_seed(0)
    generator = build_generator(args.model, args.size).to(device).eval()
    with tempfile.TemporaryDirectory() as work_dir:
        seconds = measure(generator, args.batch, args.backend, device, export.DTYPES[args.dtype], work_dir)
    rows = [{"mode": mode, "seconds_per_batch": s, "im_per_s": args.batch / s,
             "speedup_vs_eager": seconds["eager"] / s} for mode, s in seconds.items()]
    env = environment(device)
    title = (f"{args.model} {args.size}x{args.size}, batch {args.batch}, {args.dtype}, backend {args.backend}; "
             f"{env['device']}; torch {env['torch']}; {env['date']}")
    table = "\n".join([title, "", "| run as | im/s | vs eager |", "|---|---:|---:|"] +
                      [f"| {r['mode']} | {r['im_per_s']:.2f} | {r['speedup_vs_eager']:.2f}x |" for r in rows])
    write_results(args.out, "export_speed", {"environment": env, "config": vars(args), "rows": rows}, table)


if __name__ == "__main__":
    main()
