"""Loads the compiled kernels: the installed ``pixelfolder_ops._C`` if it was built from the sources
beside it (csrc/, shipped inside the package or at the root of a clone) with the current flags, else a
JIT build of those sources with ninja.

A JIT build lives in a folder named by a digest of everything it depends on (the sources, the
flags, Python, PyTorch, the variant: cpu, cuda or cuda_emulation), under $TORCH_EXTENSIONS_DIR (else
PyTorch's default cache): two clones of the same commit share a build, and different sources never
overwrite each other. A failed CUDA build falls back to the CPU kernels alone. Nothing here raises:
``load()`` returns why a backend is missing, for ``unavailable_reason``.
"""
import contextlib
import functools
import glob
import hashlib
import importlib.util
import json
import os
import shutil
import sys

import torch

from . import _toolkit
from ._flags import BUILD_RECORD, CXX_FLAGS, LINK_FLAGS, NVCC_FLAGS, digest, flags_digest, sources_digest

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Installed copies carry the sources inside the package; a clone has them next to it.
_SOURCE_DIRS = (os.path.join(_PACKAGE_DIR, "csrc"), os.path.join(os.path.dirname(_PACKAGE_DIR), "csrc"))
EMULATION_ENV_VAR = "PIXELFOLDER_CUDA_EMULATION"
# In a JIT build's folder: its key's parts, written once the build loaded (the folder is complete),
# and the error of a build that failed (not retried with the same key).
_JIT_RECORD = "build.json"
_JIT_ERROR_LOG = "build_error.log"


class Extension:
    """The loaded extension module, or why there is none; ``cuda_error`` says why it has no CUDA kernels."""

    def __init__(self, module=None, error=None, cuda_error=None):
        self.module, self.error, self.cuda_error = module, error, cuda_error

    @property
    def backends(self):
        return tuple(self.module.build_info()["backends"]) if self.module else ()


def _notice(message):
    print(f"pixelfolder_ops: {message}", file=sys.stderr, flush=True)


def source_dir():
    """The csrc/ folder to build from, or None."""
    return next((d for d in _SOURCE_DIRS if os.path.isfile(os.path.join(d, "ops.cpp"))), None)


def emulation_requested():
    return os.environ.get(EMULATION_ENV_VAR) == "1"


def build_directory(variant, key_parts):
    """(module name, folder, created if new) of the JIT build whose inputs are ``key_parts``."""
    from torch.utils import cpp_extension

    name = f"pixelfolder_ops_{variant}_{digest(key_parts)[:16]}"
    directory = os.path.join(os.environ.get("TORCH_EXTENSIONS_DIR") or cpp_extension.get_default_build_root(), name)
    os.makedirs(directory, exist_ok=True)
    return name, directory


def _key_parts(sources_root, variant, **specifics):
    return {"sources": sources_digest(sources_root), "flags": flags_digest(torch.__version__), "variant": variant,
            "cxx": os.environ.get("CXX", "c++"), **specifics}


