"""The CUDA emulation itself (csrc/emulation): small kernels built with the emulation alone (no torch,
a few seconds) show that barriers and warp shuffles behave as on a GPU, that block and thread orders
are random and replayable from the seed, and that each memory check (out of bounds, shared-memory races
and uninitialized reads, a barrier some threads skip, races between blocks) reports a kernel made for it
with the kernel, threads and memory named, and stays silent where the synchronisation is right.
The package's own CUDA kernels run through it in test_extension.py (PIXELFOLDER_CUDA_EMULATION=1)."""
import ctypes
import os
import re
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

using pixelfolder::cuda_emulation::GlobalPointer;
using pixelfolder::cuda_emulation::SharedArray;

namespace {

constexpr int kThreads = 256;

// One block per row: a shared-memory tree sum, as fourier_embedding_backward_kernel does it.
template <bool kBarrierAfterStore>
__global__ void row_sums(GlobalPointer<const double> values, int columns, GlobalPointer<double> sums) {
  __shared__ SharedArray<double, kThreads> partial;
  double sum = 0;
  for (int i = threadIdx.x; i < columns; i += blockDim.x) sum += values[blockIdx.x * columns + i];
  partial[threadIdx.x] = sum;
  if (kBarrierAfterStore) __syncthreads();
  for (unsigned int active = kThreads / 2; active > 0; active /= 2) {
    if (threadIdx.x < active) partial[threadIdx.x] += partial[threadIdx.x + active];
    __syncthreads();
  }
  if (threadIdx.x == 0) sums[blockIdx.x] = partial[0];
}

// One warp per value of `sums`: a shuffle tree, as modulated_conv2d's demod_kernel does it.
__global__ void warp_sums(GlobalPointer<const double> values, GlobalPointer<double> sums) {
  const int warp = (blockIdx.x * blockDim.x + threadIdx.x) / 32, lane = threadIdx.x % 32;
  double sum = values[warp * 32 + lane];
  for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_down_sync(0xffffffff, sum, offset);
  if (lane == 0) sums[warp] = sum;
}

// What each lane of one warp reads with every shuffle, in 8-lane segments.
__global__ void shuffles(GlobalPointer<int> read, int delta) {
  const int lane = threadIdx.x;
  read[lane] = __shfl_up_sync(0xffffffff, lane, delta, 8);
  read[32 + lane] = __shfl_down_sync(0xffffffff, lane, delta, 8);
  read[64 + lane] = __shfl_xor_sync(0xffffffff, lane, delta, 8);
  read[96 + lane] = __shfl_sync(0xffffffff, lane, delta, 8);
}

// The order blocks start in, and the order a block's threads reach a point between two barriers.
__global__ void orders(GlobalPointer<int> blocks, GlobalPointer<int> threads, GlobalPointer<int> counters) {
  if (threadIdx.x == 0) blocks[atomicAdd(&counters[0], 1)] = blockIdx.x;
  __syncthreads();
  if (blockIdx.x == 0) threads[atomicAdd(&counters[1], 1)] = threadIdx.x;
}

__global__ void divergent_barrier() {
  if (threadIdx.x % 2 == 0) __syncthreads();
}

// out[i] = in[i + shift] over a grid-stride loop: out of bounds for a non-zero shift.
__global__ void shifted_copy(GlobalPointer<const float> in, GlobalPointer<float> out, int count, int read_shift,
                             int write_shift) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < count; i += blockDim.x * gridDim.x) {
    out[i + write_shift] = in[i + read_shift];
  }
}

// Every thread adds its index into total[0] (atomically or not), so that several blocks write it.
template <bool kAtomic>
__global__ void add_into_one_slot(GlobalPointer<int> total) {
  if (kAtomic) {
    atomicAdd(&total[0], int(threadIdx.x));
  } else if (threadIdx.x == 0) {
    total[0] += 1;
  }
}

// Block b reads what block b - 1 wrote: a result that depends on the order of blocks.
__global__ void read_the_previous_block(GlobalPointer<int> values) {
  if (threadIdx.x == 0) {
    values[blockIdx.x] = 1;
    if (blockIdx.x > 0) values[blockIdx.x] += values[blockIdx.x - 1];
  }
}

