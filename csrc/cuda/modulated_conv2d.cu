// Modulated conv on CUDA: the demodulation coefficients as a kernel (one warp per (b, o)) and the
// per-channel spatial dot products its backward needs; the conv itself is the device-independent
// composite (composite.cpp): x * s, one cuDNN conv, * d.
#include <torch/library.h>

#include "../composite.h"
#include "../op_arguments.h"
#include "channel_tiles.cuh"
#include "cuda_common.cuh"

namespace pixelfolder {
namespace {

constexpr int kWarp = 32;

// d[b, o] = rsqrt(sum_i s[b, i]^2 * sum_k W[o, i, k]^2 + eps): lanes split i, then a warp sum.
template <typename scalar_t, typename opmath_t, typename index_t>
__global__ void demod_kernel(RestrictPointer<const scalar_t> weight, RestrictPointer<const scalar_t> styles,
                             RestrictPointer<opmath_t> demod, index_t batch, index_t out_channels, index_t in_channels,
                             index_t taps, opmath_t eps) {
  const index_t warps = static_cast<index_t>(gridDim.x) * static_cast<index_t>(blockDim.x) / kWarp;
  const int lane = threadIdx.x % kWarp;
  for (index_t bo = (static_cast<index_t>(blockIdx.x) * static_cast<index_t>(blockDim.x) + threadIdx.x) / kWarp;
       bo < batch * out_channels; bo += warps) {
    const index_t b = bo / out_channels, o = bo % out_channels;
    opmath_t sum = 0;
    for (index_t i = lane; i < in_channels; i += kWarp) {
      const auto w = weight + (o * in_channels + i) * taps;
      opmath_t energy = 0;
      for (index_t k = 0; k < taps; ++k) energy += opmath_t(w[k]) * opmath_t(w[k]);
      const opmath_t style = styles[b * in_channels + i];
      sum += style * style * energy;
    }
    for (int offset = kWarp / 2; offset > 0; offset /= 2) sum += __shfl_down_sync(0xffffffff, sum, offset);
    if (lane == 0) demod[bo] = opmath_t(1) / sqrt(sum + eps);
  }
}

// Per (image, channel), sum over the block's chunk of pixels of a * b, each read through its own
// strides (channel_tiles.cuh: the lanes walk the contiguous axis of `a`).
template <typename scalar_t, typename opmath_t, typename index_t>
__global__ void spatial_dot_kernel(RestrictPointer<const scalar_t> a, Strides4<index_t> as,
                                   RestrictPointer<const scalar_t> b, Strides4<index_t> bs,
                                   RestrictPointer<opmath_t> partial, bool channels_fast) {
  const index_t channels = as.size[1], width = as.size[3];
  const ChannelTile<index_t> tile(as.size[2] * width, channels_fast);
  __shared__ StepTile<opmath_t> scratch;
  opmath_t sums[kElementsPerThread] = {};
  for (index_t step = tile.first_pixel; step < tile.end_pixel; step += kTile) {
    for (int k = 0; k < kElementsPerThread; ++k) {
      const index_t c = tile.channel(k), p = tile.pixel(step, k);
      if (c < channels && p < tile.end_pixel) {
        const index_t y = p / width, x = p % width;
        sums[k] += opmath_t(a[as.offset(tile.image, c, y, x)]) * opmath_t(b[bs.offset(tile.image, c, y, x)]);
      }
    }
  }
  store_channel_sums(tile, scratch, sums, partial, channels);
}

at::Tensor spatial_dot_cuda(const Arguments& args) {
  constexpr const char* op = "spatial_dot";
  const auto& a = args.tensor("a");
  const auto& b = args.tensor("b");
  check_spatial_dot_arguments(op, a, b, kCudaKernelDevice);
  const CudaDeviceGuard guard(a.device());
  const int64_t batch = a.size(0), channels = a.size(1), pixels = a.size(2) * a.size(3);
  auto partial = at::empty({batch, channels, chunks_of(pixels)}, empty_spatial_dot(a).options());
  if (partial.numel() > 0) {
    const bool channels_fast = output_memory_format(a) == at::MemoryFormat::ChannelsLast;
    PIXELFOLDER_DISPATCH_CUDA_TYPES(a.scalar_type(), op, [&] {
      using opmath_t = at::opmath_type<scalar_t>;
      PIXELFOLDER_DISPATCH_INDEX_TYPE(fits_32bit_index({a, b, partial}), [&] {
        launch_kernel(spatial_dot_kernel<scalar_t, opmath_t, index_t>, channel_tile_grid(batch, channels, pixels),
                      kThreadsPerBlock, pointer_to<scalar_t>(a, "a"), Strides4<index_t>(a),
                      pointer_to<scalar_t>(b, "b"), Strides4<index_t>(b), pointer_to<opmath_t>(partial, "partial"),
                      channels_fast);
      });
    });
  }
  return partial.sum(2);  // in a fixed order: two runs give the same bits
}

at::Tensor modulated_conv2d_demod_cuda(const Arguments& args) {
  constexpr const char* op = "modulated_conv2d_demod";
  const auto& weight = args.tensor("weight");
  const auto& styles = args.tensor("styles");
  const double eps = args.real("eps");
  check_modulated_conv2d_demod_arguments(op, weight, styles, kCudaKernelDevice);
  const CudaDeviceGuard guard(weight.device());
  const int64_t batch = styles.size(0), out_channels = weight.size(0);
  auto demod = empty_demod(weight, styles);
  if (demod.numel() == 0) return demod;
  const auto w = weight.contiguous();
  const auto s = styles.contiguous();
  PIXELFOLDER_DISPATCH_CUDA_TYPES(weight.scalar_type(), op, [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    PIXELFOLDER_DISPATCH_INDEX_TYPE(fits_32bit_index({w, s, demod}), [&] {
      launch_kernel(demod_kernel<scalar_t, opmath_t, index_t>, blocks_for(demod.numel() * kWarp), kThreadsPerBlock,
                    pointer_to<scalar_t>(w, "weight"), pointer_to<scalar_t>(s, "styles"),
                    pointer_to<opmath_t>(demod, "demod"),
                    static_cast<index_t>(batch), static_cast<index_t>(out_channels),
                    static_cast<index_t>(weight.size(1)), static_cast<index_t>(weight.size(2) * weight.size(3)),
                    opmath_t(eps));
    });
  });
  return demod;
}

}  // namespace

TORCH_LIBRARY_IMPL(pixelfolder_ops, PIXELFOLDER_CUDA_DISPATCH_KEY, m) {
  m.impl("modulated_conv2d_demod", kernel_of<modulated_conv2d_demod_cuda>());
  m.impl("spatial_dot", kernel_of<spatial_dot_cuda>());
  m.impl("modulated_conv2d", kernel_of<modulated_conv2d>());
  m.impl("modulated_conv2d_backward", kernel_of<modulated_conv2d_backward>());
}

}  // namespace pixelfolder
