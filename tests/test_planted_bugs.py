"""Bugs planted in the CUDA kernels one at a time, each caught by the check made for it: the CUDA
emulation's memory checks (out of bounds, shared-memory races, a barrier some threads skip, races between
blocks) and the correctness cases that reach every path of the kernels (correctness.kernel_path_cases()).

Opt in, it takes a while (one emulation build of a copy of csrc/, then the files of each bug recompiled):

    PIXELFOLDER_PLANTED_BUGS=1 python -m pytest -m slow tests/test_planted_bugs.py [-k NAME]

Each test applies its bug to the copy, builds it as the package's compiled extension there (as setup.py
installs one, with the build record that makes the loader take it), runs correctness cases with that copy
of the package in a fresh Python, checks the expected failure, and takes the bug out again."""
import json
import os
import re
import runpy
import shutil
import subprocess
import sys
from typing import NamedTuple

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPT_IN = "PIXELFOLDER_PLANTED_BUGS"

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(os.environ.get(OPT_IN) != "1",
                                 reason=f"planted bugs run when {OPT_IN}=1 (minutes: an emulation build and a "
                                        "recompile per bug)")]


class Plant(NamedTuple):
    path: str  # under csrc/
    old: str
    new: str


class Bug(NamedTuple):
    name: str
    plants: tuple
    cases: tuple  # correctness cases to run, by name
    expected: str  # a regular expression the run's output must match


SMALL_LEAKY = "leaky relu odd 5ch 3x7, slope 0.1 gain 1.5"
SMALL_FOURIER = "fourier odd 6ch 5x7"
SMALL_STYLED = "styled conv odd 3->8 5x7, per image noise, bias, unfold"
THREE_CHUNKS = "styled conv 3->36 49x45, unfold, three reduction chunks and two channel tiles"
STORE_SLOT = ("partial[(tile.image * channels + c) * static_cast<index_t>(gridDim.x) + "
              "static_cast<index_t>(blockIdx.x)] =\n"
              "        tile.template sum_of<opmath_t>(scratch, threadIdx.x, true);")
THREAD = r"thread \(\d+, 0, 0\) of block \(\d+, \d+, \d+\)"

BUGS = [
    Bug("read_past_a_tensor",
        (Plant("cuda/fused_leaky_relu.cu", "bias[layout.channel(index)]", "bias[layout.channel(index) + 1]"),),
        (SMALL_LEAKY,),
        r"fused_leaky_relu_kernel<float, float, int><<<\(1, 1, 1\), \(256, 1, 1\)>>>: 42 out-of-bounds accesses "
        rf"[^\n]*\n(  - [^\n]*\n)*  - out-of-bounds read: {THREAD} reads `bias` at offset 5, outside its elements "
        r"\(offsets 0 to 4\)"),
    Bug("write_past_a_tensor",
        (Plant("cuda/fourier_embedding.cu", "grad_bias[c] = partial[2][0];", "grad_bias[c + 1] = partial[2][0];"),),
        (SMALL_FOURIER,),
        r"out-of-bounds write: thread \(0, 0, 0\) of block \(5, 0, 0\) writes `grad_bias` at offset 6, outside its "
        r"elements \(offsets 0 to 5\)"),
    Bug("shared_memory_read_before_the_barrier",
        (Plant("cuda/fourier_embedding.cu", "partial[k][threadIdx.x] = sums[k];\n  __syncthreads();\n",
               "partial[k][threadIdx.x] = sums[k];\n"),),
        (SMALL_FOURIER,),
        rf"fourier_embedding_backward_kernel<float, float, int><<<\(6, 1, 1\), \(256, 1, 1\)>>>: .*shared-memory race: "
        rf"{THREAD} (reads|writes) \[\d\]\[\d+\] of a shared array \[3\]\[256\], which {THREAD} (wrote|read) with no "
        r"__syncthreads between"),
    Bug("shared_memory_rewritten_while_read",
        (Plant("cuda/channel_tiles.cuh",
               "  __syncthreads();  // the scratch tile may still be read from the last step\n", ""),),
        (SMALL_STYLED,),
        rf"epilogue_backward_kernel<float, float, int><<<.*shared-memory race: {THREAD} (reads|writes) \[\d+\]\[\d+\] "
        rf"of a shared array \[32\]\[33\], which {THREAD} (wrote|read) with no __syncthreads between"),
    Bug("barrier_some_threads_skip",
        (Plant("cuda/channel_tiles.cuh", "if (threadIdx.x < kTile && c < channels) {\n",
               "if (threadIdx.x < kTile && c < channels) {\n    __syncthreads();\n"),),
        (SMALL_STYLED,),
        r"epilogue_backward_kernel<float, float, int><<<\(1, 1, 2\), \(256, 1, 1\)>>>: deadlock in block \(0, 0, \d\): "
        r"8 threads \([^)]*\), [^)]*\), [^)]*\), \.\.\.\) wait at __syncthreads, 0 threads at a warp shuffle or "
        r"__syncwarp whose other lanes do not, and 248 threads \(.*\) have returned"),
    Bug("blocks_adding_into_one_slot",
        (Plant("cuda/channel_tiles.cuh", STORE_SLOT,
               "partial[(tile.image * channels + c) * static_cast<index_t>(gridDim.x)] +=\n"
               "        tile.template sum_of<opmath_t>(scratch, threadIdx.x, true);"),),
        (THREE_CHUNKS,),
        rf"race between blocks on `(demod|bias)_partial` at offset \d+: {THREAD} (reads|writes) it, and {THREAD} "
        r"(wrote|read) it \(not atomically\)"),
    # The grid-stride loop as one step: only a case with more elements than a launch's threads notices.
    Bug("grid_stride_loop_as_one_step",
        (Plant("cuda/fused_leaky_relu.cu",
               "PIXELFOLDER_GRID_STRIDE_LOOP(index_t, index, numel) {\n    const opmath_t shift",
               "if (index_t index = static_cast<index_t>(blockIdx.x) * static_cast<index_t>(blockDim.x) + "
               "threadIdx.x; index < numel) {\n    const opmath_t shift"),),
        ("leaky relu 512ch 8x8", "leaky relu 16ch 1025x1024, more elements than a launch's threads"),
        r"^leaky relu 16ch 1025x1024, more elements than a launch's threads, forward: error [^\n]* > tolerance"),
    # The warp sum drops lanes 16-31: only a case with more than 16 input channels notices.
    Bug("warp_sum_without_lanes_16_to_31",
        (Plant("cuda/modulated_conv2d.cu", "for (int offset = kWarp / 2;", "for (int offset = kWarp / 4;"),),
        ("modulated conv odd 3x3 9->4 5x7", "modulated conv 3x3 40->8 6x5, every lane of the demodulation's warp"),
        r"^modulated conv 3x3 40->8 6x5, every lane of the demodulation's warp, forward: error [^\n]* > tolerance"),
    # Each thread one pixel: only a case with more pixels than a block's threads notices.
    Bug("block_reduction_over_one_pixel_per_thread",
        (Plant("cuda/fourier_embedding.cu",
               "for (index_t index = threadIdx.x; index < height * width; index += blockDim.x) {",
               "if (index_t index = threadIdx.x; index < height * width) {"),),
        ("fourier 512ch 16x16 (stage 0)", "fourier 16ch 1025x1024, more elements than a launch's threads"),
        r"^fourier 16ch 1025x1024, more elements than a launch's threads, grad weight: error [^\n]* > tolerance"),
]

