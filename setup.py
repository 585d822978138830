"""Build and install pixelfolder_ops.

The Python package installs alone. The compiled extension ``pixelfolder_ops._C`` is built from csrc/
when its sources are present: the C++ CPU kernels always, the CUDA kernels too when nvcc and a CUDA
build of PyTorch are found (PIXELFOLDER_CUDA=1 forces them, =0 skips them; TORCH_CUDA_ARCH_LIST picks
the architectures). Building it needs the PyTorch you will run with, so install with
``pip install --no-build-isolation .``; a build that cannot import torch (an isolated ``pip install .``)
skips it. The sources are also shipped inside the package (pixelfolder_ops/csrc), so an install
without ``_C`` JIT-builds it at first use (pixelfolder_ops/extension/_loader.py).

Only pixelfolder_ops goes into site-packages: models/, benchmarks/ and training/ run from the clone.
"""
import glob
import os
import runpy

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

ROOT = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join(ROOT, "csrc")
FLAGS = runpy.run_path(os.path.join(ROOT, "pixelfolder_ops", "extension", "_flags.py"))


class BuildPyWithSources(build_py):
    """Copies csrc/ into the built package, where pixelfolder_ops.extension's JIT loader looks first."""

    def run(self):
        super().run()
        if os.path.isdir(CSRC):
            self.copy_tree(CSRC, os.path.join(self.build_lib, "pixelfolder_ops", "csrc"))


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
        print("pixelfolder_ops: torch is not importable at build time; the extension will be JIT-built at first "
              "use (pip install --no-build-isolation . compiles it now)")
        return [], {"build_py": BuildPyWithSources}

    cuda_sources = sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu")))
    want_cuda = os.environ.get("PIXELFOLDER_CUDA")
    cuda_found = cpp_extension.CUDA_HOME is not None and torch.version.cuda is not None
    build_cuda = bool(cuda_sources) and (want_cuda == "1" or (want_cuda is None and cuda_found))
    if build_cuda and "TORCH_CUDA_ARCH_LIST" not in os.environ:
        # The GPU found here, else Ampere and Hopper.
        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability()
            os.environ["TORCH_CUDA_ARCH_LIST"] = f"{major}.{minor}"
        else:
            os.environ["TORCH_CUDA_ARCH_LIST"] = "8.0;9.0"
    extension = cpp_extension.CUDAExtension if build_cuda else cpp_extension.CppExtension
    sources = cpp_sources + (cuda_sources if build_cuda else [])
    module = extension(
        "pixelfolder_ops._C", sources,
        include_dirs=[os.path.join(ROOT, "csrc")],
        define_macros=[("PIXELFOLDER_WITH_CUDA", None)] if build_cuda else [],
        extra_compile_args={"cxx": FLAGS["CXX_FLAGS"], "nvcc": FLAGS["NVCC_FLAGS"]},
        extra_link_args=FLAGS["LINK_FLAGS"],
    )
    return [module], {"build_ext": cpp_extension.BuildExtension, "build_py": BuildPyWithSources}


ext_modules, cmdclass = extension_modules()
setup(
    packages=find_packages(include=["pixelfolder_ops", "pixelfolder_ops.*"]),
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
