"""What the compiler says about every GPU kernel, without a GPU: registers, spills, shared memory,
tensor-core instructions and calls to the 64-bit integer division routines, for every CUDA kernel in
csrc/cuda (each template instance) and every Triton kernel in pixelfolder_ops/triton in each of its
autotune configs, compiled ahead of time for one architecture. Problems: spills, shared memory over
the block limit, and any call to a 64-bit division routine (dozens of instructions per element)
outside the 64-bit index instances that the CUDA kernels keep for tensors of 2^31 elements and more.

    python -m benchmarks.kernel_resources --json benchmarks/results/kernel_resources_sm90.json
        [--arch sm_90] [--dtypes bfloat16,float32,float32-ieee] [--only cuda|triton]

Writes FILE and, beside it, the Markdown table (FILE with .md instead of .json).

The Triton kernels are compiled with the arguments PixelFolder-256 really launches them with: its
forward and backward run once per dtype on the CPU with every Triton launch recorded instead of run,
so each distinct specialization (argument types, constants, alignment) is compiled in every config
its autotuner may pick. ``float32`` runs TF32 dots, as PyTorch's default cuDNN TF32 switch makes them;
``float32-ieee`` is float32 with that switch off. ``float16`` compiles like bfloat16 but is not in the
default: recording its launches runs PyTorch's float16 CPU convolutions, which take many minutes.

Tools: nvcc from the CUDA toolkit for the CUDA sources; Triton's own ptxas, nvdisasm and cuobjdump
(triton/backends/nvidia/bin) for the rest.
"""
import argparse
import contextlib
import functools
import importlib
import json
import os
import pkgutil
import re
import runpy
import shutil
import subprocess
import sys
import tempfile
import time
import unittest.mock
from concurrent.futures import ThreadPoolExecutor

import torch

from training import extras

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CUDA_SOURCES_DIR = os.path.join(ROOT, "csrc", "cuda")

# Shared memory one block may use (bytes; the opt-in maximum, cudaDevAttrMaxSharedMemoryPerBlockOptin,
# which is what Triton checks a kernel against before launching it) and the tensor-core instructions
# a GEMM should compile to, per architecture.
ARCHS = {
    "sm_80": {"capability": 80, "max_shared_bytes": 163 * 1024, "tensor_core_opcode": "HMMA"},
    "sm_90": {"capability": 90, "max_shared_bytes": 227 * 1024, "tensor_core_opcode": "HGMMA"},
}
DTYPES = {"bfloat16": (torch.bfloat16, True), "float16": (torch.float16, True), "float32": (torch.float32, True),
          "float32-ieee": (torch.float32, False)}  # (dtype, TF32 allowed)
CUDA_TYPE_NAMES = {"c10::BFloat16": "bfloat16", "c10::Half": "float16", "float": "float32", "double": "float64"}

# PixelFolder-256's batch when its launches are recorded: 2, so that no batch-sized argument equals 1
# (Triton specializes integers equal to 1), as at a real training or inference batch.
RECORD_BATCH = 2


@functools.cache
def _toolkit():
    """pixelfolder_ops/extension/_toolkit.py, read as setup.py reads it: importing pixelfolder_ops.extension
    would load (and the first time build) the CPU extension."""
    return runpy.run_path(os.path.join(ROOT, "pixelfolder_ops", "extension", "_toolkit.py"))


def nvcc_path():
    """nvcc of the CUDA toolkit the extension build uses, or None."""
    home, _ = _toolkit()["find_cuda_home"]()
    return home and os.path.join(home, "bin", "nvcc")


def default_capabilities():
    """The architectures the extension is built for when no GPU is visible (80, 90)."""
    return tuple(int(float(arch) * 10) for arch in _toolkit()["DEFAULT_CUDA_ARCHS"].split(";"))


