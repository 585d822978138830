"""``python -m pixelfolder_ops`` (also ``pixelfolder-ops-check``): what this install is, and whether
every kernel it built computes the right thing on this machine.

    python -m pixelfolder_ops [--device cpu|cuda[:N]] [--backend NAME ...] [--dtype NAME ...] [--speed]
                              [--json FILE]

Prints the environment, the build (backends compiled, CUDA architectures, where the extension came
from, why each missing backend is missing), then every op on every available backend of the device,
forward and backward, in every dtype the backend takes, NCHW and channels-last, against the reference in
float64 (the cases and tolerances of pixelfolder_ops.correctness, which the test suite uses too). Exits 1
if any check fails. ``--speed`` adds each op's time against the reference and the backend ``auto`` picks.
"""
import argparse
import json
import math
import os
import platform
import statistics
import sys
import time

import torch

from . import __version__, backend, correctness

# The 1-in-8 trailing noise of a CPU timer (or a GPU's launch jitter) is below one op's time at these
# shapes; the median of this many calls is stable to a few percent.
SPEED_REPEATS = 7
# The layouts every case is checked in: those the models run in (models.to_channels_last). The tests check
# strided views too.
LAYOUTS = ("contiguous", "channels_last")
DTYPE_NAMES = {str(dtype).replace("torch.", ""): dtype for dtype in correctness.DTYPES}


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment():
    info = {"pixelfolder_ops": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
            "cpu": f"{_cpu_name()}, {os.cpu_count()} cores", "gpus": []}
    try:
        import triton
        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            major, minor = torch.cuda.get_device_capability(index)
            info["gpus"].append(f"cuda:{index} {torch.cuda.get_device_name(index)} (sm_{major}{minor})")
    return info


def build():
    """Which backends can run here, why the others cannot, and what the compiled extension is."""
    from . import extension

    loaded = extension.load()
    module = loaded.module
    info = {"backends": {name: backend._unavailable_reason(name) or "available" for name in backend.KNOWN_BACKENDS},
            "extension": None}
    if module is not None:
        info["extension"] = {"file": getattr(module, "__file__", None), "build_info": module.build_info()}
    return info


