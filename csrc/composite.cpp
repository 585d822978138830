// Modulated convolution as modulation on activations: conv(x * s, W) * d equals the grouped conv
// with per-image weights W * s[b] * d[b], and runs as one dense conv over the batch.
#include "composite.h"

#include <ATen/OpMathType.h>
#include <ATen/ops/conv2d.h>
#include <ATen/ops/conv_transpose2d.h>
#include <ATen/ops/convolution_backward.h>

#include "common.h"

namespace pixelfolder {
namespace {

int64_t floor_div(int64_t a, int64_t b) { return a / b - (a % b != 0 && (a < 0) != (b < 0)); }

void check_modulated_arguments(const char* op, const at::Tensor& input, const at::Tensor& weight,
                               const at::Tensor& styles, int64_t up, int64_t down,
                               const c10::optional<at::Tensor>& kernel) {
  const auto device = input.device();
  check_tensor(op, "input", input, 4, device);
  check_tensor(op, "weight", weight, 4, device);
  check_tensor(op, "styles", styles, 2, device);
  check_dtype_for_device(op, input);
  check_same_dtype(op, "weight", weight, input);
  check_same_dtype(op, "styles", styles, input);
  TORCH_CHECK(weight.size(1) == input.size(1) && weight.size(2) == weight.size(3) && weight.size(2) % 2 == 1, op,
              ": argument 'weight' must be (C_out, ", input.size(1), ", k, k) with k odd, got shape ", weight.sizes());
  TORCH_CHECK(styles.size(0) == input.size(0) && styles.size(1) == input.size(1), op,
              ": argument 'styles' must be (", input.size(0), ", ", input.size(1), "), got shape ", styles.sizes());
  TORCH_CHECK((up == 1 || up == 2) && (down == 1 || down == 2) && up * down < 4, op,
              ": arguments 'up' and 'down' must be 1 or 2 and not both 2, got ", up, " and ", down);
  if (up == 2 || down == 2) {
    TORCH_CHECK(kernel.has_value(), op, ": argument 'kernel' is needed for up=2 or down=2");
    check_tensor(op, "kernel", *kernel, 2, device);
    check_same_dtype(op, "kernel", *kernel, input);
  }
}

// The blur pads StyleGAN2 uses around the stride-2 (transposed) conv, for both axes.
std::vector<int64_t> up_blur_pad(const at::Tensor& kernel, int64_t kernel_size) {
  const int64_t p = kernel.size(0) - 2 - (kernel_size - 1);
  return {floor_div(p + 1, 2) + 1, floor_div(p, 2) + 1, floor_div(p + 1, 2) + 1, floor_div(p, 2) + 1};
}

std::vector<int64_t> down_blur_pad(const at::Tensor& kernel, int64_t kernel_size) {
  const int64_t p = kernel.size(0) - 2 + (kernel_size - 1);
  return {floor_div(p + 1, 2), floor_div(p, 2), floor_div(p + 1, 2), floor_div(p, 2)};
}

at::Tensor broadcast_per_channel(const at::Tensor& values) {  // (B, C) -> (B, C, 1, 1)
  return values.view({values.size(0), values.size(1), 1, 1});
}

// sum over (h, w) of a * b, (B, C) in the compute type: a kernel that reads each tensor once in its own
// layout (an einsum would copy channels-last operands into its batched-GEMM layout first).
at::Tensor spatial_dot(const at::Tensor& a, const at::Tensor& b) {
  static const auto op =
      find_op<at::Tensor(const at::Tensor&, const at::Tensor&)>("pixelfolder_ops::spatial_dot");
  return op.call(a, b);
}

// conv(modulated_input, weight), with the up=2 / down=2 variants; not demodulated.
at::Tensor conv(const at::Tensor& modulated_input, const at::Tensor& weight, int64_t up, int64_t down,
                const c10::optional<at::Tensor>& kernel) {
  const int64_t kernel_size = weight.size(2);
  if (up == 2) {
    // conv_transpose2d takes its weight as (C_in, C_out, k, k).
    const auto upsampled = at::conv_transpose2d(modulated_input, weight.transpose(0, 1), {}, 2);
    return call_upfirdn2d(upsampled, kernel->mul(4), {1, 1}, {1, 1}, up_blur_pad(*kernel, kernel_size));
  }
  if (down == 2) {
    const auto blurred = call_upfirdn2d(modulated_input, *kernel, {1, 1}, {1, 1}, down_blur_pad(*kernel, kernel_size));
    return at::conv2d(blurred, weight, {}, 2);
  }
  return at::conv2d(modulated_input, weight, {}, 1, kernel_size / 2);
}

// Gradients of conv() for its input and weight.
std::tuple<at::Tensor, at::Tensor> conv_backward(const at::Tensor& grad_output, const at::Tensor& modulated_input,
                                                 const at::Tensor& weight, int64_t up, int64_t down,
                                                 const c10::optional<at::Tensor>& kernel) {
  const int64_t kernel_size = weight.size(2);
  const std::array<bool, 3> mask{true, true, false};
  if (up == 2) {
    const auto transposed_weight = weight.transpose(0, 1);
    const int64_t upsampled_h = (modulated_input.size(2) - 1) * 2 + kernel_size;
    const int64_t upsampled_w = (modulated_input.size(3) - 1) * 2 + kernel_size;
    const auto grad_upsampled = call_upfirdn2d_input_gradient(
        grad_output, kernel->mul(4), {1, 1}, {1, 1}, up_blur_pad(*kernel, kernel_size), upsampled_h, upsampled_w);
    auto [grad_input, grad_weight, unused] = at::convolution_backward(
        grad_upsampled, modulated_input, transposed_weight, c10::nullopt, {2, 2}, {0, 0}, {1, 1}, true, {0, 0}, 1, mask);
    return {grad_input, grad_weight.transpose(0, 1)};
  }
  if (down == 2) {
    const auto pad = down_blur_pad(*kernel, kernel_size);
    const auto blurred = call_upfirdn2d(modulated_input, *kernel, {1, 1}, {1, 1}, pad);
    auto [grad_blurred, grad_weight, unused] = at::convolution_backward(
        grad_output, blurred, weight, c10::nullopt, {2, 2}, {0, 0}, {1, 1}, false, {0, 0}, 1, mask);
    const auto grad_input = call_upfirdn2d_input_gradient(grad_blurred, *kernel, {1, 1}, {1, 1}, pad,
                                                          modulated_input.size(2), modulated_input.size(3));
    return {grad_input, grad_weight};
  }
  const int64_t pad = kernel_size / 2;
  auto [grad_input, grad_weight, unused] = at::convolution_backward(
      grad_output, modulated_input, weight, c10::nullopt, {1, 1}, {pad, pad}, {1, 1}, false, {0, 0}, 1, mask);
  return {grad_input, grad_weight};
}

// Gradients of out = conv(input * s, W) * demod for input, weight and styles, given the gradient of the
// conv, grad_conv = grad_out * demod, and (in the compute type) that of demod (both demod tensors
// undefined when not demodulating).
std::tuple<at::Tensor, at::Tensor, at::Tensor> modulated_backward(
    const at::Tensor& grad_conv, const at::Tensor& demod, const at::Tensor& grad_demod, const at::Tensor& input,
    const at::Tensor& weight, const at::Tensor& styles, int64_t up, int64_t down,
    const c10::optional<at::Tensor>& kernel) {
  const auto scale = broadcast_per_channel(styles);
  auto [grad_modulated, grad_weight] = conv_backward(grad_conv, input.mul(scale), weight, up, down, kernel);
  auto grad_input = grad_modulated.mul(scale);
  auto grad_styles = spatial_dot(grad_modulated, input);
  if (demod.defined()) {
    // demod = rsqrt(q + eps), q[b, o] = sum_i styles[b, i]^2 * sum_k weight[o, i, k]^2, in demod's
    // dtype (float32 for 16-bit tensors).
    const auto grad_q = grad_demod.mul(demod.pow(3)).mul(-0.5);
    const auto s = styles.to(demod.scalar_type()), w = weight.to(demod.scalar_type());
    const auto weight_energy = w.square().sum({2, 3});  // (C_out, C_in)
    grad_styles.add_(s.mul(grad_q.mm(weight_energy)), 2);
    grad_weight.add_(w.mul(grad_q.t().mm(s.square()).view({weight.size(0), weight.size(1), 1, 1})), 2);
  }
  return {grad_input.contiguous(output_memory_format(input)), grad_weight.contiguous(),
          grad_styles.to(styles.scalar_type())};
}

at::Tensor call_epilogue(const at::Tensor& conv_output, const at::Tensor& demod, const c10::optional<at::Tensor>& noise,
                         const c10::optional<at::Tensor>& noise_strength, const c10::optional<at::Tensor>& bias,
                         double negative_slope, double gain, bool unfold_output) {
  using Optional = const c10::optional<at::Tensor>&;
  static const auto op = find_op<at::Tensor(const at::Tensor&, Optional, Optional, Optional, Optional, double, double,
                                            bool)>("pixelfolder_ops::styled_conv2d_epilogue");
  return op.call(conv_output, demod.defined() ? c10::optional<at::Tensor>(demod) : c10::nullopt, noise,
                 noise_strength, bias, negative_slope, gain, unfold_output);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> call_epilogue_backward(
    const at::Tensor& grad_output, const at::Tensor& conv_output, const at::Tensor& demod,
    const c10::optional<at::Tensor>& noise, const c10::optional<at::Tensor>& noise_strength,
    const c10::optional<at::Tensor>& bias, double negative_slope, double gain, bool unfold_output) {
  using Optional = const c10::optional<at::Tensor>&;
  static const auto op =
      find_op<std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
          const at::Tensor&, const at::Tensor&, Optional, Optional, Optional, Optional, double, double, bool)>(
          "pixelfolder_ops::styled_conv2d_epilogue_backward");
  return op.call(grad_output, conv_output, demod.defined() ? c10::optional<at::Tensor>(demod) : c10::nullopt, noise,
                 noise_strength, bias, negative_slope, gain, unfold_output);
}

}  // namespace

at::Tensor modulated_conv2d(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& styles,
                            bool demodulate, int64_t up, int64_t down, const c10::optional<at::Tensor>& kernel,
                            double eps) {
  check_modulated_arguments("modulated_conv2d", input, weight, styles, up, down, kernel);
  auto output = conv(input.mul(broadcast_per_channel(styles)), weight, up, down, kernel);
  if (demodulate) output.mul_(broadcast_per_channel(call_demod(weight, styles, eps)));
  return output.contiguous(output_memory_format(input));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> modulated_conv2d_backward(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight, const at::Tensor& styles,
    const c10::optional<at::Tensor>& output, bool demodulate, int64_t up, int64_t down,
    const c10::optional<at::Tensor>& kernel, double eps) {
  constexpr const char* op = "modulated_conv2d_backward";
  check_modulated_arguments(op, input, weight, styles, up, down, kernel);
  if (!demodulate) return modulated_backward(grad_output, {}, {}, input, weight, styles, up, down, kernel);
  TORCH_CHECK(output.has_value(), op, ": argument 'output' is needed when demodulating");
  const auto demod = call_demod(weight, styles, eps);
  // d(loss)/d(demod) = sum_hw grad * conv = sum_hw grad * output / demod.
  const auto grad_demod = spatial_dot(grad_output, *output).div(demod);
  const auto grad_conv = grad_output.mul(broadcast_per_channel(demod)).to(grad_output.scalar_type());
  return modulated_backward(grad_conv, demod, grad_demod, input, weight, styles, up, down, kernel);
}

std::tuple<at::Tensor, at::Tensor> styled_conv2d(
    const at::Tensor& input, const at::Tensor& weight, const at::Tensor& styles,
    const c10::optional<at::Tensor>& noise, const c10::optional<at::Tensor>& noise_strength,
    const c10::optional<at::Tensor>& bias, bool demodulate, int64_t up, const c10::optional<at::Tensor>& kernel,
    double negative_slope, double gain, bool unfold_output, double eps) {
  check_modulated_arguments("styled_conv2d", input, weight, styles, up, 1, kernel);
  const auto conv_output =
      conv(input.mul(broadcast_per_channel(styles)), weight, up, 1, kernel).contiguous(output_memory_format(input));
  const auto demod = demodulate ? call_demod(weight, styles, eps) : at::Tensor();
  auto output = call_epilogue(conv_output, demod, noise, noise_strength, bias, negative_slope, gain, unfold_output);
  return {output, conv_output};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> styled_conv2d_backward(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight, const at::Tensor& styles,
    const c10::optional<at::Tensor>& noise, const c10::optional<at::Tensor>& noise_strength,
    const c10::optional<at::Tensor>& bias, const at::Tensor& conv_output, bool demodulate, int64_t up,
    const c10::optional<at::Tensor>& kernel, double negative_slope, double gain, bool unfold_output, double eps) {
  check_modulated_arguments("styled_conv2d_backward", input, weight, styles, up, 1, kernel);
  const auto demod = demodulate ? call_demod(weight, styles, eps) : at::Tensor();
  // One pass over the output gradient gives the conv's gradient (demodulated) and every reduction.
  const auto [grad_conv, grad_demod, grad_bias, grad_noise] = call_epilogue_backward(
      grad_output, conv_output, demod, noise, noise_strength, bias, negative_slope, gain, unfold_output);
  auto [grad_input, grad_weight, grad_styles] = modulated_backward(
      grad_conv, demod, demodulate ? grad_demod : at::Tensor(), input, weight, styles, up, 1, kernel);
  return {grad_input, grad_weight, grad_styles, grad_bias, grad_noise};
}

at::Tensor to_rgb(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& styles, const at::Tensor& bias,
                  const c10::optional<at::Tensor>& skip, const c10::optional<at::Tensor>& skip_kernel,
                  at::IntArrayRef skip_pad) {
  constexpr const char* op = "to_rgb";
  check_modulated_arguments(op, input, weight, styles, 1, 1, c10::nullopt);
  check_tensor(op, "bias", bias, 1, input.device());
  check_same_dtype(op, "bias", bias, input);
  // A 1x1 conv to a few channels is one batched GEMM per image with the modulated weight (B, C_out, C_in):
  // the modulation then costs no pass over the input.
  const int64_t batch = input.size(0), out_channels = weight.size(0), height = input.size(2), width = input.size(3);
  const auto modulated_weight = weight.reshape({1, out_channels, -1}).mul(styles.unsqueeze(1));
  auto output = bias.view({1, out_channels, 1})
                    .expand({batch, out_channels, height * width})
                    .baddbmm(modulated_weight, input.flatten(2))
                    .view({batch, out_channels, height, width});
  if (skip) {
    check_tensor(op, "skip", *skip, 4, input.device());
    check_same_dtype(op, "skip", *skip, input);
    if (skip_kernel) {
      output.add_(call_upfirdn2d(*skip, *skip_kernel, {2, 2}, {1, 1}, skip_pad));
    } else {
      output.add_(*skip);
    }
  }
  return output.contiguous(output_memory_format(input));
}

void check_epilogue_arguments(const char* op, const at::Tensor& conv_output, const c10::optional<at::Tensor>& demod,
                              const c10::optional<at::Tensor>& noise,
                              const c10::optional<at::Tensor>& noise_strength,
                              const c10::optional<at::Tensor>& bias, bool unfold_output) {
  const auto device = conv_output.device();
  check_tensor(op, "conv_output", conv_output, 4, device);
  check_dtype_for_device(op, conv_output);
  const int64_t batch = conv_output.size(0), channels = conv_output.size(1);
  if (demod) {
    check_tensor(op, "demod", *demod, 2, device);
    const auto demod_type = at::toOpMathType(conv_output.scalar_type());
    TORCH_CHECK(demod->scalar_type() == demod_type, op, ": argument 'demod' must have dtype ", demod_type,
                " (the demodulation's, float32 for 16-bit tensors), got ", demod->scalar_type());
    TORCH_CHECK(demod->size(0) == batch && demod->size(1) == channels, op, ": argument 'demod' must be (", batch,
                ", ", channels, "), got shape ", demod->sizes());
  }
  TORCH_CHECK(noise.has_value() == noise_strength.has_value(), op,
              ": arguments 'noise' and 'noise_strength' must be given together");
  if (noise) {
    check_tensor(op, "noise", *noise, 4, device);
    check_tensor(op, "noise_strength", *noise_strength, -1, device);
    check_same_dtype(op, "noise", *noise, conv_output);
    check_same_dtype(op, "noise_strength", *noise_strength, conv_output);
    TORCH_CHECK((noise->size(0) == 1 || noise->size(0) == batch) && noise->size(1) == 1 &&
                    noise->size(2) == conv_output.size(2) && noise->size(3) == conv_output.size(3),
                op, ": argument 'noise' must be (", batch, " or 1, 1, ", conv_output.size(2), ", ",
                conv_output.size(3), "), got shape ", noise->sizes());
    TORCH_CHECK(noise_strength->numel() == 1, op, ": argument 'noise_strength' must have one element, got shape ",
                noise_strength->sizes());
  }
  if (bias) {
    check_tensor(op, "bias", *bias, 1, device);
    check_same_dtype(op, "bias", *bias, conv_output);
    TORCH_CHECK(bias->size(0) == channels, op, ": argument 'bias' must be (", channels, ",), got shape ",
                bias->sizes());
  }
  TORCH_CHECK(!unfold_output || channels % 4 == 0, op,
              ": unfold_output needs a channel count divisible by 4, got ", channels);
}

}  // namespace pixelfolder