def nvcc_command(source, output, capabilities=None, cubin=False):
    """nvcc compiling one csrc/cuda source as the extension build does: an object file with SASS for
    each capability (default: the build's default architectures), or (``cubin``) the device code alone
    for one capability, without host compilation."""
    from torch.utils import cpp_extension

    capabilities = capabilities or default_capabilities()
    if cubin:
        (capability,) = capabilities
        targets = ["-cubin", f"-arch=sm_{capability}"]
    else:
        targets = ["-c"] + [flag for c in capabilities for flag in ("-gencode", f"arch=compute_{c},code=sm_{c}")]
    include = cpp_extension.include_paths()  # torch's headers (the CPU wheel ships the CUDA ones too)
    return [nvcc_path(), *targets, source, "-o", output, "-std=c++20", "--expt-relaxed-constexpr", "-O3",
            # The CPU wheel lacks the CMake-generated c10/cuda macros header; a CUDA wheel has it.
            "-DC10_CUDA_NO_CMAKE_CONFIGURE_FILE",
            # The flags torch's CUDAExtension compiles with.
            "-D__CUDA_NO_HALF_OPERATORS__", "-D__CUDA_NO_HALF_CONVERSIONS__", "-D__CUDA_NO_BFLOAT16_CONVERSIONS__",
            "-D__CUDA_NO_HALF2_OPERATORS__", "-I", os.path.join(ROOT, "csrc"),
            *[flag for path in include for flag in ("-isystem", path)]]


def triton_tool(name):
    """A CUDA binary tool that ships with Triton (ptxas, nvdisasm, cuobjdump), or None."""
    try:
        import triton
    except ImportError:
        return None
    path = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)
    return path if os.path.isfile(path) else None


def missing_tools(parts, interpreted_ok=False):
    """Why the given parts ("cuda", "triton") cannot be compiled here: a list of sentences. With
    ``interpreted_ok``, TRITON_INTERPRET=1 in this process does not count (a caller compiling in a fresh one)."""
    missing, install_triton = [], extras.install_command("triton")
    if "cuda" in parts and not (nvcc_path() and os.path.isfile(nvcc_path())):
        missing.append("nvcc (a CUDA toolkit) is needed for the CUDA kernels and none was found")
    if "triton" in parts and not (triton_tool("ptxas") and triton_tool("nvdisasm")):
        missing.append(f"Triton with its NVIDIA tools ({install_triton}) is needed for the Triton kernels")
    if "triton" in parts and not interpreted_ok and os.environ.get("TRITON_INTERPRET") == "1":
        missing.append("TRITON_INTERPRET=1 is set: Triton's kernels would be interpreted, not compiled; unset it")
    if "cuda" in parts and not triton_tool("nvdisasm"):
        missing.append(f"nvdisasm, shipped with Triton ({install_triton}), is needed to read the CUDA kernels' SASS")
    return missing


# --- What ptxas and the disassembler say ------------------------------------------------------------

_PTXAS_ENTRY = re.compile(r"ptxas\S* info\s*: Compiling entry function '([^']+)' for '(\w+)'")
_PTXAS_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_PTXAS_REGISTERS = re.compile(r"Used (\d+) registers")
_PTXAS_SHARED = re.compile(r"(\d+) bytes smem")


def parse_ptxas_log(log):
    """{function: {arch, registers, stack_bytes, spill_store_bytes, spill_load_bytes, static_shared_bytes}}
    from ``ptxas -v`` output."""
    functions, current = {}, None
    for line in log.splitlines():
        entry = _PTXAS_ENTRY.search(line)
        if entry:
            current = functions.setdefault(entry.group(1), {"arch": entry.group(2)})
            continue
        if current is None:
            continue
        frame = _PTXAS_FRAME.search(line)
        if frame:
            current.update(stack_bytes=int(frame.group(1)), spill_store_bytes=int(frame.group(2)),
                           spill_load_bytes=int(frame.group(3)))
        registers = _PTXAS_REGISTERS.search(line)
        if registers:
            shared = _PTXAS_SHARED.search(line)
            current.update(registers=int(registers.group(1)), static_shared_bytes=int(shared.group(1)) if shared else 0)
    return functions