# The chunks' partial sums added atomically into one slot: right values and no race (atomics are exempt),
# but the bits depend on the order of the blocks once three add into a slot.
ATOMIC_CHUNK_SUMS = (
    Plant("cuda/channel_tiles.cuh", STORE_SLOT,
          "atomicAdd(&partial[(tile.image * channels + c) * static_cast<index_t>(gridDim.x)],\n"
          "              tile.template sum_of<opmath_t>(scratch, threadIdx.x, true));"),
    Plant("cuda/styled_conv2d.cu", "chunks_of(pixels)}, sums);", "chunks_of(pixels)}, sums).zero_();"),
    Plant("cuda/styled_conv2d.cu", "at::empty_like(demod_partial);", "at::empty_like(demod_partial).zero_();"),
    Plant("cuda/modulated_conv2d.cu", "empty_spatial_dot(a).options());", "empty_spatial_dot(a).options()).zero_();"),
)

# Run in the planted copy: the cases named on the command line in float32 on the cpu backend (the emulated
# CUDA kernels), a line per output beyond its tolerance; with --digest, the digest of the case's outputs.
RUNNER = r"""
import sys
import torch
from pixelfolder_ops import correctness, extension
info = extension.build_info()
assert info and info["cuda_emulation"], f"not the planted emulation build: {extension.load().error}"
if sys.argv[1] == "--digest":
    sys.path.insert(0, sys.argv[2])
    import conftest
    print(conftest.backward_digest([sys.argv[3]], "cpu", layouts=("contiguous",)))
    sys.exit()
cases = {case.name: case for case in correctness.cases()}
for name in sys.argv[1:]:
    for output, (error, tolerance) in correctness.check_case(cases[name], "cpu", torch.float32, "cpu").items():
        if error > tolerance:
            print(f"{name}, {output}: error {error:.3g} > tolerance {tolerance:.3g}")
"""

BUILDER = r"""
import os, runpy, sys
from torch.utils import cpp_extension
root, build = sys.argv[1:3]
emulation = runpy.run_path(os.path.join(root, "pixelfolder_ops", "extension", "_emulation.py"))
flags = runpy.run_path(os.path.join(root, "pixelfolder_ops", "extension", "_flags.py"))
csrc = os.path.join(root, "csrc")
spec = emulation["build_spec"](csrc, build)
cpp_extension.load("_C", spec["sources"], extra_cflags=flags["CXX_FLAGS"] + spec["cflags"],
                   extra_ldflags=flags["LINK_FLAGS"] + spec["ldflags"], extra_include_paths=[csrc],
                   build_directory=build, with_cuda=False)
"""


