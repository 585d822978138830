"""The GPU report in one command, for a CUDA machine with no internet: build the extension with its
CUDA kernels, run the GPU tests, run every benchmark, and write the report to OUT.

    python -m benchmarks.gpu_report OUT [--skip-compile]

OUT receives report.md (the issue's targets, met or missed, then every table, and the per-kernel
profile of PixelFolder-256; a target counts as met only if the GPU tests passed in the same command),
report.json (every figure, with device, driver, CUDA, torch and Triton
versions and the date), model_speed.png and log.txt (each step's output): four files, as a lent
machine returns at most eight. A step that fails is logged and the report goes on; the report is
rewritten after every step, and ``--budget`` (default 8 minutes) caps the whole run, so a lent
machine's 10-minute command limit never loses it. To spread the steps over two commands on one warm
machine (the in-place build stays between them), name them: ``--steps build,selfcheck,gpu_tests,ops_speed,
styled_conv_speed`` then ``--steps gpu_tests,model_speed,train_speed,profile,table1,model_speed_compile``
(the second needs its own gpu_tests for its targets to be judged).

fvcore (GMACs) is not on the lent GPU machines: build its wheels on the development machine first,
`pip wheel --no-deps -w .whl fvcore iopath yacs termcolor` (with `/.whl/` in .git/info/exclude),
carry `.whl`, and begin the command there with
`python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site;`.
"""
import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import torch

from benchmarks.styled_conv_speed import backward_speedups
from benchmarks.timing import environment

PYTHON = sys.executable


def steps(scratch, skip_compile):
    """(name, command, folder it writes its results.json / results.md to, or None, time limit in s)."""
    model_modes = "reference,reference_hoisted,cuda,triton,auto,channels_last,cudagraphs"
    train_modes = "reference,reference_hoisted,cuda,triton,auto" + ("" if skip_compile else ",compile,compile_hoisted")
    runs = [
        ("build", [PYTHON, "setup.py", "build_ext", "--inplace"], None, 600),
        # The install's own self-check first: every op, backend and dtype against float64 (its table is in log.txt).
        ("selfcheck", [PYTHON, "-m", "pixelfolder_ops", "--speed", "--json", f"{scratch}/selfcheck/selfcheck.json"],
         f"{scratch}/selfcheck", 300),
        ("gpu_tests", [PYTHON, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-m", "not slow",
                       "tests/test_extension_cuda.py", "tests/test_triton.py", "tests/test_ops.py",
                       "tests/test_models.py"], None, 600),
        ("ops_speed", [PYTHON, "-m", "benchmarks.ops_speed", "--out", f"{scratch}/ops_speed"], f"{scratch}/ops_speed",
         300),
        ("styled_conv_speed", [PYTHON, "-m", "benchmarks.styled_conv_speed", "--out", f"{scratch}/styled_conv_speed"]
         + (["--no-compile"] if skip_compile else []), f"{scratch}/styled_conv_speed", 400),
        ("model_speed", [PYTHON, "-m", "benchmarks.model_speed", "--out", f"{scratch}/model_speed",
                         "--modes", model_modes], f"{scratch}/model_speed", 900),
        ("train_speed", [PYTHON, "-m", "benchmarks.train_speed", "--out", f"{scratch}/train_speed", "--modes",
                         train_modes], f"{scratch}/train_speed", 900),
        ("profile", [PYTHON, "-m", "benchmarks.profile_model", "--out", f"{scratch}/profile"], f"{scratch}/profile", 300),
        ("table1", [PYTHON, "-m", "benchmarks.table1", "--device", "cuda", "--json", f"{scratch}/table1/results.json",
                    "--markdown", f"{scratch}/table1/results.md"], f"{scratch}/table1", 300),
    ]
    if not skip_compile:
        # torch.compile(mode="max-autotune") takes minutes per shape: the headline configuration only.
        runs.append(("model_speed_compile", [PYTHON, "-m", "benchmarks.model_speed", "--out",
                                             f"{scratch}/model_speed_compile", "--models", "PixelFolder",
                                             "--batches", "128", "--dtypes", "bfloat16", "--modes",
                                             "reference,reference_hoisted,compile,compile_hoisted,auto"],
                     f"{scratch}/model_speed_compile", 900))
    return runs


FUSED_MODES = ("cuda", "triton", "auto", "channels_last", "cudagraphs")


