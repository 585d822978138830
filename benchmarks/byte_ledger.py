"""The byte ledger: per StyledConv of PixelFolder-256, forward and backward, the bytes each backend's design
reads from and writes to memory, counted from its code path, against the minimum (each input read once,
each output written once). It is what a GPU measurement (ncu's DRAM bytes) is held against.

    python -m benchmarks.byte_ledger --out benchmarks/results/byte_ledger [--batch 32] [--dtype bf16]

How it counts, on the CPU, without a GPU: the StyledConv's forward and its backward (the gradients of the
input, weight, styles, noise strength and bias; the noise is random, as in training) run with every memory
pass recorded:
- every ATen operator the design runs (a ``TorchDispatchMode``; views cost nothing; an operator reads the
  distinct elements of each tensor argument once and writes each output once), down through this package's
  composite C++ ops to the kernels they call;
- every Triton launch, recorded instead of run (the tensors its ``tl.store``/``tl.atomic_*`` calls name are
  written; every other tensor argument, and a stored one that the kernel also loads, is read once).
A kernel that reads a tensor twice from memory is counted once: the ledger is the design's floor, ideal
caching assumed. The ``cuda`` backend's design is traced through the ``cpu`` backend: both run the same
composite (csrc/composite.cpp) with one kernel per custom op of the same schema. Batches 2 and 3 are traced
at the layer's real shape and the bytes extrapolated to ``--batch`` (every term is affine in the batch from
2 on; at batch 1 a design may skip a reduction over the batch).
"""
from training import extras

if __name__ == "__main__":
    extras.require("triton")  # before the imports that need it

import contextlib
import math
import os
import re

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

import pixelfolder_ops as ops
from benchmarks.kernel_resources import _jit_function, launches_recorded
from benchmarks.styled_conv_speed import DTYPES, LAYERS, layer_inputs
from benchmarks.timing import environment, write_results
from training import cli

# (column, backend the ops run on, input layout)
DESIGNS = [("reference", "reference", torch.contiguous_format),
           ("cuda (NCHW)", "cpu", torch.contiguous_format), ("cuda (channels-last)", "cpu", torch.channels_last),
           ("triton (NCHW)", "triton", torch.contiguous_format),
           ("triton (channels-last)", "triton", torch.channels_last)]
OUR_NAMESPACES = ("pixelfolder_ops", "pixelfolder_triton")
MB = 1e6


def distinct_bytes(tensor):
    """Bytes of the distinct elements a tensor view covers (a broadcast dimension, stride 0, counts once)."""
    return math.prod(n for n, s in zip(tensor.shape, tensor.stride()) if s != 0) * tensor.element_size()


class PassRecorder(TorchDispatchMode):
    """Records (name, bytes read, bytes written) for every memory pass: leaf ATen operators, and this
    package's custom ops that call no other operator (kernels). A composite custom op is followed into the
    operators it calls."""

    def __init__(self):
        super().__init__()
        self.passes = []

    def record(self, name, reads, writes):
        self.passes.append((name, reads, writes))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        ours = func.namespace in OUR_NAMESPACES
        if ours or torch._C._dispatch_has_kernel_for_dispatch_key(func.name(), "CompositeImplicitAutograd"):
            # Into the composite, past this mode: the operators it calls are the passes (an einsum's copies).
            before = len(self.passes)
            with self:
                out = func._op_dk(kernel_key(func), *args, **kwargs) if ours else func.decompose(*args, **kwargs)
            if out is not NotImplemented and (len(self.passes) > before or not ours):
                return out
            if out is NotImplemented:
                out = func(*args, **kwargs)
        else:
            out = func(*args, **kwargs)
        reads, writes = operator_traffic(func, args, kwargs, out)
        if reads or writes:
            self.record(func.name(), reads, writes)
        return out


def kernel_key(func):
    """The dispatch key of our op's CPU kernel: C++ ops register for CPU, Python custom ops for every device."""
    has_cpu = torch._C._dispatch_has_kernel_for_dispatch_key(func.name(), "CPU")
    return torch._C.DispatchKey.CPU if has_cpu else torch._C.DispatchKey.CompositeExplicitAutograd


# Operators that overwrite their mutated argument without reading it.
WRITE_ONLY = ("copy_", "fill_", "zero_")


