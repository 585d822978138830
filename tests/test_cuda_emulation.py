"""The CUDA emulation itself (csrc/emulation): small kernels built with the emulation alone (no torch,
a few seconds) show that barriers and warp shuffles behave as on a GPU, that block and thread orders
are random and replayable from the seed, and that a kernel missing a barrier gives wrong results.
The package's own CUDA kernels run through it in test_extension.py (PIXELFOLDER_CUDA_EMULATION=1)."""
import ctypes
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EMULATION = os.path.join(ROOT, "csrc", "emulation")
COMPILER = os.environ.get("CXX", "c++")
THREADS = 256
SEED_VARIABLE = "PIXELFOLDER_CUDA_EMULATION_SEED"

# Kernels written as CUDA, each behind a C entry point that returns 0 or copies the error message.
KERNELS = r"""
#include "cuda_emulation.h"

#include <cstdio>
#include <exception>

namespace {

constexpr int kThreads = 256;

// One block per row: a shared-memory tree sum, as fourier_embedding_backward_kernel does it.
template <bool kBarrierAfterStore>
__global__ void row_sums(const double* __restrict__ values, int columns, double* __restrict__ sums) {
  __shared__ double partial[kThreads];
  double sum = 0;
  for (int i = threadIdx.x; i < columns; i += blockDim.x) sum += values[blockIdx.x * columns + i];
  partial[threadIdx.x] = sum;
  if (kBarrierAfterStore) __syncthreads();
  for (int active = kThreads / 2; active > 0; active /= 2) {
    if (threadIdx.x < active) partial[threadIdx.x] += partial[threadIdx.x + active];
    __syncthreads();
  }
  if (threadIdx.x == 0) sums[blockIdx.x] = partial[0];
}

// One warp per value of `sums`: a shuffle tree, as modulated_conv2d's demod_kernel does it.
__global__ void warp_sums(const double* __restrict__ values, double* __restrict__ sums) {
  const int warp = (blockIdx.x * blockDim.x + threadIdx.x) / 32, lane = threadIdx.x % 32;
  double sum = values[warp * 32 + lane];
  for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_down_sync(0xffffffff, sum, offset);
  if (lane == 0) sums[warp] = sum;
}

// What each lane of one warp reads with every shuffle, in 8-lane segments.
__global__ void shuffles(int* __restrict__ read, int delta) {
  const int lane = threadIdx.x;
  read[lane] = __shfl_up_sync(0xffffffff, lane, delta, 8);
  read[32 + lane] = __shfl_down_sync(0xffffffff, lane, delta, 8);
  read[64 + lane] = __shfl_xor_sync(0xffffffff, lane, delta, 8);
  read[96 + lane] = __shfl_sync(0xffffffff, lane, delta, 8);
}

// The order blocks start in, and the order a block's threads reach a point between two barriers.
__global__ void orders(int* __restrict__ blocks, int* __restrict__ threads, int* __restrict__ counters) {
  if (threadIdx.x == 0) blocks[counters[0]++] = blockIdx.x;
  __syncthreads();
  if (blockIdx.x == 0) threads[counters[1]++] = threadIdx.x;
}

__global__ void divergent_barrier() {
  if (threadIdx.x % 2 == 0) __syncthreads();
}

template <typename Launch>
int run(char* error, int size, Launch launch) {
  try {
    launch();
    return 0;
  } catch (const std::exception& e) {
    std::snprintf(error, size, "%s", e.what());
    return 1;
  }
}

}  // namespace

using pixelfolder::cuda_emulation::launch;

extern "C" {
int launch_row_sums(const double* values, int rows, int columns, double* sums, int barrier, char* error, int size) {
  return run(error, size, [&] { launch(barrier ? &row_sums<true> : &row_sums<false>, rows, kThreads, values, columns, sums); });
}
int launch_warp_sums(const double* values, int warps, double* sums, char* error, int size) {
  return run(error, size, [&] { launch(warp_sums, warps * 32 / kThreads, kThreads, values, sums); });
}
int launch_shuffles(int* read, int delta, char* error, int size) {
  return run(error, size, [&] { launch(shuffles, 1, 32, read, delta); });
}
int launch_orders(int* blocks, int grid, int* threads, char* error, int size) {
  int counters[2] = {0, 0};
  return run(error, size, [&] { launch(orders, grid, kThreads, blocks, threads, counters); });
}
int launch_divergent_barrier(char* error, int size) {
  return run(error, size, [&] { launch(divergent_barrier, 1, 64); });
}
int launch_too_many_threads(char* error, int size) {
  return run(error, size, [&] { launch(divergent_barrier, 1, 2048); });
}
}
"""


@pytest.fixture(scope="module")
def library_path(tmp_path_factory):
    if shutil.which(COMPILER) is None:
        pytest.skip(f"no C++ compiler '{COMPILER}'")
    directory = tmp_path_factory.mktemp("cuda_emulation")
    source = directory / "kernels.cpp"
    source.write_text(KERNELS)
    library = directory / "kernels.so"
    # -O3 as the extension is built: the shared array must survive the optimizer across barriers.
    subprocess.run([COMPILER, "-O3", "-std=c++17", "-shared", "-fPIC", "-I", EMULATION, str(source),
                    os.path.join(EMULATION, "cuda_emulation.cpp"), "-o", str(library)], check=True)
    return str(library)


