"""How the compiled extension is found, built and cached (pixelfolder_ops/extension/_loader.py, _flags.py,
_toolkit.py), on small source trees that build in seconds: builds keyed by their sources and flags, the
installed binary used only with the sources it was built from, the CUDA emulation variant, the CUDA
toolkit behind a wrapper script, and a failed CUDA build that leaves the CPU kernels working."""
import importlib.machinery
import importlib.util
import json
import os
import sys
import types

import pytest
import torch

import pixelfolder_ops.extension
from pixelfolder_ops.extension import _flags, _loader, _toolkit

# A whole extension in one file: build_info() reports which copy of the sources it was built from
# (SOURCE_VERSION) and whether the emulation build's flag reached the compiler.
TINY_OPS_CPP = """\
#include <pybind11/pybind11.h>
#define SOURCE_VERSION {version}
PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {{
  module.def("build_info", [] {{
    pybind11::dict info;
    pybind11::list backends;
    backends.append("cpu");
    info["backends"] = backends;
    info["source_version"] = SOURCE_VERSION;
#ifdef TINY_EMULATED
    info["emulated"] = true;
#else
    info["emulated"] = false;
#endif
    return info;
  }});
}}
"""
needs_build_tools = pytest.mark.skipif(_loader._build_tools_problem(_loader.source_dir()) is not None,
                                       reason="needs the C++ sources, ninja and a C++ compiler")


def tiny_sources(folder, version=1):
    """A csrc/-like tree at ``folder`` (ops.cpp, a header, a README) and its path."""
    os.makedirs(os.path.join(folder, "cpu"), exist_ok=True)
    with open(os.path.join(folder, "ops.cpp"), "w") as source:
        source.write(TINY_OPS_CPP.format(version=version))
    with open(os.path.join(folder, "cpu", "helper.h"), "w") as header:
        header.write("#pragma once\n")
    with open(os.path.join(folder, "README.md"), "w") as readme:
        readme.write("notes\n")
    return str(folder)


@pytest.fixture
def extensions_dir(tmp_path, monkeypatch):
    """An empty JIT cache, a CPU-only PyTorch as far as the loader can tell, no variant forced."""
    folder = tmp_path / "torch_extensions"
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(folder))
    monkeypatch.delenv(_loader.EMULATION_ENV_VAR, raising=False)
    monkeypatch.delenv("PIXELFOLDER_CUDA", raising=False)
    monkeypatch.setattr(torch.version, "cuda", None)
    return folder


def builds_in(folder):
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


def test_sources_digest_follows_the_sources_not_their_place(tmp_path):
    first = tiny_sources(tmp_path / "clone_a" / "csrc")
    second = tiny_sources(tmp_path / "clone_b" / "csrc")
    assert _flags.sources_digest(first) == _flags.sources_digest(second)
    # Documentation is not compiled: it changes no binary.
    with open(os.path.join(second, "README.md"), "a") as readme:
        readme.write("more notes\n")
    assert _flags.sources_digest(first) == _flags.sources_digest(second)
    # A header in a subfolder is compiled.
    with open(os.path.join(second, "cpu", "helper.h"), "a") as header:
        header.write("// changed\n")
    assert _flags.sources_digest(first) != _flags.sources_digest(second)
    # So is its name: the same content moved elsewhere is another tree.
    third = tiny_sources(tmp_path / "clone_c" / "csrc")
    os.rename(os.path.join(third, "cpu", "helper.h"), os.path.join(third, "helper.h"))
    assert _flags.sources_digest(first) != _flags.sources_digest(third)


def test_flags_digest_follows_the_flags_and_torch(monkeypatch):
    here = _flags.flags_digest(torch.__version__)
    assert here == _flags.flags_digest(torch.__version__)
    assert here != _flags.flags_digest("0.0.0")
    monkeypatch.setattr(_flags, "CXX_FLAGS", _flags.CXX_FLAGS + ["-DOTHER"])
    assert here != _flags.flags_digest(torch.__version__)


