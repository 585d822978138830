"""The CUDA toolkit and target architectures, found the same way by setup.py (which reads this file
without importing the package) and by the JIT build.

PyTorch guesses CUDA_HOME as the folder above the first ``nvcc`` on PATH; when that ``nvcc`` is a
wrapper script outside the toolkit (``/usr/local/bin/nvcc`` execing ``/usr/local/cuda-13.0/bin/nvcc``),
the guess is wrong and linking fails with ``cannot find -lcudart``. nvcc itself knows where it lives:
its ``-dryrun`` output names the toolkit as ``TOP``, whatever wrapper or link it was reached through.
"""
import glob
import os
import re
import shutil
import subprocess

# Ampere and Hopper, when no GPU is visible to choose for. torch's own default would be the visible
# GPUs' architectures, which fails with an IndexError when there are none (a cluster's login node).
DEFAULT_CUDA_ARCHS = "8.0;9.0"


def _is_toolkit(path):
    return bool(path) and os.path.isfile(os.path.join(path, "bin", "nvcc")) and \
        os.path.isfile(os.path.join(path, "include", "cuda_runtime.h"))


def _nvcc_toolkit(nvcc):
    """The toolkit folder the ``nvcc`` at this path runs from, as nvcc reports it, or None."""
    try:
        dryrun = subprocess.run([nvcc, "-dryrun", "-E", "-x", "cu", os.devnull], capture_output=True, text=True,
                                timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    top = re.search(r"^#\$ TOP=(.+)$", dryrun.stdout + dryrun.stderr, re.MULTILINE)
    return os.path.realpath(top.group(1).strip()) if top else None


def _version_order(path):
    """cuda-12.10 after cuda-12.9: numeric parts compared as numbers."""
    return [int(part) for part in re.findall(r"\d+", os.path.basename(path))]


def find_cuda_home():
    """(toolkit folder, how it was found) or (None, why none was found). Looks at $CUDA_HOME and
    $CUDA_PATH, then the nvcc on PATH (where it really runs from), then the usual install prefixes."""
    rejected = []
    for variable in ("CUDA_HOME", "CUDA_PATH"):
        value = os.environ.get(variable)
        if _is_toolkit(value):
            return value, f"${variable}"
        if value:
            rejected.append(f"${variable}={value} holds no bin/nvcc and include/cuda_runtime.h")
    nvcc = shutil.which("nvcc")
    if nvcc:
        home = _nvcc_toolkit(nvcc)
        if _is_toolkit(home):
            return home, f"the nvcc on PATH, {nvcc}"
        rejected.append(f"the nvcc on PATH, {nvcc}, names no toolkit")
    prefixes = ["/usr/local/cuda"] + sorted(glob.glob("/usr/local/cuda-*"), key=_version_order, reverse=True) + \
        ["/opt/cuda"]
    for prefix in prefixes:
        if _is_toolkit(prefix):
            return os.path.realpath(prefix), f"the usual install prefix {prefix}"
    return None, "no CUDA toolkit found (" + "; ".join(rejected + ["none under /usr/local/cuda*, /opt/cuda"]) + \
        "): set CUDA_HOME to the folder holding bin/nvcc and include/"


def use_cuda_home(home):
    """Points PyTorch's extension builder at the toolkit folder ``home``."""
    from torch.utils import cpp_extension

    cpp_extension.CUDA_HOME = home


def cuda_arch_list():
    """TORCH_CUDA_ARCH_LIST if set, else the visible GPUs' architectures, else Ampere and Hopper."""
    if os.environ.get("TORCH_CUDA_ARCH_LIST"):
        return os.environ["TORCH_CUDA_ARCH_LIST"]
    import torch

    if torch.cuda.is_available():
        capabilities = {torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())}
        return ";".join(f"{major}.{minor}" for major, minor in sorted(capabilities))
    return DEFAULT_CUDA_ARCHS
