// Each op's argument checks and output allocation, shared by its CPU and CUDA kernels: the device
// the kernel runs on is the only thing that differs between the two.
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include "common.h"

namespace pixelfolder {

// An op's first two tensors: the first on the kernel's device type, the second on its device and of its
// dtype, one the kernels take.
inline void check_tensor_pair(const char* op, const char* first_arg, const at::Tensor& first, int64_t first_ndim,
                              const char* second_arg, const at::Tensor& second, int64_t second_ndim,
                              c10::DeviceType kernel_device) {
  const auto device = check_first_tensor(op, first_arg, first, first_ndim, kernel_device);
  check_tensor(op, second_arg, second, second_ndim, device);
  check_same_dtype(op, second_arg, second, first);
  check_dtype_for_device(op, first);
}

// fold: (B, C, H, W) -> (B, 4C, H/2, W/2).
inline void check_fold_arguments(const at::Tensor& input, c10::DeviceType kernel_device) {
  check_first_tensor("fold", "input", input, 4, kernel_device);
  check_dtype_for_device("fold", input);
  TORCH_CHECK(input.size(2) % 2 == 0 && input.size(3) % 2 == 0,
              "fold: argument 'input' must have even height and width, got shape ", input.sizes());
}

inline at::Tensor empty_fold_output(const at::Tensor& input) {
  return empty_4d({input.size(0), 4 * input.size(1), input.size(2) / 2, input.size(3) / 2}, input);
}

// unfold: (B, 4C, H, W) -> (B, C, 2H, 2W).
inline void check_unfold_arguments(const at::Tensor& input, c10::DeviceType kernel_device) {
  check_first_tensor("unfold", "input", input, 4, kernel_device);
  check_dtype_for_device("unfold", input);
  TORCH_CHECK(input.size(1) % 4 == 0,
              "unfold: argument 'input' must have a channel count divisible by 4, got shape ", input.sizes());
}

inline std::vector<int64_t> unfold_output_sizes(const at::Tensor& input) {
  return {input.size(0), input.size(1) / 4, input.size(2) * 2, input.size(3) * 2};
}

inline at::Tensor empty_unfold_output(const at::Tensor& input) { return empty_4d(unfold_output_sizes(input), input); }

inline void check_fused_leaky_relu_arguments(const char* op, const at::Tensor& input,
                                             const c10::optional<at::Tensor>& bias, c10::DeviceType kernel_device) {
  const auto device = check_first_tensor(op, "input", input, -1, kernel_device);
  check_dtype_for_device(op, input);
  if (bias) {
    check_tensor(op, "bias", *bias, 1, device);
    check_same_dtype(op, "bias", *bias, input);
    TORCH_CHECK(input.dim() >= 2 && bias->size(0) == input.size(1), op,
                ": argument 'bias' must have one value per channel (dim 1) of 'input' ", input.sizes(),
                ", got shape ", bias->sizes());
  }
}

inline void check_fused_leaky_relu_backward_arguments(const char* op, const at::Tensor& grad_output,
                                                      const at::Tensor& output, c10::DeviceType kernel_device) {
  const auto device = check_first_tensor(op, "grad_output", grad_output, -1, kernel_device);
  check_tensor(op, "output", output, -1, device);
  check_same_dtype(op, "grad_output", grad_output, output);
  check_dtype_for_device(op, output);
  TORCH_CHECK(grad_output.sizes() == output.sizes(), op, ": argument 'grad_output' must have the shape of "
              "'output' ", output.sizes(), ", got ", grad_output.sizes());
}

// modulated_conv2d_demod: weight (O, I, kh, kw) and styles (B, I) give demod (B, O).
inline void check_modulated_conv2d_demod_arguments(const char* op, const at::Tensor& weight,
                                                   const at::Tensor& styles, c10::DeviceType kernel_device) {
  check_tensor_pair(op, "weight", weight, 4, "styles", styles, 2, kernel_device);
  TORCH_CHECK(styles.size(1) == weight.size(1), op, ": argument 'styles' must be (B, ", weight.size(1),
              "), got shape ", styles.sizes());
}

// The demodulation coefficients (B, C_out) in the compute type, float32 for 16-bit weights: the
// epilogue scales by them unrounded, as the reference does.
inline at::Tensor empty_demod(const at::Tensor& weight, const at::Tensor& styles) {
  return at::empty({styles.size(0), weight.size(0)}, weight.options().dtype(at::toOpMathType(weight.scalar_type())));
}

// The epilogue's output shape: the conv output's, or unfolded to (B, C/4, 2H, 2W).
inline std::vector<int64_t> epilogue_output_sizes(const at::Tensor& conv_output, bool unfold_output) {
  return unfold_output ? unfold_output_sizes(conv_output) : conv_output.sizes().vec();
}

inline at::Tensor empty_epilogue_output(const at::Tensor& conv_output, bool unfold_output) {
  return empty_4d(epilogue_output_sizes(conv_output, unfold_output), conv_output);
}

// spatial_dot: a and b (B, C, H, W) of one dtype and shape, any layouts.
inline void check_spatial_dot_arguments(const char* op, const at::Tensor& a, const at::Tensor& b,
                                        c10::DeviceType kernel_device) {
  check_tensor_pair(op, "a", a, 4, "b", b, 4, kernel_device);
  TORCH_CHECK(a.sizes() == b.sizes(), op, ": argument 'b' must have the shape of 'a' ", a.sizes(), ", got ",
              b.sizes());
}

// (B, C) sums in the compute type: float32 for 16-bit tensors.
inline at::Tensor empty_spatial_dot(const at::Tensor& a) {
  return at::empty({a.size(0), a.size(1)}, a.options().dtype(at::toOpMathType(a.scalar_type())));
}

inline void check_upfirdn2d_arguments(const char* op, const at::Tensor& input, const at::Tensor& kernel,
                                      at::IntArrayRef up, at::IntArrayRef down, at::IntArrayRef pad,
                                      c10::DeviceType kernel_device) {
  check_tensor_pair(op, "input", input, 4, "kernel", kernel, 2, kernel_device);
  TORCH_CHECK(up.size() == 2 && down.size() == 2 && pad.size() == 4, op,
              ": arguments 'up', 'down', 'pad' must have 2, 2 and 4 values");
  TORCH_CHECK(up[0] >= 1 && up[1] >= 1 && down[0] >= 1 && down[1] >= 1, op,
              ": arguments 'up' and 'down' must be >= 1, got ", up, " and ", down);
  TORCH_CHECK(input.size(3) * up[0] + pad[0] + pad[1] >= kernel.size(1) &&
              input.size(2) * up[1] + pad[2] + pad[3] >= kernel.size(0),
              op, ": arguments 'pad' and 'kernel' leave no output for input of shape ", input.sizes());
}

// upfirdn2d's two axes, x (width) and y (height).
struct UpFirDnAxes {
  UpFirDnAxis x, y;
};

inline UpFirDnAxes upfirdn2d_axes(const at::Tensor& input, const at::Tensor& kernel, at::IntArrayRef up,
                                  at::IntArrayRef down, at::IntArrayRef pad) {
  return {UpFirDnAxis{input.size(3), up[0], down[0], pad[0], pad[1], kernel.size(1)},
          UpFirDnAxis{input.size(2), up[1], down[1], pad[2], pad[3], kernel.size(0)}};
}

inline at::Tensor empty_upfirdn2d_output(const at::Tensor& input, const UpFirDnAxes& axes) {
  return empty_4d({input.size(0), input.size(1), axes.y.out_size(), axes.x.out_size()}, input);
}

// fourier_embedding's parameters: weight (C, 2) holds each channel's x and y frequencies, bias (C,)
// its phase.
inline void check_fourier_embedding_parameters(const char* op, const at::Tensor& weight, const at::Tensor& bias,
                                               c10::DeviceType kernel_device) {
  check_tensor_pair(op, "weight", weight, 2, "bias", bias, 1, kernel_device);
  TORCH_CHECK(weight.size(1) == 2, op, ": argument 'weight' must be (C, 2), got shape ", weight.sizes());
  TORCH_CHECK(bias.size(0) == weight.size(0), op, ": argument 'bias' must be (", weight.size(0),
              ",), got shape ", bias.sizes());
}

inline void check_fourier_embedding_arguments(const char* op, const at::Tensor& weight, const at::Tensor& bias,
                                              int64_t height, int64_t width, c10::DeviceType kernel_device) {
  check_fourier_embedding_parameters(op, weight, bias, kernel_device);
  TORCH_CHECK(height > 0 && width > 0, op, ": arguments 'height' and 'width' must be positive, got ",
              height, " and ", width);
}

inline void check_fourier_embedding_backward_arguments(const char* op, const at::Tensor& grad_output,
                                                       const at::Tensor& weight, const at::Tensor& bias,
                                                       c10::DeviceType kernel_device) {
  check_fourier_embedding_parameters(op, weight, bias, kernel_device);
  check_tensor(op, "grad_output", grad_output, 4, weight.device());
  check_same_dtype(op, "grad_output", grad_output, weight);
  const int64_t channels = weight.size(0);
  TORCH_CHECK(grad_output.size(0) == 1 && grad_output.size(1) == channels, op,
              ": argument 'grad_output' must be (1, ", channels, ", H, W), got shape ", grad_output.sizes());
}

}  // namespace pixelfolder