class Kernels:
    def __init__(self, path):
        self.library = ctypes.CDLL(path)
        self.error = ctypes.create_string_buffer(1024)

    def __call__(self, name, *args):
        """Runs the entry point `name`; returns the error message, or None."""
        code = getattr(self.library, name)(*args, self.error, len(self.error))
        return self.error.value.decode() if code else None


@pytest.fixture(scope="module")
def kernels(library_path):
    return Kernels(library_path)


def doubles(values):
    return (ctypes.c_double * len(values))(*values)


def ints(count):
    return (ctypes.c_int * count)()


def row_sums(kernels, rows, columns, barrier):
    values = [float((r * 7919 + c * 104729) % 1000) for r in range(rows) for c in range(columns)]
    sums = doubles([0.0] * rows)
    assert kernels("launch_row_sums", doubles(values), rows, columns, sums, int(barrier)) is None
    expected = [sum(values[r * columns:(r + 1) * columns]) for r in range(rows)]
    return list(sums), expected


def test_shared_memory_reduction_with_its_barriers(kernels):
    actual, expected = row_sums(kernels, 16, 1000, barrier=True)
    assert actual == expected  # integer-valued doubles: exact in any order


def test_a_missing_barrier_gives_wrong_results(kernels):
    # Without the barrier after the stores, a thread that runs before its partner reads a stale
    # partial sum: with threads in random order, some of 16 blocks go wrong.
    actual, expected = row_sums(kernels, 16, 1000, barrier=False)
    assert actual != expected


def test_warp_shuffle_reduction(kernels):
    warps = 16
    values = [float(i % 97) for i in range(warps * 32)]
    sums = doubles([0.0] * warps)
    assert kernels("launch_warp_sums", doubles(values), warps, sums) is None
    assert list(sums) == [sum(values[w * 32:(w + 1) * 32]) for w in range(warps)]


@pytest.mark.parametrize("delta", [1, 3, 6])
def test_shuffles_read_the_lanes_cuda_documents(kernels, delta):
    read = ints(128)
    assert kernels("launch_shuffles", read, delta) is None
    width = 8
    segment = [lane // width * width for lane in range(32)]
    up = [lane - delta if lane % width >= delta else lane for lane in range(32)]
    down = [lane + delta if lane % width + delta < width else lane for lane in range(32)]
    xor = [lane ^ delta if lane ^ delta < segment[lane] + width else lane for lane in range(32)]
    indexed = [segment[lane] + delta % width for lane in range(32)]
    assert list(read) == up + down + xor + indexed


def launch_orders(kernels, grid=64):
    blocks, threads = ints(grid), ints(THREADS)
    assert kernels("launch_orders", blocks, grid, threads) is None
    return list(blocks), list(threads)


def test_block_and_thread_orders_are_random_permutations(kernels):
    first, second = launch_orders(kernels), launch_orders(kernels)
    for blocks, threads in (first, second):
        assert sorted(blocks) == list(range(64)) and blocks != sorted(blocks)
        assert sorted(threads) == list(range(THREADS)) and threads != sorted(threads)
    assert first != second  # drawn again for every launch


def test_the_seed_replays_the_orders(library_path):
    script = (f"import ctypes, sys; sys.path.insert(0, {os.path.dirname(__file__)!r}); "
              "from test_cuda_emulation import Kernels, launch_orders; "
              f"print(launch_orders(Kernels({library_path!r})))")

    def orders(seed):
        environment = dict(os.environ, **{SEED_VARIABLE: str(seed)})
        return subprocess.run([sys.executable, "-c", script], env=environment, capture_output=True, text=True,
                              check=True).stdout

    assert orders(7) == orders(7) != orders(8)


def test_a_divergent_barrier_is_an_error(kernels):
    error = kernels("launch_divergent_barrier")
    assert error is not None and "deadlock in block (0, 0, 0): 32 threads wait at __syncthreads" in error
    assert "32 have returned" in error
    # The fibers abandoned by the error do not disturb the next launch.
    actual, expected = row_sums(kernels, 4, 300, barrier=True)
    assert actual == expected


def test_an_invalid_launch_configuration_is_an_error(kernels):
    assert "invalid launch configuration <<<(1, 1, 1), (2048, 1, 1)>>>" in kernels("launch_too_many_threads")


def test_a_bad_seed_is_a_clear_error(library_path):
    script = f"import ctypes, sys; sys.path.insert(0, {os.path.dirname(__file__)!r}); " \
             "from test_cuda_emulation import Kernels; " \
             f"print(Kernels({library_path!r})('launch_divergent_barrier'))"
    environment = dict(os.environ, **{SEED_VARIABLE: "twelve"})
    result = subprocess.run([sys.executable, "-c", script], env=environment, capture_output=True, text=True)
    assert f"${SEED_VARIABLE} must be an unsigned integer, got 'twelve'" in result.stdout