_SASS_SECTION = re.compile(r"^//-+ \.text\.(\S+) +-+$", re.MULTILINE)
# The SASS opcodes of the tensor-core matrix instructions: HGMMA is Hopper's wgmma, HMMA the mma.sync of
# Volta to Hopper.
_TENSOR_CORE = re.compile(r"\b(HGMMA|HMMA)\.")
# A 64-bit integer division or remainder that the hardware cannot do in one instruction compiles to a
# call of one of these subroutines ($__internal_<n>_$__cuda_sm20_div_s64 and the like): dozens of
# instructions per call.
_INT64_DIVISION_CALL = re.compile(r"CALL\S*\s+`?\(?\$?(__internal_\d+_\$__cuda_sm20_(?:div|rem)_[su]64)")


def sass_summary(cubin_path):
    """{function: {hgmma, hmma, int64_division_calls, int64_division_routines}} from the cubin's SASS."""
    sass = subprocess.run([triton_tool("nvdisasm"), "-c", cubin_path], capture_output=True, text=True,
                          check=True).stdout
    pieces = _SASS_SECTION.split(sass)
    summary = {}
    for name, text in zip(pieces[1::2], pieces[2::2]):
        tensor_core = _TENSOR_CORE.findall(text)
        routines = [re.sub(r"__internal_\d+_\$", "", r) for r in _INT64_DIVISION_CALL.findall(text)]
        summary[name] = {"hgmma": tensor_core.count("HGMMA"), "hmma": tensor_core.count("HMMA"),
                         "int64_division_calls": len(routines), "int64_division_routines": sorted(set(routines))}
    return summary


def demangle(names):
    """C++ names readable; unchanged where c++filt is not installed."""
    if not names or not shutil.which("c++filt"):
        return list(names)
    out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True, check=True).stdout
    return out.splitlines()


def cuda_kernel_name(demangled):
    """'fold_kernel<c10::BFloat16, true>' from the demangled signature: return type, this package's
    namespaces and the parameter list dropped."""
    name = re.sub(r"^void ", "", demangled).replace("(anonymous namespace)::", "").replace("pixelfolder::", "")
    return name.split("(")[0]


def cuda_dtype(name):
    template = re.search(r"<([^,>]+)", name)
    return CUDA_TYPE_NAMES.get(template.group(1).strip(), template.group(1).strip()) if template else None


# The index types the kernels are instantiated with (csrc/common.h, PIXELFOLDER_DISPATCH_INDEX_TYPE): the
# last template argument, int where every offset fits in 32 bits, long (int64_t) for larger tensors.
CUDA_INDEX_BITS = {"int": 32, "long": 64}


def cuda_index_bits(name):
    """32 or 64 for a kernel instantiated with a 32- or 64-bit index type, else None."""
    template = re.search(r"<(.*)>$", name)
    return template and CUDA_INDEX_BITS.get(template.group(1).split(",")[-1].strip())


# --- CUDA ---------------------------------------------------------------------------------------------

def cuda_sources():
    return sorted(os.path.join(CUDA_SOURCES_DIR, f) for f in os.listdir(CUDA_SOURCES_DIR) if f.endswith(".cu"))


def cuda_rows(arch, sources=None, workers=None):
    """One row per kernel (template instance) of each CUDA source, compiled for ``arch``."""
    capability = ARCHS[arch]["capability"]
    sources = cuda_sources() if sources is None else sources

    def compile_one(source, scratch):
        cubin = os.path.join(scratch, os.path.basename(source) + ".cubin")
        command = nvcc_command(source, cubin, (capability,), cubin=True) + ["-Xptxas", "-v"]
        start = time.monotonic()
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode:
            raise RuntimeError(f"nvcc failed on {os.path.relpath(source, ROOT)}:\n{result.stdout}{result.stderr}")
        functions, sass = parse_ptxas_log(result.stdout + result.stderr), sass_summary(cubin)
        seconds = (time.monotonic() - start) / max(1, len(functions))
        rows = []
        for mangled, readable in zip(functions, demangle(list(functions))):
            name = cuda_kernel_name(readable)
            rows.append({"kind": "cuda", "kernel": name, "symbol": mangled,
                         "source": os.path.relpath(source, ROOT), "dtype": cuda_dtype(name),
                         "index_bits": cuda_index_bits(name),
                         **functions[mangled], "shared_bytes": functions[mangled]["static_shared_bytes"],
                         **sass[mangled], "compile_seconds": round(seconds, 2)})
        return rows

    with tempfile.TemporaryDirectory() as scratch, ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
        return [row for rows in pool.map(lambda s: compile_one(s, scratch), sources) for row in rows]