def _import_built(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def _environment(**values):
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                del os.environ[name]
            else:
                os.environ[name] = value


def _build(name, directory, key_parts, sources_root, sources, what, cflags=(), cuda_cflags=(), ldflags=(),
           with_cuda=False):
    """The extension built in ``directory`` (built now if it is not there yet), or why it failed."""
    from torch.utils import cpp_extension

    library = os.path.join(directory, name + ".so")
    record = os.path.join(directory, _JIT_RECORD)
    error_log = os.path.join(directory, _JIT_ERROR_LOG)
    try:
        if os.path.isfile(record) and os.path.isfile(library):
            # Built before from these very sources and flags, perhaps in another clone: load it as is,
            # without ninja (its build file names the other clone's paths and would rebuild).
            return Extension(_import_built(name, library))
        if os.path.isfile(error_log):
            return Extension(error=f"building {what} failed (log: {error_log}); it is not retried with the same "
                                   f"sources and flags: delete {directory} to try again")
        _notice(f"building {what} from {sources_root} into {directory}; this takes a while, once")
        module = cpp_extension.load(
            name, sources, extra_cflags=list(cflags), extra_cuda_cflags=list(cuda_cflags), extra_ldflags=list(ldflags),
            extra_include_paths=[sources_root], build_directory=directory, with_cuda=with_cuda, verbose=False)
    except Exception as error:  # a failed build must not break import pixelfolder_ops
        with open(error_log, "w") as log:
            log.write(f"{type(error).__name__}: {error}\n")
        return Extension(error=f"building {what} failed (log: {error_log})")
    with open(record + ".tmp", "w") as record_file:
        json.dump(key_parts, record_file, indent=1, sort_keys=True)
    os.replace(record + ".tmp", record)
    return Extension(module)


def _build_tools_problem(sources_root):
    """Why no JIT build can run here, or None."""
    from torch.utils import cpp_extension

    if sources_root is None:
        return "the compiled extension pixelfolder_ops._C is not installed and the C++ sources (csrc/) to build it " \
               "are not found"
    if not cpp_extension.is_ninja_available():
        return "building the compiled extension from csrc/ needs ninja, which is not found (pip install ninja)"
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        return f"building the compiled extension from csrc/ needs a C++ compiler, but '{compiler}' is not found (set CXX)"
    return None


def _torch_without_cuda():
    return f"PyTorch {torch.__version__} is built without CUDA" if torch.version.cuda is None else None


def _cuda_toolkit_or_reason(cuda_sources):
    """((toolkit folder, how found), None) when the JIT build should compile the CUDA kernels, else
    (None, why not)."""
    if _torch_without_cuda():
        return None, _torch_without_cuda()
    if os.environ.get("PIXELFOLDER_CUDA") == "0":
        return None, "PIXELFOLDER_CUDA=0 leaves the CUDA kernels out"
    if not cuda_sources:
        return None, "the CUDA sources (csrc/cuda) are not found"
    home, how = _toolkit.find_cuda_home()
    if home is None:
        return None, f"the CUDA kernels cannot be built: {how}"
    return (home, how), None


def _jit_build(sources_root):
    cpu_sources = sorted(glob.glob(os.path.join(sources_root, "*.cpp")) +
                         glob.glob(os.path.join(sources_root, "cpu", "*.cpp")))
    cuda_sources = sorted(glob.glob(os.path.join(sources_root, "cuda", "*.cu")))
    toolkit, cuda_error = _cuda_toolkit_or_reason(cuda_sources)
    if toolkit is not None:
        (home, how), archs = toolkit, _toolkit.cuda_arch_list()
        key_parts = _key_parts(sources_root, "cuda", cuda_home=home, cuda_archs=archs)
        name, directory = build_directory("cuda", key_parts)
        defines = ["-DPIXELFOLDER_WITH_CUDA"]
        _toolkit.use_cuda_home(home)
        with _environment(TORCH_CUDA_ARCH_LIST=archs):
            extension = _build(name, directory, key_parts, sources_root, cpu_sources + cuda_sources,
                               f"the C++ extension with its CUDA kernels for {archs} (CUDA toolkit {home}, found from "
                               f"{how})", CXX_FLAGS + defines, NVCC_FLAGS + defines, LINK_FLAGS, with_cuda=True)
        if extension.module is not None:
            return extension
        cuda_error = extension.error
        _notice(f"{cuda_error}; building the CPU kernels alone")
    key_parts = _key_parts(sources_root, "cpu")
    name, directory = build_directory("cpu", key_parts)
    extension = _build(name, directory, key_parts, sources_root, cpu_sources, "the C++ extension", CXX_FLAGS,
                       ldflags=LINK_FLAGS)
    extension.cuda_error = cuda_error
    return extension


def _emulation_build(sources_root):
    """The CUDA kernels' bodies compiled as host C++ (pixelfolder_ops/extension/_emulation.py says how),
    registered for the CPU dispatch key."""
    from . import _emulation

    with open(_emulation.__file__, "rb") as recipe:
        key_parts = _key_parts(sources_root, "cuda_emulation", emulation=hashlib.sha256(recipe.read()).hexdigest())
    name, directory = build_directory("cuda_emulation", key_parts)
    spec = _emulation.build_spec(sources_root, directory)
    extension = _build(name, directory, key_parts, sources_root, spec["sources"],
                       "the C++ extension with the CUDA kernels emulated on the CPU", CXX_FLAGS + spec["cflags"],
                       ldflags=LINK_FLAGS + spec["ldflags"])
    extension.cuda_error = f"{EMULATION_ENV_VAR}=1: the CUDA kernels run on the CPU, as the cpu backend"
    return extension


def _installed_extension(sources_root):
    """(the installed pixelfolder_ops._C, None) when it was built from ``sources_root`` with the current
    flags; else (None, why it is not used), the reason None when there is no installed _C."""
    spec = importlib.util.find_spec("pixelfolder_ops._C")
    if spec is None:
        return None, None
    installed = f"the installed pixelfolder_ops._C ({spec.origin})"
    if sources_root is not None:
        record_path = os.path.join(os.path.dirname(spec.origin), BUILD_RECORD)
        try:
            with open(record_path) as record_file:
                record = json.load(record_file)
        except (OSError, ValueError):
            return None, f"{installed} has no build record ({record_path}) saying which sources it was built from"
        if record.get("sources") != sources_digest(sources_root):
            return None, f"{installed} was built from other sources than {sources_root}"
        if record.get("flags") != flags_digest(torch.__version__):
            return None, (f"{installed} was built with other compiler flags or for another PyTorch or Python "
                          f"(PyTorch {record.get('torch')}, here {torch.__version__})")
    try:
        from .. import _C
    except ImportError as error:
        return None, f"{installed} cannot be imported ({error})"
    return Extension(_C), None


@functools.lru_cache(maxsize=None)
def load():
    """The extension, loaded once per process (importing it registers torch.ops.pixelfolder_ops)."""
    sources_root = source_dir()
    if not emulation_requested():
        installed, why_not = _installed_extension(sources_root)
        if installed is not None:
            return installed
        if why_not is not None:
            _notice(f"{why_not}; using a build of those sources instead")
    problem = _build_tools_problem(sources_root)
    if problem is not None:
        return Extension(error=problem)
    return _emulation_build(sources_root) if emulation_requested() else _jit_build(sources_root)


def unavailable_reason(name):
    extension = load()
    if extension.module is None:
        return extension.error
    if name == "cuda":
        if "cuda" not in extension.backends:
            return extension.cuda_error or _torch_without_cuda() or \
                "the installed pixelfolder_ops._C was built without its CUDA kernels"
        if not torch.cuda.is_available():
            return "no CUDA GPU is visible to PyTorch (torch.cuda.is_available() is False)"
    return None