def _describe(value):
    if isinstance(value, dict):
        return ", ".join(f"{k}={_describe(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value) or "none"
    return str(value)


def checked_backends(device, asked=None):
    """The backends to check on ``device``: those asked for (``_parse`` has checked that they are
    available), else every available one but the reference, else the reference alone."""
    if asked:
        return list(asked)
    names = [name for name in backend.available_backends() if name != "reference"
             and name in backend._AUTO_PREFERENCE.get(device.type, ())]
    return names or ["reference"]


def checked_dtypes(name, device, asked=None):
    return [d for d in correctness.backend_dtypes(name, device) if asked is None or d in asked]


def checked_cases(device):
    """The cases checked on ``device``: every one on a GPU; on the CPU, not those sized for a GPU."""
    too_large = () if device.type == "cuda" else correctness.NOT_ON_A_CPU
    return [case for case in correctness.cases() if not case.tags.intersection(too_large)]


def correctness_rows(device, backends, dtypes=None, progress=None):
    """One row per op, backend and dtype: the worst error relative to its tolerance over the op's
    cases, in each checked layout, forward and backward."""
    grouped = correctness.cases_by_op(checked_cases(device))
    rows = []
    for name in backends:
        for dtype in checked_dtypes(name, device, dtypes):
            for op, op_cases in grouped.items():
                worst = None
                for case in (case for case in op_cases if case.runs_in(dtype)):
                    for layout in LAYOUTS:
                        try:
                            results = correctness.check_case(case, name, dtype, device, layout)
                        except Exception as error:  # a kernel that raises is a failure, reported as such
                            results = {"error": (math.inf, 0.0)}
                            case_error = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
                        else:
                            case_error = None
                        for output, (error, tolerance) in results.items():
                            ratio = error / tolerance if tolerance else (0.0 if error == 0 else math.inf)
                            if worst is None or ratio > worst["ratio"]:
                                worst = {"op": op, "backend": name, "dtype": str(dtype).replace("torch.", ""),
                                         "case": case.name, "layout": layout, "output": output, "error": error,
                                         "tolerance": tolerance, "ratio": ratio, "exception": case_error}
                        if progress:
                            progress()
                worst["passed"] = worst["ratio"] <= 1.0
                rows.append(worst)
    return rows


def speed_rows(device, backends):
    """Each op's median forward time at its largest case, per backend, against the reference, and
    the backend 'auto' takes there."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    rows = []
    largest = {}
    for case in checked_cases(device):
        if case.op not in largest or case.reduction > largest[case.op].reduction:
            largest[case.op] = case
    for op, case in largest.items():
        tensors = case.inputs(dtype, device)
        times = {}
        for name in dict.fromkeys(["reference"] + backends):
            with torch.no_grad():
                times[name] = _median_seconds(lambda: case.call(tensors, name), device)
        with torch.no_grad(), backend.use_backend("auto"):
            case.call(tensors, None)
        chosen = [choice for (chosen_op, *_), choice in backend.auto_choices().items() if chosen_op == op]
        auto = chosen[-1] if chosen else backend._auto_candidates(device)[0]
        rows.append({"op": op, "case": case.name, "dtype": str(dtype).replace("torch.", ""),
                     "seconds": times, "auto": auto})
    return rows


def _median_seconds(function, device):
    function()
    times = []
    for _ in range(SPEED_REPEATS):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        function()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _print_table(header, rows):
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    for line in [header, ["-" * w for w in widths]] + rows:
        print("  ".join(str(cell).ljust(w) for cell, w in zip(line, widths)).rstrip())


def _parse(argv):
    parser = argparse.ArgumentParser(prog="python -m pixelfolder_ops",
                                     description=__doc__.split("\n\n")[0].replace("``", ""))
    parser.add_argument("--device", help="the device to check (default: cuda if a GPU is visible, else cpu)")
    parser.add_argument("--backend", action="append", metavar="NAME",
                        help="check only this backend (repeatable); default: every available one")
    parser.add_argument("--dtype", action="append", metavar="NAME", choices=list(DTYPE_NAMES),
                        help="check only this dtype (repeatable): " + ", ".join(DTYPE_NAMES) + "; default: all")
    parser.add_argument("--speed", action="store_true", help="also time each op against the reference")
    parser.add_argument("--json", metavar="FILE", help="write everything to FILE as JSON")
    args = parser.parse_args(argv)
    args.dtype = [DTYPE_NAMES[name] for name in args.dtype] if args.dtype else None
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        args.device = torch.device(device)
    except RuntimeError:
        parser.error(f"argument --device: expected cpu or cuda[:N], got {device!r}")
    if args.device.type not in ("cpu", "cuda"):
        parser.error(f"argument --device: expected cpu or cuda[:N], got {device!r}")
    if args.device.type == "cuda" and not torch.cuda.is_available():
        parser.error("argument --device: cuda was asked for, but PyTorch sees no CUDA GPU")
    for name in args.backend or ():
        if name not in backend.KNOWN_BACKENDS:
            parser.error(f"argument --backend: expected one of {', '.join(backend.KNOWN_BACKENDS)}, got {name!r}")
        reason = backend._unavailable_reason(name)
        if reason is not None:
            parser.error(f"argument --backend: backend '{name}' is unavailable here: {reason}")
    if args.json and os.path.isdir(args.json):
        parser.error(f"argument --json: expected a file path, got the folder {args.json!r}")
    return args


def main(argv=None):
    args = _parse(argv)
    device = args.device
    report = {"environment": environment(), "build": build(), "device": str(device)}
    print("Environment")
    for key, value in report["environment"].items():
        print(f"  {key}: {_describe(value) if value not in (None, []) else 'none'}")
    print("Build")
    for name, state in report["build"]["backends"].items():
        print(f"  {name}: {state}")
    extension = report["build"]["extension"]
    if extension:
        print(f"  extension: {extension['file']}")
        print(f"  built with: {_describe(extension['build_info'])}")

    backends = checked_backends(device, args.backend)
    if backends == ["reference"] and not args.backend:
        print(f"Only the reference backend can run on {device} here: it is checked in every dtype against "
              "itself in float64.")
    from tqdm import tqdm

    total = len(LAYOUTS) * sum(case.runs_in(dtype) for name in backends
                               for dtype in checked_dtypes(name, device, args.dtype) for case in checked_cases(device))
    with tqdm(total=total, desc=f"checking {', '.join(backends)} on {device}", file=sys.stderr,
              leave=False, disable=None) as bar:
        rows = correctness_rows(device, backends, args.dtype, progress=lambda: bar.update())
    report["correctness"] = rows
    print(f"Correctness on {device} (worst normwise relative error against the reference in float64, "
          "forward and every gradient)")
    _print_table(["op", "backend", "dtype", "worst error", "tolerance", "result", "worst case"],
                 [[r["op"], r["backend"], r["dtype"], f"{r['error']:.2e}", f"{r['tolerance']:.2e}",
                   "PASS" if r["passed"] else "FAIL",
                   f"{r['case']} ({r['layout']}): {r['output']}" + (f" ({r['exception']})" if r["exception"] else "")]
                  for r in rows])
    if args.speed:
        report["speed"] = speed_rows(device, backends)
        print(f"Speed on {device} (median forward time; x = reference time / backend time)")
        names = list(dict.fromkeys(["reference"] + backends))
        _print_table(["op", "dtype"] + [f"{n} ms" for n in names] + ["auto picks"],
                     [[r["op"], r["dtype"]] + [
                         f"{r['seconds'][n] * 1e3:.3f}" + ("" if n == "reference" else
                                                            f" ({r['seconds']['reference'] / r['seconds'][n]:.2f}x)")
                         for n in names] + [r["auto"]] for r in report["speed"]])
    failed = [r for r in rows if not r["passed"]]
    report["passed"] = not failed
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as file:
            json.dump(report, file, indent=2)
    print(f"{len(rows) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0