def storage(tensor):
    return tensor.untyped_storage().data_ptr()


def operator_traffic(func, args, kwargs, out):
    """(bytes read, bytes written) of one operator: views (outputs in an input's memory) and allocations move
    nothing; fills write; every tensor argument is read (a mutated one too, unless the operator only overwrites it) and
    every new output or mutated argument written."""
    schema = func._schema
    name = schema.name.split("::")[1]
    inputs = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
    mutated = []
    for position, argument in enumerate(schema.arguments):
        value = args[position] if position < len(args) else kwargs.get(argument.name)
        if argument.alias_info is not None and argument.alias_info.is_write and isinstance(value, torch.Tensor):
            mutated.append(value)
    input_storages = {storage(t) for t in inputs}
    fresh = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor) and storage(t) not in input_storages]
    if (not fresh and not mutated) or "empty" in name or name == "_local_scalar_dense":
        return 0, 0
    overwritten = mutated if name.endswith(WRITE_ONLY) or schema.overload_name == "out" else []
    # new_zeros / zeros_like take a tensor for its dtype and device only
    factory = name.startswith("new_") or name.endswith("_like")
    read = [] if factory else [t for t in inputs if not any(t is o for o in overwritten)]
    return sum(map(distinct_bytes, read)), sum(map(distinct_bytes, fresh + mutated))


def stored_and_loaded(kernel):
    """The pointer arguments a Triton kernel's source stores to (tl.store / tl.atomic_*) and loads from."""
    source = _jit_function(kernel).src
    return (set(re.findall(r"tl\.(?:store|atomic_\w+)\(\s*(\w+)", source)),
            set(re.findall(r"tl\.load\(\s*(\w+)", source)))


class LaunchPasses:
    """Takes Triton launches (kernel_resources.launches_recorded appends them) as passes of ``recorder``:
    the tensors a kernel's source stores to are written; the others, and a stored one the kernel itself
    also loads, are read."""

    def __init__(self, recorder):
        self.recorder = recorder

    def append(self, launch):
        name, kernel, args, kwargs = launch
        stored, loaded = stored_and_loaded(kernel)
        named = {**dict(zip(_jit_function(kernel).arg_names, args)), **kwargs}
        tensors = {n: t for n, t in named.items() if isinstance(t, torch.Tensor)}
        self.recorder.record(f"triton {name}",
                             sum(distinct_bytes(t) for n, t in tensors.items() if n not in stored or n in loaded),
                             sum(distinct_bytes(t) for n, t in tensors.items() if n in stored))


def trace(backend_name, layout, in_channels, out_channels, resolution, unfold_output, batch, dtype):
    """(forward passes, backward passes) of one StyledConv on ``backend_name``."""
    x, weight, styles, noise, strength, bias = layer_inputs(batch, in_channels, out_channels, resolution, dtype,
                                                            device="cpu", memory_format=layout)
    noise.requires_grad_(False)
    inputs = (x, weight, styles, strength, bias)
    recorder = PassRecorder()
    triton = launches_recorded(LaunchPasses(recorder)) if backend_name == "triton" else contextlib.nullcontext()
    with triton, recorder:
        out = ops.styled_conv2d(x, weight, styles, noise, strength, bias, unfold_output=unfold_output,
                                backend=backend_name)
        forward = list(recorder.passes)
        grad = torch.ones_like(out)
        recorder.passes.clear()
        torch.autograd.grad(out, inputs, grad)
    return forward, recorder.passes


def totals(passes):
    return sum(r for _, r, _ in passes), sum(w for _, _, w in passes)


def minimum(in_channels, out_channels, resolution, batch, dtype):
    """(forward, backward) bytes of a design that reads each input once and writes each output once; the
    backward reads the output gradient, the input, weight, styles, noise, strength, bias and the saved
    output (the activation's slope) and writes the five gradients."""
    size = torch.tensor([], dtype=dtype).element_size()
    x = batch * in_channels * resolution ** 2 * size
    y = batch * out_channels * resolution ** 2 * size
    weight = out_channels * in_channels * 9 * size
    styles, noise, bias = batch * in_channels * size, batch * resolution ** 2 * size, out_channels * size
    parameters = weight + styles + size + bias
    forward = x + parameters + noise + y
    backward = (2 * y + x + parameters + noise) + (x + parameters)
    return forward, backward


