"""Images/s of a generator run eagerly, as a torch.export program, as an AOTInductor package and as an
ONNX graph in ONNX Runtime (CPU provider), in one process on the same z (training.export makes the
programs and the graphs).

    python -m benchmarks.export_speed --out DIR [--model PixelFolder] [--size 256] [--batches 1,8]
                                      [--modes eager,export,aoti,onnx,onnx-dynamic] [--backend auto]
                                      [--device cpu|cuda] [--dtype float32] [--warmup 2] [--repeats 7]

Modes: ``eager`` and ``eager-reference`` (the generator on ``--backend`` and on the reference backend),
``export`` and ``aoti`` (on ``--backend``), ``onnx`` (a fixed-batch graph: ONNX's grouped Conv) and
``onnx-dynamic`` (one graph for every batch: patches times per-image weights). ONNX graphs are made of
the reference backend's ops, float32 on the CPU, and ONNX Runtime gets as many threads as torch.

Every batch size is timed in rounds: each round calls every mode once, in turn, so that a busy spell
of a shared machine falls on all modes alike; im/s is the median over the rounds, with their
interquartile range. Writes DIR/export_speed.json and .md. The models are random-weight generators of
the paper's configuration: speed does not depend on the weights.
"""
import argparse
import os
import tempfile

import torch

import pixelfolder_ops
from benchmarks.generators import GENERATOR_NAMES, build_generator
from benchmarks.timing import comma_list, environment, seconds_of, spread, write_results
from training import export

MODES = ("eager", "eager-reference", "export", "aoti", "onnx", "onnx-dynamic")


def on_backend(module, backend):
    def run(z):
        with torch.no_grad(), pixelfolder_ops.use_backend(backend):
            return module(z)
    return run


def loaded(path):
    """The program or graph ``training.export`` wrote at ``path``, as a callable of z."""
    metadata = torch.load(export.check_path(path), weights_only=True)["metadata"]
    program = export.load_program(path, metadata, threads=torch.get_num_threads())

    def run(z):
        with torch.no_grad():
            return program(z)
    return run


def build_runs(generator, batch, modes, backend, device, dtype, work_dir):
    """{mode: callable of z} for one batch size (``onnx-dynamic``'s graph is made once, for any batch)."""
    module = export.ExportableGenerator(generator, 1.0, False, "const", dtype)
    runs = {}
    for mode in modes:
        if mode in ("eager", "eager-reference"):
            runs[mode] = on_backend(module, backend if mode == "eager" else "reference")
            continue
        dynamic = mode == "onnx-dynamic"
        path = os.path.join(work_dir, f"{mode}-{'any' if dynamic else batch}.{'onnx' if 'onnx' in mode else 'pt2'}")
        if not os.path.exists(path):
            options = (dict(format="onnx") if mode.startswith("onnx") else
                       dict(backend=backend, aoti=mode == "aoti", device=device, dtype=dtype))
            export.export(generator, path, batch=None if dynamic else batch, dynamic_batch=dynamic, **options)
        runs[mode] = loaded(path)
    return runs


def measure(runs, z, device, warmup, repeats):
    """{mode: seconds of every timed round}: ``warmup`` untimed and ``repeats`` timed rounds, each
    calling every mode once in turn."""
    seconds = {mode: [] for mode in runs}
    for round_index in range(warmup + repeats):
        for mode, run in runs.items():
            took = seconds_of(lambda: run(z), device)
            if round_index >= warmup:
                seconds[mode].append(took)
    return seconds


def markdown_table(report):
    config, env = report["config"], report["environment"]
    onnx = (f", ONNX graphs of the reference backend's ops (opset {export.ONNX_DEFAULT_OPSET}) in ONNX Runtime "
            f"{env['onnxruntime']} (CPU provider, {env['onnxruntime_threads']} threads)" if "onnxruntime" in env else "")
    lines = [f"{config['model']} {config['size']}x{config['size']}, {config['dtype']}, random weights; eager, export "
             f"and aoti on backend {config['backend']}{onnx}; {env['device']}; torch {env['torch']}; {env['date']}",
             f"im/s: median of {config['repeats']} rounds after {config['warmup']} warm-up rounds, every mode called "
             f"once per round in turn; IQR: interquartile range of the rounds. Load average (1 min) "
             f"{env['load_average_1min'][0]:.1f} at the start, {env['load_average_1min'][1]:.1f} at the end.", "",
             "| batch | run as | im/s | IQR | vs eager |", "|---:|---|---:|---:|---:|"]
    for row in report["rows"]:
        lines.append(f"| {row['batch']} | {row['mode']} | {row['im_per_s']:.2f} | {row['im_per_s_iqr'][0]:.2f}-"
                     f"{row['im_per_s_iqr'][1]:.2f} | {row['speedup_vs_eager']:.2f}x |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--model", choices=GENERATOR_NAMES, default="PixelFolder")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batches", type=lambda text: [int(b) for b in text.split(",")], default=[1, 8])
    parser.add_argument("--modes", type=comma_list(MODES, "mode"), default=list(MODES))
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=tuple(export.DTYPES), default="float32")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    if "eager" not in args.modes:
        parser.error("--modes: expected eager among them (every mode is compared with it)")
    os.makedirs(args.out, exist_ok=True)
    device, dtype = torch.device(args.device), export.DTYPES[args.dtype]
    torch.manual_seed(0)
    generator = build_generator(args.model, args.size).to(device).eval()
    rows, load_average = [], [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as work_dir:
        for batch in args.batches:
            runs = build_runs(generator, batch, args.modes, args.backend, device, dtype, work_dir)
            z = torch.randn(batch, generator.style_dim, device=device)
            seconds = measure(runs, z, device, args.warmup, args.repeats)
            eager = spread(seconds["eager"], batch)[0]
            for mode in runs:
                median, iqr = spread(seconds[mode], batch)
                rows.append({"batch": batch, "mode": mode, "im_per_s": median, "im_per_s_iqr": list(iqr),
                             "seconds": seconds[mode], "speedup_vs_eager": median / eager})
    env = environment(device)
    env["load_average_1min"] = load_average + [os.getloadavg()[0]]  # at the start and the end: a shared machine
    if any(mode.startswith("onnx") for mode in args.modes):
        from training import export_onnx

        env.update(export_onnx.versions(), onnxruntime_threads=torch.get_num_threads())
    report = {"environment": env, "config": vars(args), "rows": rows}
    write_results(args.out, "export_speed", report, markdown_table(report))


if __name__ == "__main__":
    main()