class PlantedCopy:
    """A copy of the package and csrc/ whose compiled extension is the emulation build of its csrc/."""

    def __init__(self, root):
        self.root = root
        shutil.copytree(os.path.join(ROOT, "csrc"), os.path.join(root, "csrc"))
        shutil.copytree(os.path.join(ROOT, "pixelfolder_ops"), os.path.join(root, "pixelfolder_ops"),
                        ignore=shutil.ignore_patterns("__pycache__", "*.so", "_C.build.json"))
        self.build_directory = os.path.join(root, "build")
        os.makedirs(self.build_directory)

    def environment(self, **extra):
        environment = {k: v for k, v in os.environ.items() if not k.startswith("PIXELFOLDER_CUDA_EMULATION")}
        # A JIT build here would mean the planted extension was not taken: make it fail instead.
        return dict(environment, TORCH_EXTENSIONS_DIR=os.path.join(self.root, "no_jit_build"), **extra)

    def build(self):
        """Builds csrc/ (ninja recompiles what changed) and installs it as pixelfolder_ops._C."""
        result = subprocess.run([sys.executable, "-c", BUILDER, self.root, self.build_directory],
                                capture_output=True, text=True, env=self.environment(MAX_JOBS="2"))
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        package = os.path.join(self.root, "pixelfolder_ops")
        shutil.copy(os.path.join(self.build_directory, "_C.so"), os.path.join(package, "_C.so"))
        flags = runpy.run_path(os.path.join(package, "extension", "_flags.py"))
        with open(os.path.join(package, flags["BUILD_RECORD"]), "w") as record:
            json.dump({"sources": flags["sources_digest"](os.path.join(self.root, "csrc")),
                       "flags": flags["flags_digest"](torch.__version__)}, record)

    def run(self, *args, seed=1):
        return subprocess.run([sys.executable, "-c", RUNNER, *args], capture_output=True, text=True, cwd=self.root,
                              env=self.environment(PIXELFOLDER_CUDA_EMULATION_SEED=str(seed)))

    def plant(self, plants):
        """Applies the plants; returns the files' texts before, for restore()."""
        saved = {}
        for plant in plants:
            path = os.path.join(self.root, "csrc", plant.path)
            with open(path) as source:
                text = source.read()
            saved.setdefault(path, text)
            with open(path, "w") as planted:
                planted.write(text.replace(plant.old, plant.new))
            if text.count(plant.old) != 1:
                self.restore(saved)
                pytest.fail(f"the plant no longer applies: {plant.old!r} is not once in csrc/{plant.path}")
        return saved

    @staticmethod
    def restore(saved):
        for path, text in saved.items():
            with open(path, "w") as original:
                original.write(text)


@pytest.fixture(scope="module")
def planted_copy(tmp_path_factory):
    copy = PlantedCopy(str(tmp_path_factory.mktemp("planted")))
    copy.build()
    # Unplanted, the cases pass.
    result = copy.run(SMALL_LEAKY, SMALL_FOURIER, SMALL_STYLED, THREE_CHUNKS)
    assert result.returncode == 0 and result.stdout == "", result.stdout + result.stderr[-3000:]
    return copy


@pytest.mark.parametrize("bug", BUGS, ids=[bug.name for bug in BUGS])
def test_a_planted_bug_is_caught(planted_copy, bug):
    saved = planted_copy.plant(bug.plants)
    try:
        planted_copy.build()
        result = planted_copy.run(*bug.cases)
    finally:
        planted_copy.restore(saved)
    output = result.stdout + result.stderr
    caught = re.search(bug.expected, output, re.MULTILINE | re.DOTALL)
    assert caught, output[-4000:]
    print(caught.group(0))  # what the check said (pytest -rP shows it)
    # The value checks: the small case (the first) passes, only the one made for the path fails.
    if result.returncode == 0:
        assert result.stdout.startswith(bug.cases[-1]), result.stdout


def test_atomic_sums_over_three_blocks_are_caught_by_their_bits(planted_copy):
    saved = planted_copy.plant(ATOMIC_CHUNK_SUMS)
    try:
        planted_copy.build()
        checked = planted_copy.run(THREE_CHUNKS)
        digests = [planted_copy.run("--digest", os.path.join(ROOT, "tests"), THREE_CHUNKS, seed=seed)
                   for seed in (1, 2)]
    finally:
        planted_copy.restore(saved)
    # Within tolerance and no race reported (atomics are exempt)...
    assert checked.returncode == 0 and checked.stdout == "", checked.stdout + checked.stderr[-3000:]
    # ... but the sums' bits follow the order of the blocks.
    assert all(d.returncode == 0 for d in digests), digests[0].stderr[-3000:]
    assert digests[0].stdout != digests[1].stdout
