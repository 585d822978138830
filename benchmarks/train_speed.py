"""Training speed and memory: images/s of whole training steps (a D step, a G step, the generator
EMA, and lazy R1 every ``--r1-every`` D steps, amortized) and peak memory per image, for the
reference (eager) and its torch.compile, each as the official code runs (PixelFolder's positional
branch once per image) and with that branch hoisted as the fused modes run it (``*_hoisted``), and the
fused backends, in one run; each row against both eager baselines and torch.compile of the reference.

    python -m benchmarks.train_speed --out DIR [--device cuda] [--models PixelFolder,StyleGAN2]
        [--batch 32] [--amp bf16] [--modes reference,reference_hoisted,compile,compile_hoisted,cuda,triton,auto]

Each step is ``training.train.Trainer.train_step``, the trainer's own, on one fixed batch of real
images already on the device (the data pipeline is not measured). The fused modes run channels-last,
the baselines NCHW, as the official code. Writes train_speed.json and
train_speed.md to DIR; a configuration that cannot run here is reported with its error.
"""
from training import extras

if __name__ == "__main__":
    extras.require("train")  # before the imports that need it

import argparse
import itertools
import json
import os
import tempfile

import torch

import pixelfolder_ops
from benchmarks.generators import BASELINE_MODES, EAGER_BASELINES, official_data_flow, runs_mode
from benchmarks.timing import comma_list, compare_to_baselines, environment, median_seconds, ratio_text, write_results
from training.config import TrainConfig
from training.networks import GENERATORS
from training.train import Trainer

MODES = tuple(BASELINE_MODES) + ("cpu", "cuda", "triton", "auto")


def trainer_for(mode, model, args, device, out):
    """A Trainer in ``mode`` whose data is one fixed batch on the device."""
    baseline = mode in BASELINE_MODES
    config = TrainConfig(
        model=model, size=args.size, width=args.width, batch=args.batch, d_reg_every=args.r1_every,
        device=device.type, backend="reference" if baseline else mode, compile=mode.startswith("compile"),
        official_data_flow=official_data_flow(mode) and model == "PixelFolder", channels_last=not baseline,
        amp=args.amp, dataset="procedural", procedural_images=args.batch, num_workers=0, out=out)
    trainer = Trainer(config)
    trainer.data = itertools.repeat(next(trainer.data).to(device))
    return trainer


def measure(mode, model, args, device):
    """images/s: the median over ``--cycles`` R1 cycles (each ``--r1-every`` steps, one of them with
    R1) after one untimed cycle, which compiles and measures what needs it; and the peak memory per
    image over the timed cycles."""
    try:
        with tempfile.TemporaryDirectory() as out:
            trainer = trainer_for(mode, model, args, device, out)

            def cycle():
                for _ in range(args.r1_every):
                    trainer.train_step()

            cycle()
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            seconds = median_seconds(cycle, device, warmup=0, repeats=args.cycles)
    except (RuntimeError, ValueError, pixelfolder_ops.BackendUnavailableError) as error:  # includes out-of-memory
        return {"error": f"{type(error).__name__}: {str(error).splitlines()[0]}"}
    finally:
        pixelfolder_ops.set_backend(None)
    row = {"im_per_s": args.batch * args.r1_every / seconds}
    if device.type == "cuda":
        row["peak_mib_per_image"] = torch.cuda.max_memory_allocated(device) / 2 ** 20 / args.batch
    return row


def markdown(report):
    settings = report["settings"]
    lines = [f"{report['device']}; torch {report['torch']}; Triton {report['triton']}; {report['date']}",
             f"{settings['size']}x{settings['size']}, batch {settings['batch']}, amp {settings['amp']}, "
             f"R1 every {settings['r1_every']} steps (amortized); median of {settings['cycles']} R1 cycles.",
             "",
             "| model | mode | train im/s | vs reference | vs reference_hoisted | vs compile | peak MiB/image | "
             "memory vs reference |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for row in report["results"]:
        if "error" in row:
            lines.append(f"| {row['model']} | {row['mode']} | {row['error']} | | | | | |")
            continue
        memory = f"{row['peak_mib_per_image']:.1f}" if "peak_mib_per_image" in row else ""
        lines.append(f"| {row['model']} | {row['mode']} | {row['im_per_s']:.1f} | {ratio_text(row, 'speedup_vs_reference')} | "
                     f"{ratio_text(row, 'speedup_vs_reference_hoisted')} | {ratio_text(row, 'speedup_vs_compile')} | "
                     f"{memory} | "
                     f"{ratio_text(row, 'memory_vs_reference')} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for train_speed.json and .md")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", default="PixelFolder,StyleGAN2", type=comma_list(tuple(GENERATORS), "model"))
    parser.add_argument("--modes", default="reference,reference_hoisted,compile,compile_hoisted,cuda,triton,auto",
                        type=comma_list(MODES, "mode"))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--amp", default="bf16", choices=("bf16", "none"))
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--width", type=float, default=1.0, help="scales every channel count (small runs)")
    parser.add_argument("--r1-every", type=int, default=16)
    parser.add_argument("--cycles", type=int, default=3, help="timed R1 cycles (median)")
    args = parser.parse_args(argv)
    names, modes = args.models, args.modes
    device = torch.device(args.device)
    os.makedirs(args.out, exist_ok=True)
    report = {**environment(device), "settings": {k: getattr(args, k) for k in ("size", "batch", "amp", "r1_every",
                                                                                 "cycles", "width")},
              "results": []}
    for name in names:
        baselines = dict.fromkeys(EAGER_BASELINES + ("compile",))
        for mode in (m for m in modes if runs_mode(name, m)):
            row = {"model": name, "mode": mode, **measure(mode, name, args, device)}
            if "im_per_s" in row:
                if mode in baselines:
                    baselines[mode] = row
                compare_to_baselines(row, baselines)
            report["results"].append(row)
            print(json.dumps(row), flush=True)
    write_results(args.out, "train_speed", report, markdown(report))
    return report


if __name__ == "__main__":
    main()
