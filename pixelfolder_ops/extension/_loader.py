"""Loads the compiled kernels: the installed ``pixelfolder_ops._C`` if there is one, else a JIT build of
the C++ sources (csrc/, shipped inside the package or at the root of a clone) with ninja, cached
across processes. A failure never raises: ``load()`` returns why, for ``unavailable_reason``.
"""
import functools
import glob
import os
import re
import shutil
import sys

import torch

from ._flags import CXX_FLAGS, LINK_FLAGS, NVCC_FLAGS

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Installed copies carry the sources inside the package; a clone has them next to it.
_SOURCE_DIRS = (os.path.join(_PACKAGE_DIR, "csrc"), os.path.join(os.path.dirname(_PACKAGE_DIR), "csrc"))


class Extension:
    """The loaded extension module, or why there is none."""

    def __init__(self, module=None, error=None):
        self.module, self.error = module, error

    @property
    def backends(self):
        return tuple(self.module.build_info()["backends"]) if self.module else ()


def source_dir():
    """The csrc/ folder to build from, or None."""
    return next((d for d in _SOURCE_DIRS if os.path.isfile(os.path.join(d, "ops.cpp"))), None)


def build_directory(with_cuda):
    """Where the JIT build lives: one folder per Python, PyTorch and CPU/CUDA variant, under
    $TORCH_EXTENSIONS_DIR (else PyTorch's default cache), so every process reuses it."""
    variant = f"py{sys.version_info.major}{sys.version_info.minor}_torch{torch.__version__}_{'cuda' if with_cuda else 'cpu'}"
    name = "pixelfolder_ops_" + re.sub(r"\W", "_", variant)
    from torch.utils import cpp_extension

    root = os.environ.get("TORCH_EXTENSIONS_DIR") or cpp_extension.get_default_build_root()
    return name, os.path.join(root, name)


def _jit_build():
    sources_root = source_dir()
    if sources_root is None:
        return Extension(error="the compiled extension pixelfolder_ops._C is not installed and the C++ sources "
                               "(csrc/) to build it are not found")
    from torch.utils import cpp_extension

    if not cpp_extension.is_ninja_available():
        return Extension(error="the compiled extension pixelfolder_ops._C is not installed and building it from "
                               "csrc/ needs ninja, which is not found (pip install ninja)")
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        return Extension(error=f"the compiled extension pixelfolder_ops._C is not installed and building it from "
                               f"csrc/ needs a C++ compiler, but '{compiler}' is not found (set CXX)")
    sources = sorted(glob.glob(os.path.join(sources_root, "*.cpp")) +
                     glob.glob(os.path.join(sources_root, "cpu", "*.cpp")))
    with_cuda = (torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None
                 and os.environ.get("PIXELFOLDER_CUDA") != "0")
    defines = []
    if with_cuda:
        sources += sorted(glob.glob(os.path.join(sources_root, "cuda", "*.cu")))
        defines.append("-DPIXELFOLDER_WITH_CUDA")
    name, directory = build_directory(with_cuda)
    os.makedirs(directory, exist_ok=True)
    log_path = os.path.join(directory, "build_error.log")
    if not glob.glob(os.path.join(directory, name + "*.so")):
        # A first build takes a minute or more: say so, rather than look stuck.
        print(f"pixelfolder_ops: building the C++ extension from {sources_root} into {directory} (first use)",
              file=sys.stderr, flush=True)
    try:
        module = cpp_extension.load(
            name, sources, extra_cflags=CXX_FLAGS + defines, extra_cuda_cflags=NVCC_FLAGS + defines, extra_ldflags=LINK_FLAGS,
            extra_include_paths=[sources_root], build_directory=directory, with_cuda=with_cuda, verbose=False)
    except Exception as error:  # a failed build must not break import pixelfolder_ops
        with open(log_path, "w") as log:
            log.write(f"{type(error).__name__}: {error}\n")
        return Extension(error=f"building the C++ extension from {sources_root} failed (log: {log_path})")
    if os.path.exists(log_path):
        os.remove(log_path)
    return Extension(module)


@functools.lru_cache(maxsize=None)
def load():
    """The extension, loaded once per process (importing it registers torch.ops.pixelfolder_ops)."""
    try:
        from .. import _C
    except ImportError:
        return _jit_build()
    return Extension(_C)


def unavailable_reason(name):
    extension = load()
    if extension.module is None:
        return extension.error
    if name == "cuda":
        if "cuda" not in extension.backends:
            return "the extension was built without its CUDA kernels (no nvcc or a CPU-only PyTorch at build time)"
        if not torch.cuda.is_available():
            return "no CUDA GPU is visible to PyTorch"
    return None