def ledger(batch, dtype, designs=DESIGNS, layers=LAYERS, progress=None):
    """One row per layer: for each design and the minimum, (read + written) MB of the forward and backward at
    ``batch``, from traces at batch 2 and 3 (affine in the batch)."""
    rows = []
    for index, (in_channels, out_channels, resolution) in enumerate(layers):
        unfold_output = index % 2 == 0
        row = {"in_channels": in_channels, "out_channels": out_channels, "resolution": resolution,
               "unfold_output": unfold_output, "forward_mb": {}, "backward_mb": {}, "passes": {}}
        for column, backend_name, layout in designs:
            measured = [trace(backend_name, layout, in_channels, out_channels, resolution, unfold_output, b, dtype)
                        for b in (2, 3)]
            for phase, key in ((0, "forward_mb"), (1, "backward_mb")):
                two, three = (sum(totals(m[phase])) for m in measured)
                row[key][column] = (two + (three - two) * (batch - 2)) / MB
            row["passes"][column] = {phase: [name for name, *_ in measured[0][i]]
                                     for i, phase in enumerate(("forward", "backward"))}
            if progress:
                progress()
        forward, backward = minimum(in_channels, out_channels, resolution, batch, dtype)
        row["forward_mb"]["minimum"], row["backward_mb"]["minimum"] = forward / MB, backward / MB
        rows.append(row)
    return rows


def markdown(report):
    rows = report["layers"]
    names = list(rows[0]["forward_mb"])
    lines = [f"# Byte ledger: PixelFolder-256's StyledConvs, batch {report['batch']}, {report['dtype']}", "",
             f"MB read + written per layer, counted from each design's code path (see the module docstring); "
             f"torch {report['torch']}; {report['date']}. The last columns: each design over the minimum.", ""]
    for key, what in (("forward_mb", "Forward"), ("backward_mb", "Backward")):
        lines += [f"## {what}", "", "| C_in -> C_out @ res | unfold | " + " | ".join(names) + " | "
                  + " | ".join(f"{n} / min" for n in names[:-1]) + " |",
                  "|---|---|" + "---:|" * (2 * len(names) - 1)]
        for row in rows:
            values = row[key]
            lines.append(f"| {row['in_channels']} -> {row['out_channels']} @ {row['resolution']} | "
                         f"{'yes' if row['unfold_output'] else 'no'} | "
                         + " | ".join(f"{values[n]:,.0f}" for n in names) + " | "
                         + " | ".join(f"{values[n] / values['minimum']:.2f}x" for n in names[:-1]) + " |")
        total = {n: sum(row[key][n] for row in rows) for n in names}
        lines.append("| all 12 | | " + " | ".join(f"**{total[n]:,.0f}**" for n in names) + " | "
                     + " | ".join(f"**{total[n] / total['minimum']:.2f}x**" for n in names[:-1]) + " |")
        lines += ["", "Per image over the 12 layers: " + ", ".join(
            f"{n} {total[n] / report['batch']:.0f} MB" for n in names), ""]
    lines += ["## Passes of the largest layer (batch 2 trace)", ""]
    largest = max(rows, key=lambda row: row["forward_mb"]["minimum"])
    for column, phases in largest["passes"].items():
        for phase, passes in phases.items():
            lines.append(f"- {column}, {phase}: " + ", ".join(passes))
    return "\n".join(lines)


def main(argv=None):
    parser = cli.CommandLineParser(prog="python -m benchmarks.byte_ledger", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=cli.output_folder,
                        help="folder for byte_ledger.json and byte_ledger.md")
    parser.add_argument("--batch", type=cli.integer(2), default=32)
    parser.add_argument("--dtype", choices=DTYPES, default="bf16")
    args = parser.parse_args(argv)
    from tqdm import tqdm

    os.makedirs(args.out, exist_ok=True)
    with tqdm(total=len(LAYERS) * len(DESIGNS), desc="tracing StyledConvs") as bar:
        layers = ledger(args.batch, DTYPES[args.dtype], progress=bar.update)
    report = {**environment(torch.device("cpu")), "batch": args.batch, "dtype": args.dtype, "layers": layers}
    write_results(args.out, "byte_ledger", report, markdown(report))
    return report


if __name__ == "__main__":
    main()
