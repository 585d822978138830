// Launch helpers shared by the CUDA kernels. The same sources build for the GPU (nvcc) and, with
// PIXELFOLDER_CUDA_EMULATION, as host C++ whose kernels run on the CPU (csrc/emulation): the device
// type, dispatch key, device guard, launch and shared arrays below, and the kernels' pointers
// (device_pointer.h), are the only places the two builds differ.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>

#include <algorithm>
#include <utility>

#include "../common.h"
#include "../device_pointer.h"

#ifdef PIXELFOLDER_CUDA_EMULATION
#include <c10/core/DeviceGuard.h>

#include "../emulation/cuda_emulation.h"
// The emulated kernels serve the CPU dispatch key (csrc/cpu is not compiled in that build).
#define PIXELFOLDER_CUDA_DISPATCH_KEY CPU
#else
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#define PIXELFOLDER_CUDA_DISPATCH_KEY CUDA
#endif

namespace pixelfolder {

#ifdef PIXELFOLDER_CUDA_EMULATION
constexpr c10::DeviceType kCudaKernelDevice = c10::kCPU;
using CudaDeviceGuard = c10::DeviceGuard;
#else
constexpr c10::DeviceType kCudaKernelDevice = c10::kCUDA;
using CudaDeviceGuard = c10::cuda::CUDAGuard;
#endif

// A __shared__ array T[Dims[0]][Dims[1]]...: the plain array on the GPU, one whose accesses the
// emulation checks for races and bounds (checked_memory.h) in the emulation build. On the GPU the
// alias goes through a struct, so a function template cannot deduce T from it.
#ifdef PIXELFOLDER_CUDA_EMULATION
using cuda_emulation::SharedArray;
#else
template <typename T, int Extent, int... Rest>
struct PlainArray {
  using type = typename PlainArray<T, Rest...>::type[Extent];
};

template <typename T, int Extent>
struct PlainArray<T, Extent> {
  using type = T[Extent];
};

template <typename T, int... Dims>
using SharedArray = typename PlainArray<T, Dims...>::type;
#endif

// kernel<<<blocks, threads, 0, current stream>>>(args...), then the launch error check.
template <typename... Params, typename... Args>
void launch_kernel(void (*kernel)(Params...), dim3 blocks, dim3 threads, Args&&... args) {
#ifdef PIXELFOLDER_CUDA_EMULATION
  cuda_emulation::launch(kernel, blocks, threads, std::forward<Args>(args)...);
#else
  kernel<<<blocks, threads, 0, c10::cuda::getCurrentCUDAStream()>>>(std::forward<Args>(args)...);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
#endif
}

constexpr int kThreadsPerBlock = 256;
constexpr int64_t kMaxBlocks = 1 << 16;
static_assert(kMaxBlocks * kThreadsPerBlock == kMaxGridThreads, "fits_32bit_index's headroom is one whole grid");

// Blocks for a grid-stride loop over n elements (capped: each thread then takes several).
inline unsigned int blocks_for(int64_t n) {
  return static_cast<unsigned int>(std::max<int64_t>(1, std::min<int64_t>((n + kThreadsPerBlock - 1) / kThreadsPerBlock, kMaxBlocks)));
}

// index_t: int32_t where fits_32bit_index (common.h) holds for the tensors of the loop, else int64_t.
#define PIXELFOLDER_GRID_STRIDE_LOOP(index_t, index, n)                                                           \
  for (index_t index = static_cast<index_t>(blockIdx.x) * static_cast<index_t>(blockDim.x) + threadIdx.x; \
       index < (n); index += static_cast<index_t>(blockDim.x) * static_cast<index_t>(gridDim.x))

// float32, float64, and the two 16-bit types (computed in float).
#define PIXELFOLDER_DISPATCH_CUDA_TYPES(TYPE, NAME, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, TYPE, NAME, __VA_ARGS__)

// Sizes and strides of a 4-D tensor, passed to kernels by value, in the kernel's index type.
template <typename index_t>
struct Strides4 {
  index_t size[4], stride[4];

  explicit Strides4(const at::Tensor& t) {
    for (int d = 0; d < 4; ++d) {
      size[d] = static_cast<index_t>(t.size(d));
      stride[d] = static_cast<index_t>(t.stride(d));
    }
  }

  C10_HOST_DEVICE index_t offset(index_t n, index_t c, index_t y, index_t x) const {
    return n * stride[0] + c * stride[1] + y * stride[2] + x * stride[3];
  }
};

// The (n, c, y, x) of the index-th element in memory order of a tensor of `sizes`, NCHW or NHWC.
template <typename index_t>
struct Coordinates {
  index_t n, c, y, x;
};

template <typename index_t>
C10_HOST_DEVICE inline Coordinates<index_t> coordinates_of(index_t index, const index_t* sizes, bool channels_last) {
  if (channels_last) {
    const index_t c = index % sizes[1];
    index /= sizes[1];
    const index_t x = index % sizes[3];
    index /= sizes[3];
    return {index / sizes[2], c, index % sizes[2], x};
  }
  const index_t x = index % sizes[3];
  index /= sizes[3];
  const index_t y = index % sizes[2];
  index /= sizes[2];
  return {index / sizes[1], index % sizes[1], y, x};
}

}  // namespace pixelfolder
