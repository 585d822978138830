// CUDA emulation: the kernels of csrc/cuda compiled as host C++ and run on the CPU exactly as
// written. A launch runs the grid's blocks one after another; a block's threads are fibers (ucontext)
// on the calling thread, so __syncthreads and the warp shuffles are real barriers. Block order and
// the order in which a block's threads run between barriers are drawn at random per launch from
// the seed $PIXELFOLDER_CUDA_EMULATION_SEED (a fresh one per process when unset, reported by
// seed()), so a kernel whose result depends on either order gives wrong results or fails. The
// kernels' global pointers and shared arrays are checked (checked_memory.h): a launch that accessed
// memory out of bounds or raced throws an error naming the kernel, the threads and the memory.
// Included by cuda/cuda_common.cuh when PIXELFOLDER_CUDA_EMULATION is defined; needs only the C++
// standard library (tests/test_cuda_emulation.py builds it alone).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>

#include "checked_memory.h"

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
// One copy per OS thread, shared by the fibers of the block running there. `used` stops GCC from
// assuming that the barrier calls, opaque to it, cannot read or write the array.
#define __shared__ __attribute__((used)) static thread_local

struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int x = 1, unsigned int y = 1, unsigned int z = 1) : x(x), y(y), z(z) {}
};

constexpr int warpSize = 32;

// Device code calls the float overloads of the math functions unqualified, as CUDA declares them.
using std::cos;
using std::exp;
using std::log;
using std::sin;
using std::sqrt;

namespace pixelfolder::cuda_emulation {

// The indices of the emulated thread running now.
struct ThreadIndex {
  dim3 thread, block, block_dim, grid_dim;
};

// The running thread's indices, null outside a kernel (one kernel runs at a time in the process).
extern const ThreadIndex* running_index;

[[noreturn]] void called_outside_a_kernel();

inline const ThreadIndex& current() {
  if (running_index == nullptr) called_outside_a_kernel();
  return *running_index;
}

// The seed block and thread orders are drawn from.
std::uint64_t seed();

// Runs `thread` once per thread of every block of the grid (see the top of this file); `kernel` is
// the kernel's address, which the reports name it by.
void run_grid(const void* kernel, dim3 grid, dim3 block, const std::function<void()>& thread);

// A warp barrier: every lane of the warp publishes `bytes` bytes of `value`, then `result` receives
// those of lane `source` (its own value when `source` is negative). `mask` must name every lane of
// the warp: partial-warp shuffles are not emulated.
void warp_exchange(unsigned int mask, const void* value, void* result, std::size_t bytes, int source);

// The running thread's lane in its warp.
int lane();

template <typename T>
void watch_writes_of(const GlobalPointer<T>& pointer) {
  if constexpr (!std::is_const_v<T>) pointer.watch_writes();
}

template <typename Param>
void watch_writes_of(const Param&) {}

// Launches `kernel` as kernel<<<grid, block>>>(args...): each thread gets its own copy of the
// arguments, converted to the kernel's parameter types.
template <typename... Params, typename... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, Args&&... args) {
  static_assert(!(std::is_pointer_v<std::decay_t<Params>> || ...),
                "a kernel takes its pointers to global memory as RestrictPointer or DevicePointer "
                "(csrc/device_pointer.h), which the emulation checks");
  const std::tuple<Params...> params(std::forward<Args>(args)...);
  std::apply([](const auto&... param) { (watch_writes_of(param), ...); }, params);
  run_grid(reinterpret_cast<const void*>(kernel), grid, block, [&] { std::apply(kernel, params); });
}

// A warp shuffle: the value of lane `source`, or the lane's own value when `source` is -1.
template <typename T>
T shuffle(unsigned int mask, T value, int source) {
  static_assert(std::is_trivially_copyable_v<T>, "warp shuffles move trivially copyable values");
  T result;
  warp_exchange(mask, &value, &result, sizeof(T), source);
  return result;
}

}  // namespace pixelfolder::cuda_emulation

#define threadIdx (::pixelfolder::cuda_emulation::current().thread)
#define blockIdx (::pixelfolder::cuda_emulation::current().block)
#define blockDim (::pixelfolder::cuda_emulation::current().block_dim)
#define gridDim (::pixelfolder::cuda_emulation::current().grid_dim)

void __syncthreads();
void __syncwarp(unsigned int mask = 0xffffffffu);

// The lanes each shuffle reads, as CUDA documents them: within the lane's segment of `width` lanes,
// else (-1) the lane's own value.
template <typename T>
T __shfl_sync(unsigned int mask, T value, int source_lane, int width = warpSize) {
  const int lane = ::pixelfolder::cuda_emulation::lane();
  return ::pixelfolder::cuda_emulation::shuffle(mask, value, lane / width * width + source_lane % width);
}

template <typename T>
T __shfl_up_sync(unsigned int mask, T value, unsigned int delta, int width = warpSize) {
  const int lane = ::pixelfolder::cuda_emulation::lane();
  const int source = lane % width >= int(delta) ? lane - int(delta) : -1;
  return ::pixelfolder::cuda_emulation::shuffle(mask, value, source);
}

template <typename T>
T __shfl_down_sync(unsigned int mask, T value, unsigned int delta, int width = warpSize) {
  const int lane = ::pixelfolder::cuda_emulation::lane();
  const int source = lane % width + int(delta) < width ? lane + int(delta) : -1;
  return ::pixelfolder::cuda_emulation::shuffle(mask, value, source);
}

// A lane may read an earlier segment, but reads its own value instead of a later one.
template <typename T>
T __shfl_xor_sync(unsigned int mask, T value, int lane_mask, int width = warpSize) {
  const int lane = ::pixelfolder::cuda_emulation::lane(), source = lane ^ lane_mask;
  return ::pixelfolder::cuda_emulation::shuffle(mask, value, source < (lane / width + 1) * width ? source : -1);
}