# --- Triton -------------------------------------------------------------------------------------------

def _triton_modules():
    import pixelfolder_ops.triton as package

    return [importlib.import_module(f"{package.__name__}.{m.name}") for m in pkgutil.iter_modules(package.__path__)]


def _jit_objects():
    """(module, attribute, object) of every @triton.jit / @triton.autotune object in the Triton backend."""
    from triton.runtime.autotuner import Autotuner
    from triton.runtime.jit import JITFunction

    return [(module, attribute, value) for module in _triton_modules() for attribute, value in vars(module).items()
            if isinstance(value, (Autotuner, JITFunction)) and _jit_function(value).module == module.__name__]


def _jit_function(value):
    from triton.runtime.autotuner import Autotuner

    return value.fn if isinstance(value, Autotuner) else value


def triton_kernels():
    """{kernel name: (module, object)}: the jit functions that no other jit function calls, i.e. the ones
    launched from Python."""
    objects = _jit_objects()
    sources = {attribute: _jit_function(value).src for _, attribute, value in objects}
    return {attribute: (module, value) for module, attribute, value in objects
            if not any(re.search(rf"\b{attribute}\(", src) for caller, src in sources.items() if caller != attribute)}


class _LaunchRecorder:
    """Stands in for a kernel: ``kernel[grid](*args, **kwargs)`` records the call instead of running it."""

    def __init__(self, name, kernel, launches):
        self.name, self.kernel, self.launches = name, kernel, launches

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.launches.append((self.name, self.kernel, args, kwargs))


@contextlib.contextmanager
def launches_recorded(launches):
    """Within: the Triton backend is available and every Triton kernel launch appends (kernel name, kernel,
    args, kwargs) to ``launches`` (anything with ``append``) instead of running."""
    from pixelfolder_ops import backend

    with contextlib.ExitStack() as stack:
        stack.enter_context(unittest.mock.patch.dict(backend._reasons, {"triton": None}))
        for name, (module, kernel) in triton_kernels().items():
            stack.enter_context(unittest.mock.patch.object(module, name, _LaunchRecorder(name, kernel, launches)))
        yield


def record_launches(dtype, allow_tf32, size=256, batch=RECORD_BATCH):
    """Every Triton launch of PixelFolder(size)'s forward and backward in ``dtype``, as (kernel name,
    kernel, args, kwargs), on the CPU: the kernels are replaced by recorders, so nothing runs on a GPU."""
    import models
    import pixelfolder_ops

    launches = []
    with launches_recorded(launches), torch.backends.cudnn.flags(allow_tf32=allow_tf32):
        torch.manual_seed(0)
        generator = models.PixelFolder(size).to(dtype)
        with pixelfolder_ops.use_backend("triton"):
            generator(torch.randn(batch, generator.style_dim, dtype=dtype)).float().sum().backward()
    return launches


def triton_target(arch):
    from triton.backends.compiler import GPUTarget

    return GPUTarget("cuda", ARCHS[arch]["capability"], 32)  # 32 threads per warp, as the CUDA driver reports


def configs_for(kernel, args, kwargs):
    """The configs the kernel's autotuner may pick for this launch (after its own pruning), or [None]
    for a kernel without autotune."""
    if not hasattr(kernel, "configs"):
        return [None]
    if kernel.early_config_prune is None:
        return kernel.configs
    return kernel.early_config_prune(kernel.configs, dict(zip(kernel.arg_names, args)), **kwargs)


