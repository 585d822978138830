"""The CUDA emulation build (PIXELFOLDER_CUDA_EMULATION=1): the CUDA kernels of csrc/cuda compiled as
host C++ against csrc/emulation, so that their own bodies serve the CPU dispatch key (csrc/README.md).
The loader builds it, CPU-only, into a cache entry of its own."""
import glob
import os

# nvcc's version and architecture list: nothing to report without nvcc.
_NVCC_ONLY = {"build_info.cu"}


def _write_if_changed(path, text):
    """Rewriting an unchanged file would make ninja recompile it."""
    if os.path.exists(path):
        with open(path) as existing:
            if existing.read() == text:
                return
    with open(path, "w") as wrapper:
        wrapper.write(text)


def build_spec(sources_root, build_directory):
    """What to compile: the op schemas and composites (csrc/*.cpp), the emulation's scheduler, and
    each CUDA source through a C++ file in ``build_directory`` that includes it (so that g++ compiles
    it, not nvcc); csrc/cpu is left out, its dispatch key being the emulated kernels'. Returns
    {"sources": [...], "cflags": [...], "ldflags": [...]} for a CPU-only build."""
    os.makedirs(build_directory, exist_ok=True)
    wrappers = []
    for source in sorted(glob.glob(os.path.join(sources_root, "cuda", "*.cu"))):
        name = os.path.basename(source)
        if name in _NVCC_ONLY:
            continue
        # A name of its own: csrc/cpu's files have the same base names.
        wrapper = os.path.join(build_directory, f"emulated_{os.path.splitext(name)[0]}.cpp")
        _write_if_changed(wrapper, f'#include "{os.path.abspath(source)}"\n')
        wrappers.append(wrapper)
    sources = sorted(glob.glob(os.path.join(sources_root, "*.cpp")))
    sources.append(os.path.join(sources_root, "emulation", "cuda_emulation.cpp"))
    return {"sources": sources + wrappers, "cflags": ["-DPIXELFOLDER_CUDA_EMULATION"], "ldflags": []}