@needs_build_tools
@pytest.mark.slow
def test_clones_of_the_same_sources_share_a_build_and_other_sources_get_their_own(tmp_path, extensions_dir, capfd,
                                                                                  monkeypatch):
    clone_a = tiny_sources(tmp_path / "clone_a" / "csrc")
    first = _loader._jit_build(clone_a)
    assert first.error is None and first.module.build_info()["source_version"] == 1
    assert "building the C++ extension" in capfd.readouterr().err
    [build] = builds_in(extensions_dir)

    # Another clone of the same sources loads that build as it is: no compiler, no notice.
    clone_b = tiny_sources(tmp_path / "clone_b" / "csrc")
    from torch.utils import cpp_extension

    with monkeypatch.context() as patch:
        patch.setattr(cpp_extension, "load", lambda *args, **kwargs: pytest.fail("rebuilt the same sources"))
        again = _loader._jit_build(clone_b)
    assert again.error is None and again.module.build_info()["source_version"] == 1
    assert capfd.readouterr().err == ""
    assert builds_in(extensions_dir) == [build]

    # Changed sources build into a folder of their own, saying so; the first build stays.
    tiny_sources(clone_b, version=2)
    changed = _loader._jit_build(clone_b)
    assert changed.error is None and changed.module.build_info()["source_version"] == 2
    assert "building the C++ extension" in capfd.readouterr().err
    assert len(builds_in(extensions_dir)) == 2 and build in builds_in(extensions_dir)
    with open(extensions_dir / build / "build.json") as record:
        assert json.load(record)["sources"] == _flags.sources_digest(clone_a)


@needs_build_tools
@pytest.mark.slow
def test_an_interrupted_build_is_built_again_with_the_notice(tmp_path, extensions_dir, capfd):
    sources = tiny_sources(tmp_path / "csrc")
    assert _loader._jit_build(sources).error is None
    [build] = builds_in(extensions_dir)
    # A build stopped before it was recorded complete: its .so may be stale or partial.
    os.remove(extensions_dir / build / "build.json")
    capfd.readouterr()
    assert _loader._jit_build(sources).error is None
    assert "building the C++ extension" in capfd.readouterr().err


@needs_build_tools
def test_a_failed_build_says_where_its_log_is_and_is_not_retried(tmp_path, extensions_dir):
    sources = tiny_sources(tmp_path / "csrc")
    with open(os.path.join(sources, "ops.cpp"), "a") as source:
        source.write("this is not C++\n")
    failed = _loader._jit_build(sources)
    assert failed.module is None and "failed (log: " in failed.error
    log = failed.error.split("log: ")[1].rstrip(")")
    with open(log) as log_file:
        assert "this is not C++" in log_file.read()
    again = _loader._jit_build(sources)
    assert again.module is None and "not retried" in again.error and "delete" in again.error


@needs_build_tools
@pytest.mark.skipif(_toolkit.find_cuda_home()[0] is None, reason="needs a CUDA toolkit")
@pytest.mark.slow
def test_a_failed_cuda_build_leaves_the_cpu_kernels(tmp_path, extensions_dir, monkeypatch, capfd):
    """A CUDA build of PyTorch on a machine without a GPU whose CUDA build fails (here: a .cu file that
    does not compile): the CPU kernels are built and loaded, and the cuda backend says why it is missing."""
    from torch.utils import cpp_extension

    sources = tiny_sources(tmp_path / "csrc")
    os.makedirs(os.path.join(sources, "cuda"))
    with open(os.path.join(sources, "cuda", "broken.cu"), "w") as source:
        source.write("this is not CUDA\n")
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(cpp_extension, "CUDA_HOME", cpp_extension.CUDA_HOME)  # restored afterwards
    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST", raising=False)
    extension = _loader._jit_build(sources)
    assert extension.error is None and extension.backends == ("cpu",)
    assert "with its CUDA kernels for 8.0;9.0" in extension.cuda_error and "failed (log: " in extension.cuda_error
    assert "building the CPU kernels alone" in capfd.readouterr().err
    # With no GPU to choose for, the JIT build asked nvcc for setup.py's default architectures.
    [cuda_build] = [name for name in builds_in(extensions_dir) if name.startswith("pixelfolder_ops_cuda_")]
    with open(extensions_dir / cuda_build / "build.ninja") as ninja:
        nvcc_flags = next(line for line in ninja if line.startswith("cuda_cflags"))
    assert "arch=compute_80,code=sm_80" in nvcc_flags and "arch=compute_90,code=sm_90" in nvcc_flags
    assert "TORCH_CUDA_ARCH_LIST" not in os.environ


def test_cuda_arch_list_defaults(monkeypatch):
    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _toolkit.cuda_arch_list() == _toolkit.DEFAULT_CUDA_ARCHS == "8.0;9.0"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index: [(9, 0), (8, 6), (9, 0)][index])
    assert _toolkit.cuda_arch_list() == "8.6;9.0"
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "9.0a")
    assert _toolkit.cuda_arch_list() == "9.0a"


