"""The GPU report in one command, for a CUDA machine with no internet: build the extension with its
CUDA kernels, run the GPU tests, run every benchmark, and write the report to OUT.

    python -m benchmarks.gpu_report OUT [--skip-compile]

OUT receives report.md (every table), report.json (every figure, with device, driver, CUDA, torch and
Triton versions and the date), model_speed.png and log.txt (each step's output): four files, as a
lent machine returns at most eight. A step that fails is logged and the report goes on.

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

from benchmarks.timing import environment

PYTHON = sys.executable


def steps(scratch, skip_compile):
    """(name, command, folder it writes its results.json / results.md to, or None, time limit in s)."""
    model_modes = "reference,cuda,triton,auto,cudagraphs"
    runs = [
        ("build", [PYTHON, "setup.py", "build_ext", "--inplace"], None, 600),
        ("gpu tests", [PYTHON, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-m", "not slow",
                       "tests/test_extension_cuda.py", "tests/test_triton.py", "tests/test_ops.py",
                       "tests/test_models.py"], None, 600),
        ("ops_speed", [PYTHON, "-m", "benchmarks.ops_speed", "--out", f"{scratch}/ops_speed"], f"{scratch}/ops_speed",
         300),
        ("styled_conv_speed", [PYTHON, "-m", "benchmarks.styled_conv_speed", "--out", f"{scratch}/styled_conv_speed"]
         + (["--no-compile"] if skip_compile else []), f"{scratch}/styled_conv_speed", 400),
        ("model_speed", [PYTHON, "-m", "benchmarks.model_speed", "--out", f"{scratch}/model_speed",
                         "--modes", model_modes], f"{scratch}/model_speed", 900),
        ("table1", [PYTHON, "-m", "benchmarks.table1", "--device", "cuda", "--json", f"{scratch}/table1/results.json",
                    "--markdown", f"{scratch}/table1/results.md"], f"{scratch}/table1", 300),
    ]
    if not skip_compile:
        # torch.compile(mode="max-autotune") takes minutes per shape: the headline configuration only.
        runs.append(("model_speed_compile", [PYTHON, "-m", "benchmarks.model_speed", "--out",
                                             f"{scratch}/model_speed_compile", "--models", "PixelFolder",
                                             "--batches", "128", "--dtypes", "bfloat16", "--modes", "reference,compile,auto"],
                     f"{scratch}/model_speed_compile", 900))
    return runs


def read_results(folder):
    """The JSON and Markdown a benchmark wrote to ``folder`` (any *.json / *.md), or Nones."""
    if folder is None:
        return None, None
    data = {os.path.basename(p): json.load(open(p)) for p in sorted(glob.glob(f"{folder}/*.json"))}
    text = "\n\n".join(open(p).read().strip() for p in sorted(glob.glob(f"{folder}/*.md")))
    return data or None, text or None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", help="folder for report.md, report.json, model_speed.png and log.txt")
    parser.add_argument("--skip-compile", action="store_true", help="leave out the torch.compile measurements")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        parser.error("the GPU report needs a CUDA GPU")
    os.makedirs(args.out, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix="gpu_report_")
    os.makedirs(f"{scratch}/table1", exist_ok=True)
    report = {**environment(torch.device("cuda")), "steps": {}}
    sections = [f"# GPU report\n\n{report['device']}; driver {report['driver']}; CUDA {report['cuda']}; "
                f"torch {report['torch']}; Triton {report['triton']}; {report['date']}"]
    with open(os.path.join(args.out, "log.txt"), "w") as log:
        for name, command, folder, limit in steps(scratch, args.skip_compile):
            print(f"== {name}: {' '.join(command)}", file=log, flush=True)
            start = time.monotonic()
            try:
                result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, timeout=limit,
                                        env={**os.environ, "PIXELFOLDER_CUDA": "1", "PYTHONUNBUFFERED": "1"})
                status = "ok" if result.returncode == 0 else f"failed (exit {result.returncode})"
            except subprocess.TimeoutExpired:
                status = f"stopped after {limit} s"
            seconds = time.monotonic() - start
            data, text = read_results(folder)
            report["steps"][name] = {"status": status, "seconds": round(seconds, 1), "results": data}
            sections.append(f"## {name}: {status}, {seconds:.0f} s" + (f"\n\n{text}" if text else ""))
            print(f"{name}: {status} ({seconds:.0f} s)", flush=True)
    for png in glob.glob(f"{scratch}/model_speed/*.png"):
        shutil.copy(png, args.out)
    with open(os.path.join(args.out, "report.json"), "w") as f:
        json.dump(report, f, indent=2)
    with open(os.path.join(args.out, "report.md"), "w") as f:
        f.write("\n\n".join(sections) + "\n")
    print("\n\n".join(sections))


if __name__ == "__main__":
    main()