// Shared-memory patterns, one per `pattern`: 0 every thread writes one element, 1 reads an element
// no thread wrote, 2 writes past the end, 3 lane 0 writes and lane 1 reads with a __syncwarp between,
// 4 the same without it, 5 atomics into one element, 6 its neighbour's element after a barrier.
__global__ void shared_patterns(int pattern, GlobalPointer<int> out) {
  __shared__ SharedArray<int, 4, 64> cells;
  const int t = threadIdx.x;
  switch (pattern) {
    case 0:
      cells[1][5] = t;
      break;
    case 1:
      out[t] = cells[t / 64][t % 64];
      break;
    case 2:
      cells[t / 64][t % 64 + 1] = t;
      break;
    case 3:
    case 4:
      if (t % 32 == 0) cells[0][t / 32] = t;
      if (pattern == 3) __syncwarp();
      if (t % 32 == 1) out[t] = cells[0][t / 32];
      break;
    case 5:
      if (t == 0) cells[0][0] = 0;
      __syncthreads();
      atomicAdd(&cells[0][0], 1);
      __syncthreads();
      if (t == 0) out[0] = cells[0][0];
      break;
    case 6:
      cells[t / 64][t % 64] = t;
      __syncthreads();
      out[t] = cells[(t + 1) % 256 / 64][(t + 1) % 64];
      break;
  }
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

// A tensor of `count` elements as the kernels take it.
template <typename T>
GlobalPointer<T> tensor(T* data, int count, const char* name) {
  return {data, 0, count - 1, name};
}

}  // namespace

using pixelfolder::cuda_emulation::launch;

