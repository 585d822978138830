// StyledConv on CUDA: the composite conv (composite.cpp: x * s, one cuDNN conv) and one epilogue
// kernel that applies the demodulation, noise, bias, leaky ReLU and gain and stores unfolded when
// asked, so the unfold costs no pass of its own.
#include <torch/library.h>

#include "../activation.h"
#include "../composite.h"
#include "../epilogue.h"
#include "../op_arguments.h"
#include "cuda_common.cuh"

namespace pixelfolder {
namespace {

// One thread per conv output element, in the conv output's memory order (coalesced reads).
template <typename scalar_t, typename opmath_t>
__global__ void epilogue_kernel(const scalar_t* __restrict__ conv_output, Strides4 in, scalar_t* __restrict__ output,
                                Strides4 out, EpiloguePointers<scalar_t, opmath_t> epilogue, LeakyReLU<opmath_t> act,
                                bool unfold_output, bool channels_last, int64_t numel) {
  PIXELFOLDER_GRID_STRIDE_LOOP(index, numel) {
    const auto p = coordinates_of(index, in.size, channels_last);
    const opmath_t a = epilogue.preactivation(conv_output[in.offset(p.n, p.c, p.y, p.x)], p.n, p.c, p.y, p.x);
    const auto to = epilogue_output_index(unfold_output, in.size[1], p.c, p.y, p.x);
    output[out.offset(p.n, to.c, to.y, to.x)] = act(a);
  }
}

// The pre-activation gradient: the output gradient (read where the forward stored) times the
// slope at the recomputed pre-activation.
template <typename scalar_t, typename opmath_t>
__global__ void epilogue_backward_kernel(const scalar_t* __restrict__ grad_output, Strides4 grad,
                                         const scalar_t* __restrict__ conv_output, Strides4 in,
                                         scalar_t* __restrict__ grad_preactivation, Strides4 out,
                                         EpiloguePointers<scalar_t, opmath_t> epilogue, LeakyReLU<opmath_t> act,
                                         bool unfold_output, bool channels_last, int64_t numel) {
  PIXELFOLDER_GRID_STRIDE_LOOP(index, numel) {
    const auto p = coordinates_of(index, in.size, channels_last);
    const opmath_t a = epilogue.preactivation(conv_output[in.offset(p.n, p.c, p.y, p.x)], p.n, p.c, p.y, p.x);
    const auto at = epilogue_output_index(unfold_output, in.size[1], p.c, p.y, p.x);
    const opmath_t g = grad_output[grad.offset(p.n, at.c, at.y, at.x)];
    grad_preactivation[out.offset(p.n, p.c, p.y, p.x)] = g * act.gradient(act(a));
  }
}

at::Tensor epilogue_cuda(const at::Tensor& conv_output, const c10::optional<at::Tensor>& demod,
                         const c10::optional<at::Tensor>& noise, const c10::optional<at::Tensor>& noise_strength,
                         const c10::optional<at::Tensor>& bias, double negative_slope, double gain,
                         bool unfold_output) {
  constexpr const char* op = "styled_conv2d_epilogue";
  check_epilogue_arguments(op, conv_output, demod, noise, noise_strength, bias, unfold_output);
  const CudaDeviceGuard guard(conv_output.device());
  auto output = empty_epilogue_output(conv_output, unfold_output);
  const int64_t numel = conv_output.numel();
  if (numel == 0) return output;
  const auto d = contiguous(demod), b = contiguous(bias);
  const bool channels_last = output_memory_format(conv_output) == at::MemoryFormat::ChannelsLast;
  PIXELFOLDER_DISPATCH_CUDA_TYPES(conv_output.scalar_type(), op, [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    launch_kernel(epilogue_kernel<scalar_t, opmath_t>, blocks_for(numel), kThreadsPerBlock,
                  conv_output.data_ptr<scalar_t>(), Strides4(conv_output), output.data_ptr<scalar_t>(),
                  Strides4(output), epilogue_pointers<scalar_t>(conv_output, d, noise, noise_strength, b),
                  make_leaky_relu<opmath_t>(op, negative_slope, gain, c10::nullopt), unfold_output, channels_last,
                  numel);
  });
  return output;
}

at::Tensor epilogue_backward_cuda(const at::Tensor& grad_output, const at::Tensor& conv_output,
                                  const c10::optional<at::Tensor>& demod, const c10::optional<at::Tensor>& noise,
                                  const c10::optional<at::Tensor>& noise_strength,
                                  const c10::optional<at::Tensor>& bias, double negative_slope, double gain,
                                  bool unfold_output) {
  constexpr const char* op = "styled_conv2d_epilogue_backward";
  check_epilogue_arguments(op, conv_output, demod, noise, noise_strength, bias, unfold_output);
  check_epilogue_grad_output(op, grad_output, conv_output, unfold_output);
  const CudaDeviceGuard guard(conv_output.device());
  auto grad_preactivation = empty_4d(conv_output.sizes(), conv_output);
  const int64_t numel = conv_output.numel();
  if (numel == 0) return grad_preactivation;
  const auto d = contiguous(demod), b = contiguous(bias);
  const bool channels_last = output_memory_format(conv_output) == at::MemoryFormat::ChannelsLast;
  PIXELFOLDER_DISPATCH_CUDA_TYPES(conv_output.scalar_type(), op, [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    launch_kernel(epilogue_backward_kernel<scalar_t, opmath_t>, blocks_for(numel), kThreadsPerBlock,
                  grad_output.data_ptr<scalar_t>(), Strides4(grad_output), conv_output.data_ptr<scalar_t>(),
                  Strides4(conv_output), grad_preactivation.data_ptr<scalar_t>(), Strides4(grad_preactivation),
                  epilogue_pointers<scalar_t>(conv_output, d, noise, noise_strength, b),
                  make_leaky_relu<opmath_t>(op, negative_slope, gain, c10::nullopt), unfold_output, channels_last,
                  numel);
  });
  return grad_preactivation;
}

}  // namespace

TORCH_LIBRARY_IMPL(pixelfolder_ops, PIXELFOLDER_CUDA_DISPATCH_KEY, m) {
  m.impl("styled_conv2d", &styled_conv2d);
  m.impl("styled_conv2d_backward", &styled_conv2d_backward);
  m.impl("styled_conv2d_epilogue", &epilogue_cuda);
  m.impl("styled_conv2d_epilogue_backward", &epilogue_backward_cuda);
}

}  // namespace pixelfolder
