// Bias + leaky ReLU + gain (+ clamp) on CUDA, and its input gradient from the output's sign.
#include <torch/library.h>

#include "../activation.h"
#include "../op_arguments.h"
#include "cuda_common.cuh"

namespace pixelfolder {
namespace {

template <typename scalar_t, typename opmath_t, typename index_t>
__global__ void fused_leaky_relu_kernel(RestrictPointer<const scalar_t> input, RestrictPointer<const scalar_t> bias,
                                        RestrictPointer<scalar_t> output, ChannelLayout layout,
                                        LeakyReLU<opmath_t> act, index_t numel) {
  PIXELFOLDER_GRID_STRIDE_LOOP(index_t, index, numel) {
    const opmath_t shift = bias ? opmath_t(bias[layout.channel(index)]) : opmath_t(0);
    output[index] = act(opmath_t(input[index]) + shift);
  }
}

template <typename scalar_t, typename opmath_t, typename index_t>
__global__ void fused_leaky_relu_backward_kernel(RestrictPointer<const scalar_t> grad_output,
                                                 RestrictPointer<const scalar_t> output,
                                                 RestrictPointer<scalar_t> grad_input, LeakyReLU<opmath_t> act,
                                                 index_t numel) {
  PIXELFOLDER_GRID_STRIDE_LOOP(index_t, index, numel) {
    grad_input[index] = opmath_t(grad_output[index]) * act.gradient(opmath_t(output[index]));
  }
}

at::Tensor fused_leaky_relu_cuda(const Arguments& args) {
  constexpr const char* op = "fused_leaky_relu";
  const auto& input = args.tensor("input");
  const auto bias = args.optional_tensor("bias");
  check_fused_leaky_relu_arguments(op, input, bias, kCudaKernelDevice);
  const auto act_arguments = leaky_relu_arguments(args);
  const CudaDeviceGuard guard(input.device());
  const auto layout = ChannelLayout::of(input);
  const auto x = input.contiguous(layout.memory_format());
  const auto b = bias ? bias->contiguous() : at::Tensor();
  auto output = at::empty_like(x);
  const int64_t numel = x.numel();
  if (numel == 0) return output;
  PIXELFOLDER_DISPATCH_CUDA_TYPES(input.scalar_type(), op, [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    PIXELFOLDER_DISPATCH_INDEX_TYPE(fits_32bit_index({x}), [&] {
      launch_kernel(fused_leaky_relu_kernel<scalar_t, opmath_t, index_t>, blocks_for(numel), kThreadsPerBlock,
                    pointer_to<scalar_t>(x, "input"), bias ? pointer_to<scalar_t>(b, "bias") : nullptr,
                    pointer_to<scalar_t>(output, "output"), layout, act_arguments.as<opmath_t>(),
                    static_cast<index_t>(numel));
    });
  });
  return output;
}

at::Tensor fused_leaky_relu_backward_cuda(const Arguments& args) {
  constexpr const char* op = "fused_leaky_relu_backward";
  const auto& grad_output = args.tensor("grad_output");
  const auto& output = args.tensor("output");
  check_fused_leaky_relu_backward_arguments(op, grad_output, output, kCudaKernelDevice);
  const auto act_arguments = leaky_relu_arguments(args);
  const CudaDeviceGuard guard(output.device());
  const auto format = ChannelLayout::of(output).memory_format();
  const auto y = output.contiguous(format);
  const auto g = grad_output.contiguous(format);
  auto grad_input = at::empty_like(y);
  const int64_t numel = y.numel();
  if (numel == 0) return grad_input;
  PIXELFOLDER_DISPATCH_CUDA_TYPES(output.scalar_type(), op, [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    PIXELFOLDER_DISPATCH_INDEX_TYPE(fits_32bit_index({y}), [&] {
      launch_kernel(fused_leaky_relu_backward_kernel<scalar_t, opmath_t, index_t>, blocks_for(numel),
                    kThreadsPerBlock, pointer_to<scalar_t>(g, "grad_output"), pointer_to<scalar_t>(y, "output"),
                    pointer_to<scalar_t>(grad_input, "grad_input"), act_arguments.as_read_from<opmath_t, scalar_t>(),
                    static_cast<index_t>(numel));
    });
  });
  return grad_input;
}

}  // namespace

TORCH_LIBRARY_IMPL(pixelfolder_ops, PIXELFOLDER_CUDA_DISPATCH_KEY, m) {
  m.impl("fused_leaky_relu", kernel_of<fused_leaky_relu_cuda>());
  m.impl("fused_leaky_relu_backward", kernel_of<fused_leaky_relu_backward_cuda>());
}

}  // namespace pixelfolder