def rows_of(steps, step, filename):
    results = (steps.get(step) or {}).get("results") or {}
    return (results.get(filename) or {}).get("results", [])


def correctness_status(steps):
    """The status of this run's correctness step (the GPU tests), or None where it did not run."""
    return (steps.get("gpu_tests") or {}).get("status")


def targets(steps):
    """The issue's targets for PixelFolder-256 in bfloat16 on this device: (what, measured, required,
    met, sense) for each, from the benchmark steps' results (measured None where a step gave nothing).
    A speed is no use if the kernels are wrong: a target is met only if the correctness step passed in
    this same run."""
    correct = correctness_status(steps) == "ok"
    def im_per_s(rows, modes, **where):
        found = [r for r in rows if r["mode"] in modes and "im_per_s" in r and all(r[k] == v for k, v in where.items())]
        return max(found, key=lambda r: r["im_per_s"]) if found else None

    def ratio(a, b, key="im_per_s"):
        return a[key] / b[key] if a and b and key in a and key in b else None

    inference = dict(model="PixelFolder", dtype="bfloat16", batch=128)
    speed = rows_of(steps, "model_speed", "model_speed.json")
    fused, reference = im_per_s(speed, FUSED_MODES, **inference), im_per_s(speed, ("reference",), **inference)
    compiled_run = rows_of(steps, "model_speed_compile", "model_speed.json")
    compiled_fused = im_per_s(compiled_run, FUSED_MODES, **inference)
    compiled = im_per_s(compiled_run, ("compile",), **inference)
    training = rows_of(steps, "train_speed", "train_speed.json")
    train_fused = im_per_s(training, FUSED_MODES, model="PixelFolder")
    train_reference = im_per_s(training, ("reference",), model="PixelFolder")
    train_compiled = im_per_s(training, ("compile",), model="PixelFolder")
    styled_conv = ((steps.get("styled_conv_speed") or {}).get("results") or {}).get("results.json")
    speedups = backward_speedups(styled_conv) if styled_conv else []
    slowest_backward = None if not speedups or None in speedups else min(speedups)
    table = [
        ("StyledConv backward, triton over the cuda composite (slowest of the 12 layers)", slowest_backward, 2.0, ">="),
        ("inference im/s, batch 128 (fastest fused mode)", fused and fused["im_per_s"], 7800, ">="),
        ("inference vs the reference", ratio(fused, reference), 3.0, ">="),
        ("inference vs torch.compile of the reference", ratio(compiled_fused, compiled), 1.5, ">="),
        ("training im/s vs the reference", ratio(train_fused, train_reference), 2.0, ">="),
        ("training im/s vs torch.compile of the reference", ratio(train_fused, train_compiled), 1.3, ">="),
        ("training peak memory per image vs the reference", ratio(train_fused, train_reference, "peak_mib_per_image"),
         0.6, "<="),
    ]
    return [(what, measured, required, None if measured is None else
             correct and (measured >= required if sense == ">=" else measured <= required), sense)
            for what, measured, required, sense in table]


def data_flow_split(steps):
    """(data-flow gain, kernels' gain) of PixelFolder-256's bf16 batch-128 inference: the reference with
    its positional branch hoisted over the official reference, and the fastest fused mode over the
    hoisted reference; None where a row is missing."""
    rows = [r for r in rows_of(steps, "model_speed", "model_speed.json") if "im_per_s" in r
            and (r["model"], r["dtype"], r["batch"]) == ("PixelFolder", "bfloat16", 128)]
    best = {mode: max((r["im_per_s"] for r in rows if r["mode"] in modes), default=None)
            for mode, modes in (("reference", ("reference",)), ("hoisted", ("reference_hoisted",)),
                                ("fused", FUSED_MODES))}
    if None in best.values():
        return None
    return best["hoisted"] / best["reference"], best["fused"] / best["hoisted"]