def triton_jobs(launches, arch, kernels=None):
    """The distinct compilations behind ``launches``: each recorded specialization in each autotune
    config (a kernel without autotune in its one launch config), with how often PixelFolder launches it
    and at which shapes (the autotune key). ``kernels`` limits them to some kernel names."""
    from triton.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature

    backend = make_backend(triton_target(arch))
    jobs = {}
    for name, kernel, args, kwargs in launches:
        if kernels is not None and name not in kernels:
            continue
        function = _jit_function(kernel)
        binder = create_function_from_signature(function.signature, function.params, backend)
        for config in configs_for(kernel, args, kwargs):
            meta = {} if config is None else config.kwargs
            call_kwargs = {**kwargs, **({} if config is None else config.all_kwargs())}
            bound, specialization, options = binder(*args, **call_kwargs)
            options, signature, constants, attrs = function._pack_args(backend, call_kwargs, bound, specialization,
                                                                        options)
            key = repr((name, signature, constants, attrs, options))
            launch_constants = {path: value for path, value in constants.items()
                                if function.arg_names[path[0]] not in meta}
            job = jobs.setdefault(key, {
                "name": name, "function": function, "signature": signature, "constants": constants,
                "attrs": attrs, "options": options, "launches": 0, "shapes": [],
                # the same in every config: what the launch itself fixes
                "specialization_key": repr((name, signature, launch_constants, attrs)),
                "config": {**meta, "num_warps": options.num_warps, "num_stages": options.num_stages}})
            job["launches"] += 1
            shape = {k: bound[k] for k in getattr(kernel, "keys", ())}
            if shape and shape not in job["shapes"]:
                job["shapes"].append(shape)
    return list(jobs.values())


def _signature_dtype(signature):
    """The element type of the kernel's first tensor argument ('*bf16' -> 'bf16')."""
    return next(t[1:] for t in signature.values() if t.startswith("*"))


def triton_ptxas_log(ptx_path, arch, fp_fusion):
    """``ptxas -v`` on a Triton kernel's PTX with the options Triton's own build passes (its ptxas, its
    arch name, e.g. sm_90a): a compiled kernel may come from Triton's cache, which keeps no ptxas log."""
    from triton.backends.nvidia.compiler import get_ptxas, sm_arch_from_capability

    capability = ARCHS[arch]["capability"]
    command = [get_ptxas(capability).path, "-lineinfo", "-v", "--regAllocOptLevel=2",
               *([] if fp_fusion else ["--fmad=false"]), f"--gpu-name={sm_arch_from_capability(capability)}",
               ptx_path, "-o", ptx_path + ".o"]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return result.stdout + result.stderr


def cubin_registers(cubin_path):
    """Registers per thread of the (single) kernel in a cubin, as the build wrote it."""
    usage = subprocess.run([triton_tool("cuobjdump"), "-res-usage", cubin_path], capture_output=True, text=True,
                           check=True).stdout
    return int(re.search(r"REG:(\d+)", usage).group(1))


def compile_triton_job(job, arch):
    """One row: the job compiled by Triton for ``arch`` (or taken from Triton's cache), with what ptxas
    and the SASS say."""
    import triton
    from triton.compiler import ASTSource

    function = job["function"]
    constants = {function.arg_names[path[0]]: value for path, value in job["constants"].items()}
    start = time.monotonic()
    compiled = triton.compile(ASTSource(function, job["signature"], job["constants"], job["attrs"]),
                              target=triton_target(arch), options=job["options"].__dict__)
    seconds = time.monotonic() - start
    with tempfile.TemporaryDirectory() as scratch:
        ptx, cubin = os.path.join(scratch, "kernel.ptx"), os.path.join(scratch, "kernel.cubin")
        with open(ptx, "w") as f:
            f.write(compiled.asm["ptx"])
        with open(cubin, "wb") as f:
            f.write(compiled.asm["cubin"])
        (ptxas,) = parse_ptxas_log(triton_ptxas_log(ptx, arch, job["options"].enable_fp_fusion)).values()
        (sass,) = sass_summary(cubin).values()
        if cubin_registers(cubin) != ptxas["registers"]:
            raise RuntimeError(f"{job['name']}: ptxas run here gives {ptxas['registers']} registers, Triton's build "
                               f"{cubin_registers(cubin)}: its ptxas options have changed (see triton_ptxas_log)")
    return {"kind": "triton", "kernel": job["name"], "source": os.path.relpath(function.fn.__code__.co_filename, ROOT),
            "dtype": _signature_dtype(job["signature"]), "config": job["config"],
            "specialization": {k: v for k, v in constants.items() if k not in job["config"]},
            **ptxas, "shared_bytes": compiled.metadata.shared + ptxas["static_shared_bytes"], **sass,
            "launches": job["launches"], "shapes": job["shapes"], "compile_seconds": round(seconds, 2)}