def fake_toolkit(folder):
    """A folder that looks like a CUDA toolkit: bin/nvcc answers -dryrun with its TOP, as nvcc does."""
    os.makedirs(os.path.join(folder, "bin"))
    os.makedirs(os.path.join(folder, "include"))
    open(os.path.join(folder, "include", "cuda_runtime.h"), "w").close()
    nvcc = os.path.join(folder, "bin", "nvcc")
    with open(nvcc, "w") as script:
        script.write(f'#!/bin/sh\necho "#$ _HERE_={folder}/bin" >&2\necho "#$ TOP={folder}/bin/.." >&2\n')
    os.chmod(nvcc, 0o755)
    return str(folder)


def wrapper_on_path(folder, target, monkeypatch):
    """An ``nvcc`` script in ``folder``, first on PATH, that execs ``target`` (as /usr/local/bin/nvcc here)."""
    os.makedirs(folder)
    wrapper = os.path.join(folder, "nvcc")
    with open(wrapper, "w") as script:
        script.write(f'#!/bin/sh\nexec {target} "$@"\n')
    os.chmod(wrapper, 0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return wrapper


def test_toolkit_behind_a_wrapper_script(tmp_path, monkeypatch):
    toolkit = fake_toolkit(tmp_path / "cuda-99.0")
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.delenv("CUDA_PATH", raising=False)
    wrapper = wrapper_on_path(tmp_path / "wrappers", os.path.join(toolkit, "bin", "nvcc"), monkeypatch)
    assert _toolkit.find_cuda_home() == (toolkit, f"the nvcc on PATH, {wrapper}")


def test_toolkit_from_the_environment_first(tmp_path, monkeypatch):
    first, second = fake_toolkit(tmp_path / "first"), fake_toolkit(tmp_path / "second")
    wrapper_on_path(tmp_path / "wrappers", os.path.join(second, "bin", "nvcc"), monkeypatch)
    monkeypatch.setenv("CUDA_HOME", first)
    assert _toolkit.find_cuda_home() == (first, "$CUDA_HOME")
    monkeypatch.setenv("CUDA_HOME", str(tmp_path / "not_a_toolkit"))
    monkeypatch.setenv("CUDA_PATH", second)
    assert _toolkit.find_cuda_home() == (second, "$CUDA_PATH")


def test_no_toolkit_says_what_was_tried(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_HOME", str(tmp_path / "not_a_toolkit"))
    monkeypatch.delenv("CUDA_PATH", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(_toolkit, "_is_toolkit", lambda path: False)
    home, why = _toolkit.find_cuda_home()
    assert home is None and f"$CUDA_HOME={tmp_path / 'not_a_toolkit'}" in why and "set CUDA_HOME" in why


@pytest.mark.skipif(not os.path.isfile("/usr/local/cuda-13.0/bin/nvcc"), reason="needs this machine's CUDA 13.0")
def test_real_toolkit_behind_a_wrapper_script(tmp_path, monkeypatch):
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.delenv("CUDA_PATH", raising=False)
    wrapper_on_path(tmp_path / "wrappers", "/usr/local/cuda-13.0/bin/nvcc", monkeypatch)
    assert _toolkit.find_cuda_home()[0] == "/usr/local/cuda-13.0"


@pytest.fixture
def installed_c(tmp_path, monkeypatch):
    """A stand-in for an installed pixelfolder_ops._C at tmp_path/site/pixelfolder_ops, and the
    sources beside it; returns (write its build record, the sources)."""
    package = tmp_path / "site" / "pixelfolder_ops"
    package.mkdir(parents=True)
    module = types.ModuleType("pixelfolder_ops._C")
    module.__spec__ = importlib.machinery.ModuleSpec("pixelfolder_ops._C", None, origin=str(package / "_C.so"))
    module.build_info = lambda: {"backends": ["cpu"]}
    monkeypatch.setitem(sys.modules, "pixelfolder_ops._C", module)
    monkeypatch.setattr(pixelfolder_ops, "_C", module, raising=False)
    sources = tiny_sources(package / "csrc")

    def write_record(**changes):
        record = {"sources": _flags.sources_digest(sources), "flags": _flags.flags_digest(torch.__version__),
                  "torch": torch.__version__, "variant": "cpu", **changes}
        with open(package / _flags.BUILD_RECORD, "w") as record_file:
            json.dump(record, record_file)

    return write_record, sources, module


def test_the_installed_binary_is_used_with_its_own_sources(installed_c):
    write_record, sources, module = installed_c
    write_record()
    extension, why_not = _loader._installed_extension(sources)
    assert extension.module is module and why_not is None


@pytest.mark.parametrize("change, reason", [
    ("no record", "has no build record"),
    ("sources", "was built from other sources than"),
    ("torch", "for another PyTorch or Python (PyTorch 0.0.0, here"),
])
def test_the_installed_binary_is_not_used_with_other_sources_or_flags(installed_c, change, reason):
    write_record, sources, module = installed_c
    if change == "sources":
        write_record()
        with open(os.path.join(sources, "ops.cpp"), "a") as source:
            source.write("// edited after the install\n")
    elif change == "torch":
        write_record(flags=_flags.flags_digest("0.0.0"), torch="0.0.0")
    extension, why_not = _loader._installed_extension(sources)
    assert extension is None and reason in why_not and "the installed pixelfolder_ops._C (" in why_not


@needs_build_tools
def test_load_says_once_why_it_builds_instead_of_using_the_installed_binary(installed_c, extensions_dir,
                                                                            monkeypatch, capfd):
    write_record, sources, module = installed_c
    write_record(sources="0" * 64)
    built = _loader.Extension(types.SimpleNamespace(build_info=lambda: {"backends": ["cpu"]}))
    monkeypatch.setattr(_loader, "source_dir", lambda: sources)
    monkeypatch.setattr(_loader, "_jit_build", lambda root: built if root == sources else None)
    assert _loader.load.__wrapped__() is built
    err = capfd.readouterr().err
    assert err.count("pixelfolder_ops:") == 1 and "was built from other sources than" in err and \
        "using a build of those sources instead" in err


@needs_build_tools
@pytest.mark.slow
def test_emulation_builds_its_own_variant_from_the_emulation_recipe(tmp_path, installed_c, extensions_dir,
                                                                     monkeypatch):
    """PIXELFOLDER_CUDA_EMULATION=1 builds exactly what _emulation.build_spec lists, with its flags on
    top of the usual ones, into a cache entry of its own, and never uses the installed _C."""
    write_record, sources, module = installed_c
    write_record()
    recipe = tmp_path / "recipe" / "_emulation.py"
    recipe.parent.mkdir()
    recipe.write_text("calls = []\n"
                      "def build_spec(sources_root, build_directory):\n"
                      "    calls.append((sources_root, build_directory))\n"
                      "    return {'sources': [sources_root + '/ops.cpp'], 'cflags': ['-DTINY_EMULATED'], 'ldflags': []}\n")
    spec = importlib.util.spec_from_file_location("pixelfolder_ops.extension._emulation", recipe)
    emulation = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(emulation)
    monkeypatch.setitem(sys.modules, "pixelfolder_ops.extension._emulation", emulation)
    monkeypatch.setattr(pixelfolder_ops.extension, "_emulation", emulation, raising=False)
    monkeypatch.setattr(_loader, "source_dir", lambda: sources)
    monkeypatch.setenv(_loader.EMULATION_ENV_VAR, "1")

    extension = _loader.load.__wrapped__()
    assert extension.error is None and extension.module is not module
    assert extension.module.build_info()["emulated"] is True
    [(root, directory)] = emulation.calls
    assert root == sources and os.path.basename(directory).startswith("pixelfolder_ops_cuda_emulation_")
    assert builds_in(extensions_dir) == [os.path.basename(directory)]
    assert _loader.EMULATION_ENV_VAR in extension.cuda_error
    # The usual flags came first: the build used -O3 too.
    with open(os.path.join(directory, "build.ninja")) as ninja:
        flags_line = next(line for line in ninja if line.startswith("cflags"))
    assert "-DTINY_EMULATED" in flags_line and all(flag in flags_line for flag in _flags.CXX_FLAGS)


@pytest.mark.parametrize("torch_cuda, backends, reason", [
    (None, ["cpu"], "is built without CUDA"),
    ("13.0", ["cpu"], "the installed pixelfolder_ops._C was built without its CUDA kernels"),
    ("13.0", ["cpu", "cuda"], "no CUDA GPU is visible"),
])
def test_why_the_cuda_backend_is_unavailable(monkeypatch, torch_cuda, backends, reason):
    monkeypatch.setattr(torch.version, "cuda", torch_cuda)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    module = types.SimpleNamespace(build_info=lambda: {"backends": backends})
    monkeypatch.setattr(_loader, "load", lambda: _loader.Extension(module))
    assert reason in _loader.unavailable_reason("cuda")
    assert _loader.unavailable_reason("cpu") is None
