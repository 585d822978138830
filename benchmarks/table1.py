"""The paper's Table 1 on this machine: params, GMACs (fvcore and the paper's convention) and
images/s of every generator at 256x256, beside the paper's figures.

    python -m benchmarks.table1 [--device cpu|cuda] [--batch N] [--dtype float32|bfloat16|float16]
                                [--models PixelFolder,CIPS,...] [--warmup 2] [--repeats 9]
                                [--json PATH] [--markdown PATH]

Images/s are the median of ``--repeats`` rounds, each timing one forward of every model in turn, with
the interquartile range of the rounds beside it.
"""
from training import extras

if __name__ == "__main__":
    extras.require("bench")  # before the imports that need it

import argparse
import json
import os

import torch
from tqdm import tqdm

import pixelfolder_ops
from benchmarks.complexity import count_gmacs, count_params
from benchmarks.generators import GENERATOR_NAMES, build_generator
from benchmarks.timing import comma_list, environment, seconds_of, spread

PAPER = json.load(open(os.path.join(os.path.dirname(__file__), "paper_table1.json")))["models"]

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def uses_extension(backend):
    return backend not in ("reference", "triton")


def load_extension_step(device, backend, progress):
    """Loads (building it the first time, about a minute) the compiled extension the backend may use,
    as a step of its own: otherwise the build happens silently inside the first model's first forward."""
    if not uses_extension(backend):
        return
    progress.set_postfix_str("C++ extension (built once, about a minute)")
    from pixelfolder_ops import extension

    extension.unavailable_reason(device.type)
    progress.update()


def measure(names, device, batch, dtype, warmup, repeats, progress):
    """Every generator is built and counted first; then ``warmup`` untimed and ``repeats`` timed rounds,
    each of one synchronized forward of every generator in turn (round-robin), so that a busy spell of
    a shared machine falls on all of them alike instead of on whichever model it happens to overlap."""
    results, generators = {}, {}
    for name in names:
        progress.set_postfix_str(f"{name}: params and GMACs")
        torch.manual_seed(0)
        generator = build_generator(name)
        results[name] = {"params": count_params(generator), "gmacs": round(count_gmacs(generator), 4),
                         "gmacs_paper_convention": round(count_gmacs(generator, convention="paper"), 4),
                         "paper": PAPER.get(name, {})}
        generators[name] = generator.to(device=device, dtype=dtype).eval()
        progress.update()
    z = torch.randn(batch, generators[names[0]].style_dim, device=device, dtype=dtype)
    seconds = {name: [] for name in names}
    with torch.inference_mode():
        for round_index in range(warmup + repeats):
            timed = round_index >= warmup
            for name in names:
                progress.set_postfix_str(f"{'round' if timed else 'warm-up'} {round_index + 1}/{warmup + repeats}: "
                                         f"{name}")
                took = seconds_of(lambda: generators[name](z), device)
                if timed:
                    seconds[name].append(took)
                progress.update()
    for name in names:
        median, (low, high) = spread(seconds[name], batch)
        results[name].update(im_per_s=median, im_per_s_iqr=[low, high])
    return results


def _fmt(value, spec):
    return "" if value is None else format(value, spec)


def markdown_table(report):
    lines = [f"Device: {report['device']}; batch {report['batch']}; {report['dtype']}; backend {report['backend']}; "
             f"torch {report['torch']}; {report['date']}",
             f"im/s: median of {report['repeats']} rounds after {report['warmup']} warm-up rounds, the models "
             "interleaved in each round; IQR: the interquartile range of the rounds.", "",
             "| Generator | Params | paper (M) | GMACs (fvcore) | GMACs (paper conv.) | paper | im/s | IQR | paper im/s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, row in report["models"].items():
        paper = row["paper"]
        lines.append(f"| {name} | {row['params']:,} | {_fmt(paper.get('params_M'), '.2f')} | "
                     f"{row['gmacs']:.2f} | {row['gmacs_paper_convention']:.2f} | {_fmt(paper.get('gmacs'), '.2f')} | "
                     f"{row['im_per_s']:.2f} | {row['im_per_s_iqr'][0]:.2f}-{row['im_per_s_iqr'][1]:.2f} | "
                     f"{_fmt(paper.get('im_per_s'), '.2f')} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=None, help="images per forward (default: 32 on CUDA, 1 on CPU)")
    parser.add_argument("--dtype", choices=DTYPES, default="float32")
    parser.add_argument("--backend", help="pixelfolder_ops backend (default: $PIXELFOLDER_OPS_BACKEND, else auto)")
    parser.add_argument("--models", default=",".join(GENERATOR_NAMES), type=comma_list(GENERATOR_NAMES, "model"),
                        help=f"comma-separated subset of: {', '.join(GENERATOR_NAMES)}")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds over every model first")
    parser.add_argument("--repeats", type=int, default=9, help="timed rounds (one forward of each model per round)")
    parser.add_argument("--json", help="write the results as JSON here")
    parser.add_argument("--markdown", help="write the Markdown table here")
    args = parser.parse_args(argv)
    for flag, value, least in (("--warmup", args.warmup, 0), ("--repeats", args.repeats, 1), ("--batch", args.batch, 1)):
        if value is not None and value < least:
            parser.error(f"{flag} must be at least {least}, got {value}")

    names = args.models
    device = torch.device(args.device)
    batch = args.batch or (32 if device.type == "cuda" else 1)
    dtype = DTYPES[args.dtype]
    if args.backend:
        pixelfolder_ops.set_backend(args.backend)
    backend = pixelfolder_ops.get_backend()
    print(f"Table 1 at 256x256 on {environment(device)['device']}: batch {batch}, {args.dtype}, backend {backend}, "
          f"{args.repeats} timed rounds over every model after {args.warmup} warm-up rounds")
    steps = uses_extension(backend) + len(names) * (1 + args.warmup + args.repeats)
    with tqdm(total=steps, unit="step", desc="Table 1") as progress:
        load_extension_step(device, backend, progress)
        results = measure(names, device, batch, dtype, args.warmup, args.repeats, progress)
    report = {**environment(device), "batch": batch, "dtype": args.dtype, "backend": backend,
              "warmup": args.warmup, "repeats": args.repeats, "models": results}
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
