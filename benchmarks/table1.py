"""The paper's Table 1 on this machine: params, GMACs (fvcore and the paper's convention) and
images/s of every generator at 256x256, beside the paper's figures.

    python -m benchmarks.table1 [--device cpu|cuda] [--batch N] [--dtype float32|bfloat16|float16]
                                [--models PixelFolder,CIPS,...] [--json PATH] [--markdown PATH]
"""
import argparse
import json
import os

import torch
from tqdm import tqdm

import pixelfolder_ops
from benchmarks.complexity import count_gmacs, count_params
from benchmarks.generators import GENERATOR_NAMES, build_generator
from benchmarks.timing import comma_list, environment, median_seconds

PAPER = json.load(open(os.path.join(os.path.dirname(__file__), "paper_table1.json")))["models"]

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@torch.inference_mode()
def images_per_second(generator, batch, device, dtype, warmup, repeats):
    """Images per second of synchronized forward passes of a fixed batch (median of ``repeats``)."""
    z = torch.randn(batch, generator.style_dim, device=device, dtype=dtype)
    return batch / median_seconds(lambda: generator(z), device, warmup, repeats)


def measure(names, device, batch, dtype, warmup, repeats, progress):
    results = {}
    for name in names:
        progress.set_postfix_str(name)
        torch.manual_seed(0)
        generator = build_generator(name)
        row = {"params": count_params(generator),
               "gmacs": round(count_gmacs(generator), 4),
               "gmacs_paper_convention": round(count_gmacs(generator, convention="paper"), 4)}
        progress.update()
        generator = generator.to(device=device, dtype=dtype).eval()
        row["im_per_s"] = images_per_second(generator, batch, device, dtype, warmup, repeats)
        row["paper"] = PAPER.get(name, {})
        results[name] = row
        progress.update()
        del generator
    return results


def _fmt(value, spec):
    return "" if value is None else format(value, spec)


def markdown_table(report):
    lines = [f"Device: {report['device']}; batch {report['batch']}; {report['dtype']}; backend {report['backend']}; "
             f"torch {report['torch']}; {report['date']}", "",
             "| Generator | Params | paper (M) | GMACs (fvcore) | GMACs (paper conv.) | paper | im/s | paper im/s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, row in report["models"].items():
        paper = row["paper"]
        lines.append(f"| {name} | {row['params']:,} | {_fmt(paper.get('params_M'), '.2f')} | "
                     f"{row['gmacs']:.2f} | {row['gmacs_paper_convention']:.2f} | {_fmt(paper.get('gmacs'), '.2f')} | "
                     f"{row['im_per_s']:.2f} | {_fmt(paper.get('im_per_s'), '.2f')} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=None, help="images per forward (default: 32 on CUDA, 1 on CPU)")
    parser.add_argument("--dtype", choices=DTYPES, default="float32")
    parser.add_argument("--backend", help="pixelfolder_ops backend (default: $PIXELFOLDER_OPS_BACKEND, else auto)")
    parser.add_argument("--models", default=",".join(GENERATOR_NAMES), type=comma_list(GENERATOR_NAMES, "model"),
                        help=f"comma-separated subset of: {', '.join(GENERATOR_NAMES)}")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="write the results as JSON here")
    parser.add_argument("--markdown", help="write the Markdown table here")
    args = parser.parse_args(argv)

    names = args.models
    device = torch.device(args.device)
    batch = args.batch or (32 if device.type == "cuda" else 1)
    dtype = DTYPES[args.dtype]
    if args.backend:
        pixelfolder_ops.set_backend(args.backend)
    backend = pixelfolder_ops.get_backend()
    print(f"Table 1 at 256x256 on {environment(device)['device']}: batch {batch}, {args.dtype}, backend {backend}, "
          f"median of {args.repeats} after {args.warmup} warm-up")
    with tqdm(total=2 * len(names), unit="step", desc="Table 1") as progress:
        results = measure(names, device, batch, dtype, args.warmup, args.repeats, progress)
    report = {**environment(device), "batch": batch, "dtype": args.dtype, "backend": backend,
              "models": results}
    table = markdown_table(report)
    print(table)
    print("\nGMACs per image at batch 1. fvcore counts every conv and linear as traced, FIR filters included; the\n"
          "paper's convention counts a transposed conv as a 3x3 conv at its output resolution and no FIR filters\n"
          "(this is how the paper gets 83.77 for StyleGAN2, where fvcore gives 45.37).")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(table + "\n")
    return report


if __name__ == "__main__":
    main()