def triton_rows(arch, dtypes, kernels=None, progress=None):
    """Rows for every Triton kernel (or those named in ``kernels``) at PixelFolder-256's launches in each dtype."""
    rows = []
    for dtype_name in dtypes:
        dtype, allow_tf32 = DTYPES[dtype_name]
        jobs = triton_jobs(record_launches(dtype, allow_tf32), arch, kernels)
        for job in jobs:
            row = {**compile_triton_job(job, arch), "dtype": dtype_name}
            rows.append(row)
            if progress:
                progress(row)
    return rows


# --- The report ---------------------------------------------------------------------------------------

def check(row, arch):
    """The problems of one row: spills, shared memory beyond the block limit, calls to the 64-bit integer
    division routines (except in a kernel's 64-bit index instance, which only tensors with offsets of
    2^31 and more use)."""
    problems = []
    if row["int64_division_calls"] and row.get("index_bits") != 64:
        problems.append(f"{row['int64_division_calls']} calls to the 64-bit integer division routines "
                        f"({', '.join(row['int64_division_routines'])}): index in 32 bits where offsets fit")
    if row["spill_store_bytes"] or row["spill_load_bytes"]:
        problems.append(f"spills ({row['spill_store_bytes']} B stored, {row['spill_load_bytes']} B loaded)")
    if row["shared_bytes"] > ARCHS[arch]["max_shared_bytes"]:
        problems.append(f"needs {row['shared_bytes']} B of shared memory, over {arch}'s "
                        f"{ARCHS[arch]['max_shared_bytes']} B per block")
    return problems


def _config_text(config):
    meta = " ".join(f"{k.replace('BLOCK_', '')}={v}" for k, v in config.items() if not k.startswith("num_"))
    return f"{meta} w{config['num_warps']} s{config['num_stages']}".strip()


def _specialization_text(specialization):
    """The kernel's own compile-time switches (upper-case constexprs), not the specialized strides."""
    return " ".join(f"{k}={v}" for k, v in specialization.items() if k.isupper())


def markdown(report):
    arch = report["arch"]
    lines = [f"# GPU kernel resources, {arch}", "",
             f"Compiled without a GPU on {report['date']}: nvcc {report['nvcc']}, Triton {report['triton']}, "
             f"torch {report['torch']}. Shared memory limit per block: {ARCHS[arch]['max_shared_bytes']} B. "
             f"Triton kernels at PixelFolder-256's launches (batch {RECORD_BATCH}) in every autotune config.", "",
             f"Problems: {len(report['problems']) or 'none'}."]
    lines += [f"- {problem}" for problem in report["problems"]]
    header = ("| kernel | source | dtype | {} | regs | spill st/ld B | smem B | HGMMA | HMMA | int64 div calls |",
              "|---|---|---|---|---:|---:|---:|---:|---:|---:|")
    for kind, extra, describe in (("cuda", "arch", lambda r: r["arch"]),
                                  ("triton", "config; specialization (launches)",
                                   lambda r: f"{_config_text(r['config'])}; {_specialization_text(r['specialization'])}"
                                             f" ({r['launches']})")):
        rows = [r for r in report["kernels"] if r["kind"] == kind]
        if not rows:
            continue
        lines += ["", f"## {'CUDA (csrc/cuda)' if kind == 'cuda' else 'Triton (pixelfolder_ops/triton)'}", "",
                  header[0].format(extra), header[1]]
        for r in rows:
            division = str(r["int64_division_calls"]) + (f" ({', '.join(r['int64_division_routines'])})"
                                                         if r["int64_division_calls"] else "")
            lines.append(f"| `{r['kernel']}` | {os.path.basename(r['source'])} | {r['dtype']} | {describe(r)} | "
                         f"{r['registers']} | {r['spill_store_bytes']}/{r['spill_load_bytes']} | {r['shared_bytes']} | "
                         f"{r['hgmma']} | {r['hmma']} | {division} |")
    return "\n".join(lines) + "\n"


