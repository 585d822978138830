// Modulated conv on CUDA: the demodulation coefficients as a kernel (one warp per (b, o)); the conv
// itself is the device-independent composite (composite.cpp): x * s, one cuDNN conv, * d.
#include <torch/library.h>

#include "../composite.h"
#include "../op_arguments.h"
#include "cuda_common.cuh"

namespace pixelfolder {
namespace {

constexpr int kWarp = 32;

// d[b, o] = rsqrt(sum_i s[b, i]^2 * sum_k W[o, i, k]^2 + eps): lanes split i, then a warp sum.
template <typename scalar_t, typename opmath_t>
__global__ void demod_kernel(const scalar_t* __restrict__ weight, const scalar_t* __restrict__ styles,
                             opmath_t* __restrict__ demod, int64_t batch, int64_t out_channels, int64_t in_channels,
                             int64_t taps, opmath_t eps) {
  const int64_t warps = static_cast<int64_t>(gridDim.x) * blockDim.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  for (int64_t bo = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / kWarp; bo < batch * out_channels;
       bo += warps) {
    const int64_t b = bo / out_channels, o = bo % out_channels;
    opmath_t sum = 0;
    for (int64_t i = lane; i < in_channels; i += kWarp) {
      const scalar_t* w = weight + (o * in_channels + i) * taps;
      opmath_t energy = 0;
      for (int64_t k = 0; k < taps; ++k) energy += opmath_t(w[k]) * opmath_t(w[k]);
      const opmath_t style = styles[b * in_channels + i];
      sum += style * style * energy;
    }
    for (int offset = kWarp / 2; offset > 0; offset /= 2) sum += __shfl_down_sync(0xffffffff, sum, offset);
    if (lane == 0) demod[bo] = opmath_t(1) / sqrt(sum + eps);
  }
}

at::Tensor modulated_conv2d_demod_cuda(const at::Tensor& weight, const at::Tensor& styles, double eps) {
  constexpr const char* op = "modulated_conv2d_demod";
  check_modulated_conv2d_demod_arguments(op, weight, styles, kCudaKernelDevice);
  const CudaDeviceGuard guard(weight.device());
  const int64_t batch = styles.size(0), out_channels = weight.size(0);
  auto demod = empty_demod(weight, styles);
  if (demod.numel() == 0) return demod;
  const auto w = weight.contiguous();
  const auto s = styles.contiguous();
  PIXELFOLDER_DISPATCH_CUDA_TYPES(weight.scalar_type(), op, [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    launch_kernel(demod_kernel<scalar_t, opmath_t>, blocks_for(demod.numel() * kWarp), kThreadsPerBlock,
                  w.data_ptr<scalar_t>(), s.data_ptr<scalar_t>(), demod.data_ptr<opmath_t>(), batch, out_channels,
                  weight.size(1), weight.size(2) * weight.size(3), opmath_t(eps));
  });
  return demod;
}

}  // namespace

TORCH_LIBRARY_IMPL(pixelfolder_ops, PIXELFOLDER_CUDA_DISPATCH_KEY, m) {
  m.impl("modulated_conv2d_demod", &modulated_conv2d_demod_cuda);
  m.impl("modulated_conv2d", &modulated_conv2d);
  m.impl("modulated_conv2d_backward", &modulated_conv2d_backward);
}

}  // namespace pixelfolder