extern "C" {
int launch_row_sums(const double* values, int rows, int columns, double* sums, int barrier, char* error, int size) {
  return run(error, size, [&] {
    launch(barrier ? &row_sums<true> : &row_sums<false>, rows, kThreads, tensor(values, rows * columns, "values"),
           columns, tensor(sums, rows, "sums"));
  });
}
int launch_warp_sums(const double* values, int warps, double* sums, char* error, int size) {
  return run(error, size, [&] {
    launch(warp_sums, warps * 32 / kThreads, kThreads, tensor(values, warps * 32, "values"),
           tensor(sums, warps, "sums"));
  });
}
int launch_shuffles(int* read, int delta, char* error, int size) {
  return run(error, size, [&] { launch(shuffles, 1, 32, tensor(read, 128, "read"), delta); });
}
int launch_orders(int* blocks, int grid, int* threads, char* error, int size) {
  int counters[2] = {0, 0};
  return run(error, size, [&] {
    launch(orders, grid, kThreads, tensor(blocks, grid, "blocks"), tensor(threads, kThreads, "threads"),
           tensor(counters, 2, "counters"));
  });
}
int launch_divergent_barrier(char* error, int size) {
  return run(error, size, [&] { launch(divergent_barrier, 1, 64); });
}
int launch_too_many_threads(char* error, int size) {
  return run(error, size, [&] { launch(divergent_barrier, 1, 2048); });
}
int launch_shifted_copy(const float* in, float* out, int count, int blocks, int read_shift, int write_shift,
                        char* error, int size) {
  return run(error, size, [&] {
    launch(shifted_copy, blocks, kThreads, tensor(in, count, "in"), tensor(out, count, "out"), count, read_shift,
           write_shift);
  });
}
int launch_null_read(float* out, char* error, int size) {
  return run(error, size, [&] { launch(shifted_copy, 1, 32, nullptr, tensor(out, 32, "out"), 32, 0, 0); });
}
int launch_add_into_one_slot(int* total, int blocks, int atomic, char* error, int size) {
  return run(error, size, [&] {
    launch(atomic ? &add_into_one_slot<true> : &add_into_one_slot<false>, blocks, 64, tensor(total, 1, "total"));
  });
}
int launch_read_the_previous_block(int* values, int blocks, char* error, int size) {
  return run(error, size, [&] { launch(read_the_previous_block, blocks, 32, tensor(values, blocks, "values")); });
}
int launch_shared_patterns(int pattern, int* out, char* error, int size) {
  return run(error, size, [&] { launch(shared_patterns, 1, kThreads, pattern, tensor(out, kThreads, "out")); });
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
        self.error = ctypes.create_string_buffer(8192)

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


def floats(values):
    return (ctypes.c_float * len(values))(*values)


def row_sums(kernels, rows, columns, barrier=True):
    values = [float((r * 7919 + c * 104729) % 1000) for r in range(rows) for c in range(columns)]
    sums = doubles([0.0] * rows)
    assert kernels("launch_row_sums", doubles(values), rows, columns, sums, int(barrier)) is None
    expected = [sum(values[r * columns:(r + 1) * columns]) for r in range(rows)]
    return list(sums), expected


# A thread or block as the sanitizer's reports name it.
THREAD = r"thread \(\d+, 0, 0\) of block \(\d+, 0, 0\)"


def test_shared_memory_reduction_with_its_barriers(kernels):
    actual, expected = row_sums(kernels, 16, 1000, barrier=True)
    assert actual == expected  # integer-valued doubles: exact in any order


def test_a_missing_barrier_is_a_shared_memory_race(kernels):
    # Without the barrier after the stores, thread t < 128 reads partial[t + 128] in the epoch thread
    # t + 128 writes it: before the write (a read of memory the block has not written, and then a
    # write after read) or after it (a read after write).
    error = kernels("launch_row_sums", doubles([1.0] * 16 * 300), 16, 300, doubles([0.0] * 16), 0)
    assert error.startswith("CUDA emulation: row_sums<false><<<(16, 1, 1), (256, 1, 1)>>>: ")
    assert re.search(r"\d+ shared-memory races", error)
    race = re.search(rf"shared-memory race: {THREAD} (reads|writes) \[(\d+)\] of a shared array \[256\], which "
                     rf"{THREAD} (wrote|read) with no __syncthreads between", error)
    assert race and int(race.group(2)) >= 128 and race.group(1) != race.group(3)[:4]


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
    assert error.startswith("CUDA emulation: divergent_barrier<<<(1, 1, 1), (64, 1, 1)>>>: deadlock in block "
                            "(0, 0, 0): 32 threads ((0, 0, 0), (2, 0, 0), (4, 0, 0), ...) wait at __syncthreads")
    assert "32 threads ((1, 0, 0), (3, 0, 0), (5, 0, 0), ...) have returned" in error
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


def shifted_copy(kernels, count, read_shift=0, write_shift=0, blocks=2):
    """The error of out[i + write_shift] = in[i + read_shift] over ``count`` elements (with two more
    after each array, which the kernel is not given), and the arrays."""
    source = floats([float(i + 1) for i in range(count)] + [-1.0, -1.0])
    out = floats([0.0] * (count + 2))
    error = kernels("launch_shifted_copy", source, out, count, blocks, read_shift, write_shift)
    return error, list(out)


def test_a_grid_stride_loop_over_every_element_is_clean(kernels):
    # 2 blocks of 256 threads for 1000 elements: each thread takes one or two, all of them read by
    # one block and written by one.
    error, out = shifted_copy(kernels, 1000)
    assert error is None and out == [float(i + 1) for i in range(1000)] + [0.0, 0.0]


def test_reads_past_a_tensor_are_reported_and_read_zeros(kernels):
    error, out = shifted_copy(kernels, 1000, read_shift=3)
    assert error.startswith("CUDA emulation: shifted_copy<<<(2, 1, 1), (256, 1, 1)>>>: 3 out-of-bounds accesses (the "
                            "out-of-bounds accesses were skipped: reads gave 0, writes were dropped):")
    # Elements 997 to 999 are the second pass of threads 485 to 487 of the grid's 512.
    for thread, offset in ((229, 1000), (230, 1001), (231, 1002)):
        assert (f"out-of-bounds read: thread ({thread}, 0, 0) of block (1, 0, 0) reads `in` at offset {offset}, "
                "outside its elements (offsets 0 to 999)") in error
    assert out == [float(i + 4) for i in range(997)] + [0.0] * 5  # not the values past the end


def test_writes_past_a_tensor_are_reported_and_dropped(kernels):
    error, out = shifted_copy(kernels, 1000, write_shift=2)
    assert "2 out-of-bounds accesses" in error
    assert ("out-of-bounds write: thread (230, 0, 0) of block (1, 0, 0) writes `out` at offset 1000, outside its "
            "elements (offsets 0 to 999)") in error
    assert out == [0.0, 0.0] + [float(i + 1) for i in range(998)] + [0.0, 0.0]  # what lies past it is intact
    # The process goes on: the next launch runs.
    assert row_sums(kernels, 4, 300) == row_sums(kernels, 4, 300)


def test_a_read_through_a_null_pointer_is_reported(kernels):
    out = floats([1.0] * 32)
    error = kernels("launch_null_read", out)
    assert "32 out-of-bounds accesses" in error
    shown = re.findall(r"out-of-bounds read: thread \((\d+), 0, 0\) of block \(0, 0, 0\) reads through a null pointer "
                       r"\(offset (\d+)\)", error)
    assert len(shown) == 3 and all(thread == offset for thread, offset in shown)
    assert list(out) == [0.0] * 32


@pytest.mark.parametrize("blocks", [2, 3])
def test_non_atomic_adds_of_several_blocks_into_one_slot_are_a_race(kernels, blocks):
    # Blocks run one after another here, so no update is lost; on a GPU they overlap and some are.
    total = ints(1)
    error = kernels("launch_add_into_one_slot", total, blocks, 0)
    assert error.startswith(f"CUDA emulation: add_into_one_slot<false><<<({blocks}, 1, 1), (64, 1, 1)>>>: ")
    assert re.search(r"race between blocks on `total` at offset 0: thread \(0, 0, 0\) of block \((\d), 0, 0\) "
                     r"(reads|writes) it, and thread \(0, 0, 0\) of block \((?!\1)\d, 0, 0\) (wrote|read) it "
                     r"\(not atomically\)", error)


def test_atomic_adds_into_one_slot_are_no_race(kernels):
    total = ints(1)
    assert kernels("launch_add_into_one_slot", total, 3, 1) is None
    assert total[0] == 3 * sum(range(64))


def test_a_block_reading_what_another_wrote_is_a_race(kernels):
    error = kernels("launch_read_the_previous_block", ints(4), 4)
    assert re.search(r"race between blocks on `values` at offset \d: thread \(0, 0, 0\) of block \(\d, 0, 0\) "
                     r"(reads|writes) it, and thread \(0, 0, 0\) of block \(\d, 0, 0\) (wrote|read) it", error)


@pytest.mark.parametrize("pattern, expected", [
    (0, rf"shared-memory race: {THREAD} writes \[1\]\[5\] of a shared array \[4\]\[64\], which {THREAD} wrote with no "
        r"__syncthreads between"),
    (1, rf"uninitialized shared-memory read: {THREAD} reads \[\d\]\[\d+\] of a shared array \[4\]\[64\], which no "
        r"thread of the block has written"),
    (2, r"out-of-bounds shared-memory write: thread \((63|127|191|255), 0, 0\) of block \(0, 0, 0\) writes index 64 "
        r"along dimension 1 of a shared array \[4\]\[64\]"),
    (4, rf"shared-memory race: {THREAD} (reads|writes) \[0\]\[\d\] of a shared array \[4\]\[64\], which {THREAD} "
        r"(wrote|read)"),
], ids=["write_write", "uninitialized", "out_of_bounds", "no_syncwarp"])
def test_shared_memory_misuse_is_reported(kernels, pattern, expected):
    error = kernels("launch_shared_patterns", pattern, ints(THREADS))
    assert error and re.search(expected, error), error


@pytest.mark.parametrize("pattern, expected", [(3, None), (5, [256]), (6, [(t + 1) % 256 for t in range(THREADS)])],
                         ids=["syncwarp", "atomics", "barrier"])
def test_synchronised_shared_memory_is_clean(kernels, pattern, expected):
    # A __syncwarp orders its warp's accesses, a __syncthreads the block's; atomics never race.
    out = ints(THREADS)
    assert kernels("launch_shared_patterns", pattern, out) is None
    if expected is not None:
        assert list(out)[:len(expected)] == expected