def nvcc_version():
    if not (nvcc_path() and os.path.isfile(nvcc_path())):
        return None
    text = subprocess.run([nvcc_path(), "--version"], capture_output=True, text=True).stdout
    found = re.search(r"release ([\d.]+)", text)
    return found and found.group(1)


def build_report(arch, parts, dtypes, progress=None):
    import triton

    from benchmarks.timing import environment

    rows = (cuda_rows(arch) if "cuda" in parts else []) + \
        (triton_rows(arch, dtypes, progress=progress) if "triton" in parts else [])
    env = environment(torch.device("cpu"))
    report = {"arch": arch, "date": env["date"], "torch": env["torch"], "triton": triton.__version__,
              "nvcc": nvcc_version(), "dtypes": list(dtypes), "parts": list(parts), "kernels": rows}
    report["problems"] = [f"{r['kernel']} ({r['source']}, {r['dtype']}"
                          + (f", {_config_text(r['config'])}" if r["kind"] == "triton" else "") + f"): {problem}"
                          for r in rows for problem in check(r, arch)]
    if "triton" in parts:
        launched = {r["kernel"] for r in rows if r["kind"] == "triton"}
        report["problems"] += [f"{name}: never launched by PixelFolder-256, so not compiled"
                               for name in sorted(set(triton_kernels()) - launched)]
    return report


def _fail(message):
    print(f"kernel_resources: {message}", file=sys.stderr)
    raise SystemExit(2)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", required=True, help="write the report here (and the Markdown table beside it)")
    parser.add_argument("--arch", default="sm_90", help=f"target architecture: {', '.join(ARCHS)} (default sm_90)")
    parser.add_argument("--dtypes", default="bfloat16,float32,float32-ieee",
                        help=f"Triton kernels' dtypes, comma-separated: {', '.join(DTYPES)}")
    parser.add_argument("--only", choices=("cuda", "triton"), help="compile only the CUDA or only the Triton kernels")
    args = parser.parse_args(argv)
    if args.arch not in ARCHS:
        _fail(f"--arch must be one of {', '.join(ARCHS)}, got {args.arch!r}")
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    unknown = [d for d in dtypes if d not in DTYPES]
    if unknown or not dtypes:
        _fail(f"--dtypes must be a comma-separated subset of {', '.join(DTYPES)}, got {args.dtypes!r}")
    folder = os.path.dirname(os.path.abspath(args.json))
    if not os.path.isdir(folder):
        _fail(f"--json: the folder {folder} does not exist")
    if not args.json.endswith(".json"):
        _fail(f"--json must name a .json file (the table goes beside it as .md), got {args.json!r}")
    parts = [args.only] if args.only else ["cuda", "triton"]
    missing = missing_tools(parts)
    if missing:
        _fail("; ".join(missing))

    def progress(row):
        print(f"{row['kernel']} {row['dtype']} {_config_text(row['config'])}: {row['registers']} registers, "
              f"{row['spill_store_bytes']} B spilled, {row['shared_bytes']} B shared, {row['hgmma']} HGMMA "
              f"({row['compile_seconds']:.0f} s)", flush=True)

    report = build_report(args.arch, parts, dtypes, progress)
    with open(args.json, "w") as f:
        json.dump(report, f, indent=2)
    table = markdown(report)
    with open(args.json[:-len(".json")] + ".md", "w") as f:
        f.write(table)
    print(table)
    if report["problems"]:
        raise SystemExit(1)
    return report


if __name__ == "__main__":
    main()
