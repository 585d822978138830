"""Build and install pixelfolder_ops.

The Python package installs alone. The compiled extension ``pixelfolder_ops._C`` is built from csrc/
when its sources are present: the C++ CPU kernels always, the CUDA kernels too when a CUDA build of
PyTorch and a CUDA toolkit are found (PIXELFOLDER_CUDA=1 forces them, =0 skips them;
TORCH_CUDA_ARCH_LIST picks the architectures). Building it needs the PyTorch you will run with, so
install with ``pip install --no-build-isolation .``; a build that cannot import torch (an isolated
``pip install .``) skips it. The sources are also shipped inside the package (pixelfolder_ops/csrc), so
an install without ``_C`` JIT-builds it at first use (pixelfolder_ops/extension/_loader.py), and so does
one whose ``_C`` was built from other sources: the build record written next to ``_C`` says which.

Only pixelfolder_ops goes into site-packages: models/, benchmarks/ and training/ run from the clone.
"""
import glob
import json
import os
import runpy
import sys

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

ROOT = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join(ROOT, "csrc")
# Read as files: the package cannot be imported before it is built.
FLAGS = runpy.run_path(os.path.join(ROOT, "pixelfolder_ops", "extension", "_flags.py"))
TOOLKIT = runpy.run_path(os.path.join(ROOT, "pixelfolder_ops", "extension", "_toolkit.py"))


def say(message):
    print(f"pixelfolder_ops: {message}", file=sys.stderr, flush=True)


class BuildPyWithSources(build_py):
    """Copies csrc/ into the built package, where pixelfolder_ops.extension's JIT loader looks first."""

    def run(self):
        super().run()
        if os.path.isdir(CSRC):
            self.copy_tree(CSRC, os.path.join(self.build_lib, "pixelfolder_ops", "csrc"))


def cuda_toolkit(torch, cuda_sources):
    """The toolkit folder to build the CUDA kernels with, or None to build the CPU kernels alone."""
    wanted = os.environ.get("PIXELFOLDER_CUDA")
    if wanted == "0" or not cuda_sources:
        return None
    home, how = TOOLKIT["find_cuda_home"]()
    if torch.version.cuda is not None and home is not None:
        say(f"building the CUDA kernels with the CUDA toolkit at {home} (found from {how})")
        return home
    missing = f"PyTorch {torch.__version__} is built without CUDA" if torch.version.cuda is None else how
    if wanted == "1":
        sys.exit(f"pixelfolder_ops: PIXELFOLDER_CUDA=1 asks for the CUDA kernels, but {missing}")
    say(f"building the CPU kernels alone: {missing}")
    return None


def extension_modules():
    cpp_sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")) + glob.glob(os.path.join("csrc", "cpu", "*.cpp")))
    if not cpp_sources:
        return [], {"build_py": BuildPyWithSources}
    try:
        import torch
        from torch.utils import cpp_extension
    except ImportError:
        # An isolated build (plain `pip install .`) has no torch: ship the sources only, and
        # pixelfolder_ops.extension JIT-builds them at first use.
        say("torch is not importable at build time; the extension will be JIT-built at first use "
            "(pip install --no-build-isolation . compiles it now)")
        return [], {"build_py": BuildPyWithSources}

    cuda_sources = sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu")))
    cuda_home = cuda_toolkit(torch, cuda_sources)
    record = {"sources": FLAGS["sources_digest"](CSRC), "flags": FLAGS["flags_digest"](torch.__version__),
              "torch": torch.__version__, "variant": "cpu" if cuda_home is None else "cuda"}
    if cuda_home is not None:
        TOOLKIT["use_cuda_home"](cuda_home)
        os.environ["TORCH_CUDA_ARCH_LIST"] = record["cuda_archs"] = TOOLKIT["cuda_arch_list"]()
        say(f"CUDA architectures: {record['cuda_archs']}")

    class BuildExtensionWithRecord(cpp_extension.BuildExtension):
        """Writes, next to _C, the digests of the sources and flags it was built from: the loader uses
        an installed _C only when they match the sources beside it."""

        def run(self):
            super().run()
            path = os.path.join(os.path.dirname(self.get_ext_fullpath("pixelfolder_ops._C")), FLAGS["BUILD_RECORD"])
            with open(path, "w") as record_file:
                json.dump(record, record_file, indent=1, sort_keys=True)

    build_cuda = cuda_home is not None
    extension = cpp_extension.CUDAExtension if build_cuda else cpp_extension.CppExtension
    module = extension(
        "pixelfolder_ops._C", cpp_sources + (cuda_sources if build_cuda else []),
        include_dirs=[CSRC],
        define_macros=[("PIXELFOLDER_WITH_CUDA", None)] if build_cuda else [],
        extra_compile_args={"cxx": FLAGS["CXX_FLAGS"], "nvcc": FLAGS["NVCC_FLAGS"]},
        extra_link_args=FLAGS["LINK_FLAGS"],
    )
    return [module], {"build_ext": BuildExtensionWithRecord, "build_py": BuildPyWithSources}


ext_modules, cmdclass = extension_modules()
setup(
    packages=find_packages(include=["pixelfolder_ops", "pixelfolder_ops.*"]),
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
