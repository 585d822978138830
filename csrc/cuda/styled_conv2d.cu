// StyledConv on CUDA: the composite conv (composite.cpp: x * s, one cuDNN conv) and one epilogue
// kernel that applies the demodulation, noise, bias, leaky ReLU and gain and stores unfolded when
// asked, so the unfold costs no pass of its own; its backward kernel writes the conv's gradient and
// reduces the demodulation, bias and noise gradients in the same pass.
#include <torch/library.h>

#include "../activation.h"
#include "../composite.h"
#include "../epilogue.h"
#include "../op_arguments.h"
#include "channel_tiles.cuh"
#include "cuda_common.cuh"

namespace pixelfolder {
namespace {

// One thread per conv output element, in the conv output's memory order (coalesced reads).
template <typename scalar_t, typename opmath_t, typename index_t>
__global__ void epilogue_kernel(RestrictPointer<const scalar_t> conv_output, Strides4<index_t> in,
                                RestrictPointer<scalar_t> output, Strides4<index_t> out,
                                EpiloguePointers<scalar_t, opmath_t> epilogue, LeakyReLU<opmath_t> act,
                                bool unfold_output, bool channels_last, index_t numel) {
  PIXELFOLDER_GRID_STRIDE_LOOP(index_t, index, numel) {
    const auto p = coordinates_of(index, in.size, channels_last);
    const opmath_t a = epilogue.preactivation(conv_output[in.offset(p.n, p.c, p.y, p.x)], p.n, p.c, p.y, p.x);
    const auto to = epilogue_output_index(unfold_output, in.size[1], p.c, p.y, p.x);
    output[out.offset(p.n, to.c, to.y, to.x)] = act(a);
  }
}

// The pre-activation gradient g: the output gradient (read where the forward stored) times the slope
// at the recomputed pre-activation. Stores the conv's gradient g * demod, and sums per (image,
// channel) over the block's chunk g * conv (demod's gradient) and g (the bias's); with noise, per
// pixel of the chunk, g over the block's channels (noise_partial[image][channel tile][pixel]).
template <typename scalar_t, typename opmath_t, typename index_t>
__global__ void epilogue_backward_kernel(RestrictPointer<const scalar_t> grad_output, Strides4<index_t> grad,
                                         RestrictPointer<const scalar_t> conv_output, Strides4<index_t> in,
                                         RestrictPointer<scalar_t> grad_conv, Strides4<index_t> out,
                                         EpiloguePointers<scalar_t, opmath_t> epilogue, LeakyReLU<opmath_t> act,
                                         bool unfold_output, bool channels_fast,
                                         RestrictPointer<opmath_t> demod_partial,
                                         RestrictPointer<opmath_t> bias_partial,
                                         RestrictPointer<opmath_t> noise_partial) {
  const index_t channels = in.size[1], width = in.size[3], pixels = in.size[2] * width;
  const ChannelTile<index_t> tile(pixels, channels_fast);
  __shared__ StepTile<opmath_t> scratch;
  opmath_t demod_sums[kElementsPerThread] = {}, bias_sums[kElementsPerThread] = {};
  for (index_t step = tile.first_pixel; step < tile.end_pixel; step += kTile) {
    for (int k = 0; k < kElementsPerThread; ++k) {
      const index_t c = tile.channel(k), p = tile.pixel(step, k);
      opmath_t g = 0;
      if (c < channels && p < tile.end_pixel) {
        const index_t y = p / width, x = p % width;
        const opmath_t conv = conv_output[in.offset(tile.image, c, y, x)];
        const auto row = epilogue.row(tile.image, c, y);
        const auto at = epilogue_output_index(unfold_output, channels, c, y, x);
        g = opmath_t(grad_output[grad.offset(tile.image, at.c, at.y, at.x)]) * act.gradient(act(row.preactivation(conv, x)));
        grad_conv[out.offset(tile.image, c, y, x)] = g * row.scale;
        demod_sums[k] += g * conv;
        bias_sums[k] += g;
      }
      if (noise_partial) scratch[tile.slot_row(k)][tile.lane] = g;
    }
    if (noise_partial) {  // the same for every thread of the block, so all of them reach the barriers
      __syncthreads();
      const index_t p = step + static_cast<index_t>(threadIdx.x);
      if (threadIdx.x < kTile && p < tile.end_pixel) {
        noise_partial[(tile.image * static_cast<index_t>(gridDim.y) + static_cast<index_t>(blockIdx.y)) * pixels + p] =
            tile.template sum_of<opmath_t>(scratch, threadIdx.x, false);
      }
      __syncthreads();
    }
  }
  store_channel_sums(tile, scratch, demod_sums, demod_partial, channels);
  store_channel_sums(tile, scratch, bias_sums, bias_partial, channels);
}

at::Tensor epilogue_cuda(const Arguments& args) {
  constexpr const char* op = "styled_conv2d_epilogue";
  const auto options = checked_epilogue_options(args);
  const auto& conv_output = args.tensor("conv_output");
  const CudaDeviceGuard guard(conv_output.device());
  auto output = empty_epilogue_output(conv_output, options.unfold_output);
  const int64_t numel = conv_output.numel();
  if (numel == 0) return output;
  const EpilogueTensors operands(args);
  const bool channels_last = output_memory_format(conv_output) == at::MemoryFormat::ChannelsLast;
  PIXELFOLDER_DISPATCH_CUDA_TYPES(conv_output.scalar_type(), op, [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    PIXELFOLDER_DISPATCH_INDEX_TYPE(fits_32bit_index({conv_output, output}), [&] {
      launch_kernel(epilogue_kernel<scalar_t, opmath_t, index_t>, blocks_for(numel), kThreadsPerBlock,
                    pointer_to<scalar_t>(conv_output, "conv_output"), Strides4<index_t>(conv_output),
                    pointer_to<scalar_t>(output, "output"), Strides4<index_t>(output), operands.pointers<scalar_t>(),
                    options.activation.as<opmath_t>(), options.unfold_output, channels_last,
                    static_cast<index_t>(numel));
    });
  });
  return output;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> epilogue_backward_cuda(const Arguments& args) {
  constexpr const char* op = "styled_conv2d_epilogue_backward";
  const auto options = checked_epilogue_backward_options(args);
  const auto& grad_output = args.tensor("grad_output");
  const auto& conv_output = args.tensor("conv_output");
  const auto noise = args.optional_tensor("noise");
  const CudaDeviceGuard guard(conv_output.device());
  const int64_t batch = conv_output.size(0), channels = conv_output.size(1);
  const int64_t pixels = conv_output.size(2) * conv_output.size(3);
  auto grad_conv = empty_4d(conv_output.sizes(), conv_output);
  const auto sums = conv_output.options().dtype(at::toOpMathType(conv_output.scalar_type()));
  auto demod_partial = at::empty({batch, channels, chunks_of(pixels)}, sums);
  auto bias_partial = at::empty_like(demod_partial);
  const dim3 grid = channel_tile_grid(batch, channels, pixels);
  auto noise_partial = at::empty(noise ? std::vector<int64_t>{batch, grid.y, pixels} : std::vector<int64_t>{0}, sums);
  if (grad_conv.numel() > 0) {
    const EpilogueTensors operands(args);
    const bool channels_fast = output_memory_format(conv_output) == at::MemoryFormat::ChannelsLast;
    PIXELFOLDER_DISPATCH_CUDA_TYPES(conv_output.scalar_type(), op, [&] {
      using opmath_t = at::opmath_type<scalar_t>;
      PIXELFOLDER_DISPATCH_INDEX_TYPE(fits_32bit_index({grad_output, conv_output, grad_conv, demod_partial, noise_partial}), [&] {
        launch_kernel(epilogue_backward_kernel<scalar_t, opmath_t, index_t>, grid, kThreadsPerBlock,
                      pointer_to<scalar_t>(grad_output, "grad_output"), Strides4<index_t>(grad_output),
                      pointer_to<scalar_t>(conv_output, "conv_output"), Strides4<index_t>(conv_output),
                      pointer_to<scalar_t>(grad_conv, "grad_conv"), Strides4<index_t>(grad_conv),
                      operands.pointers<scalar_t>(), options.activation.as<opmath_t>(), options.unfold_output,
                      channels_fast,
                      pointer_to<opmath_t>(demod_partial, "demod_partial"),
                      pointer_to<opmath_t>(bias_partial, "bias_partial"),
                      noise ? pointer_to<opmath_t>(noise_partial, "noise_partial") : nullptr);
      });
    });
  }
  // The blocks' partial sums added in a fixed order.
  const auto grad_noise = noise ? noise_partial.sum(1).view({batch, 1, conv_output.size(2), conv_output.size(3)})
                                : noise_partial;
  return {grad_conv, demod_partial.sum(2), bias_partial.sum(at::IntArrayRef{0, 2}), grad_noise};
}

}  // namespace

TORCH_LIBRARY_IMPL(pixelfolder_ops, PIXELFOLDER_CUDA_DISPATCH_KEY, m) {
  m.impl("styled_conv2d", kernel_of<styled_conv2d>());
  m.impl("styled_conv2d_backward", kernel_of<styled_conv2d_backward>());
  m.impl("styled_conv2d_epilogue", kernel_of<epilogue_cuda>());
  m.impl("styled_conv2d_epilogue_backward", kernel_of<epilogue_backward_cuda>());
}

}  // namespace pixelfolder