def targets_markdown(rows, correctness=None, split=None):
    """The targets table; ``correctness`` is the status of this run's correctness step (None: not run),
    ``split`` the (data-flow, kernels) factors of the inference speed-up."""
    lines = ["## Targets (PixelFolder-256, bfloat16)", ""]
    if correctness != "ok":
        lines += [f"No target is met: the correctness step (gpu_tests) {'did not run' if correctness is None else correctness}"
                  " in this run, and a speed counts only for kernels shown correct in the same run.", ""]
    lines += ["| target | measured | required | met |", "|---|---:|---:|---|"]
    for what, measured, required, met, sense in rows:
        shown = "not measured" if measured is None else f"{measured:,.2f}"
        lines.append(f"| {what} | {shown} | {sense} {required:,} | {'-' if met is None else 'yes' if met else 'NO'} |")
    if split:
        lines += ["", f"Of the inference speed-up over the reference, {split[0]:.2f}x is the data flow (the reference "
                      f"with its positional branch hoisted, as the fused modes run it) and {split[1]:.2f}x the kernels "
                      "(the fastest fused mode over that hoisted reference)."]
    if any(met is not True for *_, met, _ in rows):
        lines += ["", "Where the time goes: the `profile` section below (torch.profiler, per kernel)."]
    return "\n".join(lines)


def read_results(folder):
    """The JSON and Markdown a benchmark wrote to ``folder`` (any *.json / *.md), or Nones."""
    if folder is None:
        return None, None
    data = {os.path.basename(p): json.load(open(p)) for p in sorted(glob.glob(f"{folder}/*.json"))}
    text = "\n\n".join(open(p).read().strip() for p in sorted(glob.glob(f"{folder}/*.md")))
    return data or None, text or None


def write_report(out, report, sections):
    """report.json and report.md as they stand: written after every step, so that a run stopped from
    outside (a lent machine's time limit) still leaves what it measured."""
    target_rows = targets(report["steps"])
    report["targets"] = [dict(zip(("target", "measured", "required", "met", "sense"), row)) for row in target_rows]
    with open(os.path.join(out, "report.json"), "w") as f:
        json.dump(report, f, indent=2)
    with open(os.path.join(out, "report.md"), "w") as f:
        targets_section = targets_markdown(target_rows, correctness_status(report["steps"]), data_flow_split(report["steps"]))
        f.write("\n\n".join(sections[:1] + [targets_section] + sections[1:]) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", help="folder for report.md, report.json, model_speed.png and log.txt")
    parser.add_argument("--skip-compile", action="store_true", help="leave out the torch.compile measurements")
    parser.add_argument("--budget", type=float, default=480,
                        help="seconds for the whole report: each step gets at most what is left, and a step "
                             "that would start with less than a minute left is skipped (default 480)")
    parser.add_argument("--steps", help="comma-separated subset of the steps, in their order: "
                                        + ", ".join(name for name, *_ in steps("", False)))
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        parser.error("the GPU report needs a CUDA GPU")
    os.makedirs(args.out, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix="gpu_report_")
    os.makedirs(f"{scratch}/table1", exist_ok=True)
    chosen = None if args.steps is None else args.steps.split(",")
    report = {**environment(torch.device("cuda")), "steps": {}}
    sections = [f"# GPU report\n\n{report['device']}; driver {report['driver']}; CUDA {report['cuda']}; "
                f"torch {report['torch']}; Triton {report['triton']}; {report['date']}"]
    deadline = time.monotonic() + args.budget
    with open(os.path.join(args.out, "log.txt"), "w") as log:
        for name, command, folder, limit in steps(scratch, args.skip_compile):
            if chosen is not None and name not in chosen:
                continue
            left = deadline - time.monotonic()
            if left < 60:
                status, seconds = f"skipped ({left:.0f} s of the --budget left)", 0.0
            else:
                limit = min(limit, left)
                print(f"== {name}: {' '.join(command)}", file=log, flush=True)
                start = time.monotonic()
                try:
                    result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, timeout=limit,
                                            env={**os.environ, "PIXELFOLDER_CUDA": "1", "PYTHONUNBUFFERED": "1"})
                    status = "ok" if result.returncode == 0 else f"failed (exit {result.returncode})"
                except subprocess.TimeoutExpired:
                    status = f"stopped after {limit:.0f} s"
                seconds = time.monotonic() - start
            data, text = read_results(folder)
            report["steps"][name] = {"status": status, "seconds": round(seconds, 1), "results": data}
            sections.append(f"## {name}: {status}, {seconds:.0f} s" + (f"\n\n{text}" if text else ""))
            print(f"{name}: {status} ({seconds:.0f} s)", flush=True)
            for png in glob.glob(f"{scratch}/model_speed/*.png"):
                shutil.copy(png, args.out)
            write_report(args.out, report, sections)
    print(open(os.path.join(args.out, "report.md")).read())


if __name__ == "__main__":
    main()
