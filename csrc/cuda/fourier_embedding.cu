// Fourier embedding on CUDA: sin(w_x x + w_y y + b) with the grid made in the kernel; the backward
// reduces each channel's gradient in one block.
#include <torch/library.h>

#include "../fourier_grid.h"
#include "../op_arguments.h"
#include "cuda_common.cuh"

namespace pixelfolder {
namespace {

template <typename scalar_t, typename opmath_t, typename index_t>
__global__ void fourier_embedding_kernel(RestrictPointer<const scalar_t> weight, RestrictPointer<const scalar_t> bias,
                                         RestrictPointer<scalar_t> output, index_t height, index_t width,
                                         index_t numel) {
  PIXELFOLDER_GRID_STRIDE_LOOP(index_t, index, numel) {
    const index_t x = index % width, y = index / width % height, c = index / (width * height);
    output[index] = sin(opmath_t(weight[2 * c]) * linspace_minus1_to_1<opmath_t>(x, width) +
                        opmath_t(weight[2 * c + 1]) * linspace_minus1_to_1<opmath_t>(y, height) +
                        opmath_t(bias[c]));
  }
}

// One block per channel: sums of g * cos(phase) weighted by x, by y and by 1.
template <typename scalar_t, typename opmath_t, typename index_t>
__global__ void fourier_embedding_backward_kernel(RestrictPointer<const scalar_t> grad_output, Strides4<index_t> grad,
                                                  RestrictPointer<const scalar_t> weight,
                                                  RestrictPointer<const scalar_t> bias,
                                                  RestrictPointer<scalar_t> grad_weight,
                                                  RestrictPointer<scalar_t> grad_bias) {
  const index_t c = blockIdx.x, height = grad.size[2], width = grad.size[3];
  const opmath_t frequency_x = weight[2 * c], frequency_y = weight[2 * c + 1], phase = bias[c];
  opmath_t sums[3] = {0, 0, 0};
  for (index_t index = threadIdx.x; index < height * width; index += blockDim.x) {
    const index_t x = index % width, y = index / width;
    const opmath_t cx = linspace_minus1_to_1<opmath_t>(x, width), cy = linspace_minus1_to_1<opmath_t>(y, height);
    const opmath_t d = opmath_t(grad_output[grad.offset(0, c, y, x)]) * cos(frequency_x * cx + frequency_y * cy + phase);
    sums[0] += d * cx;
    sums[1] += d * cy;
    sums[2] += d;
  }
  __shared__ SharedArray<opmath_t, 3, kThreadsPerBlock> partial;
  for (int k = 0; k < 3; ++k) partial[k][threadIdx.x] = sums[k];
  __syncthreads();
  for (int active = kThreadsPerBlock / 2; active > 0; active /= 2) {
    if (threadIdx.x < active) {
      for (int k = 0; k < 3; ++k) partial[k][threadIdx.x] += partial[k][threadIdx.x + active];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    grad_weight[2 * c] = partial[0][0];
    grad_weight[2 * c + 1] = partial[1][0];
    grad_bias[c] = partial[2][0];
  }
}

at::Tensor fourier_embedding_cuda(const Arguments& args) {
  constexpr const char* op = "fourier_embedding";
  const auto& weight = args.tensor("weight");
  const auto& bias = args.tensor("bias");
  const int64_t height = args.integer("height"), width = args.integer("width");
  check_fourier_embedding_arguments(op, weight, bias, height, width, kCudaKernelDevice);
  const CudaDeviceGuard guard(weight.device());
  auto output = at::empty({1, weight.size(0), height, width}, weight.options());
  const int64_t numel = output.numel();
  if (numel == 0) return output;
  const auto w = weight.contiguous();
  const auto b = bias.contiguous();
  PIXELFOLDER_DISPATCH_CUDA_TYPES(weight.scalar_type(), op, [&] {
    PIXELFOLDER_DISPATCH_INDEX_TYPE(fits_32bit_index({output}), [&] {
      launch_kernel(fourier_embedding_kernel<scalar_t, at::opmath_type<scalar_t>, index_t>, blocks_for(numel),
                    kThreadsPerBlock, pointer_to<scalar_t>(w, "weight"), pointer_to<scalar_t>(b, "bias"),
                    pointer_to<scalar_t>(output, "output"),
                    static_cast<index_t>(height), static_cast<index_t>(width), static_cast<index_t>(numel));
    });
  });
  return output;
}

std::tuple<at::Tensor, at::Tensor> fourier_embedding_backward_cuda(const Arguments& args) {
  constexpr const char* op = "fourier_embedding_backward";
  const auto& grad_output = args.tensor("grad_output");
  const auto& weight = args.tensor("weight");
  const auto& bias = args.tensor("bias");
  check_fourier_embedding_backward_arguments(op, grad_output, weight, bias, kCudaKernelDevice);
  const int64_t channels = weight.size(0);
  const CudaDeviceGuard guard(weight.device());
  auto grad_weight = at::empty_like(weight, at::MemoryFormat::Contiguous);
  auto grad_bias = at::empty_like(bias, at::MemoryFormat::Contiguous);
  if (channels == 0) return {grad_weight, grad_bias};
  const auto w = weight.contiguous();
  const auto b = bias.contiguous();
  PIXELFOLDER_DISPATCH_CUDA_TYPES(weight.scalar_type(), op, [&] {
    PIXELFOLDER_DISPATCH_INDEX_TYPE(fits_32bit_index({grad_output}), [&] {
      launch_kernel(fourier_embedding_backward_kernel<scalar_t, at::opmath_type<scalar_t>, index_t>,
                    static_cast<unsigned int>(channels), kThreadsPerBlock,
                    pointer_to<scalar_t>(grad_output, "grad_output"), Strides4<index_t>(grad_output),
                    pointer_to<scalar_t>(w, "weight"), pointer_to<scalar_t>(b, "bias"),
                    pointer_to<scalar_t>(grad_weight, "grad_weight"), pointer_to<scalar_t>(grad_bias, "grad_bias"));
    });
  });
  return {grad_weight, grad_bias};
}

}  // namespace

TORCH_LIBRARY_IMPL(pixelfolder_ops, PIXELFOLDER_CUDA_DISPATCH_KEY, m) {
  m.impl("fourier_embedding", kernel_of<fourier_embedding_cuda>());
  m.impl("fourier_embedding_backward", kernel_of<fourier_embedding_backward_cuda>());
}

}  // namespace pixelfolder
