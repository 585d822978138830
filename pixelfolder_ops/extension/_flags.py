"""Compiler flags of the extension and the digests that identify a build, shared by setup.py (which
reads this file without importing the package) and the JIT build, so that an installed and a
JIT-built extension are the same, and a binary is used only with the sources it was built from."""
import hashlib
import json
import os
import sys

# ATen's at::parallel_for runs serially in code compiled without OpenMP: the CPU kernels need it to use
# every core. The extension then links libgomp.so.1, the one torch has already loaded.
OPENMP = ["-fopenmp"] if sys.platform.startswith("linux") else []
CXX_FLAGS = ["-O3"] + OPENMP
# No --use_fast_math: the Fourier embedding needs sin/cos accurate for large arguments.
NVCC_FLAGS = ["-O3", "--expt-relaxed-constexpr"]
LINK_FLAGS = OPENMP

# The files of csrc/ that go into a build; csrc/README.md and the like do not change a binary.
SOURCE_SUFFIXES = (".c", ".cc", ".cpp", ".cu", ".cuh", ".h", ".hpp", ".inc")
# Written by setup.py next to the installed pixelfolder_ops._C: the digests it was built with.
BUILD_RECORD = "_C.build.json"


def digest(value):
    """SHA-256 (hex) of a JSON-serialisable value."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def sources_digest(sources_root):
    """SHA-256 of every source file under ``sources_root``: relative paths and contents, so two copies
    of the same sources (two clones, a clone and its installed copy) give the same digest."""
    files = {}
    for folder, subfolders, names in os.walk(sources_root):
        subfolders.sort()
        for name in sorted(names):
            if name.endswith(SOURCE_SUFFIXES):
                path = os.path.join(folder, name)
                with open(path, "rb") as source:
                    files[os.path.relpath(path, sources_root).replace(os.sep, "/")] = \
                        hashlib.sha256(source.read()).hexdigest()
    return digest(files)


def flags_digest(torch_version):
    """SHA-256 of what, besides the sources, every build of the extension depends on: the compiler
    flags and the Python and PyTorch versions."""
    return digest({"cxx": CXX_FLAGS, "nvcc": NVCC_FLAGS, "link": LINK_FLAGS, "torch": torch_version,
                   "python": list(sys.version_info[:2])})
