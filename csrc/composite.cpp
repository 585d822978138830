// Modulated convolution as modulation on activations: conv(x * s, W) * d equals the grouped conv
// with per-image weights W * s[b] * d[b], and runs as one dense conv over the batch.
#include "composite.h"

#include <ATen/OpMathType.h>
#include <ATen/ops/conv2d.h>
#include <ATen/ops/conv_transpose2d.h>
#include <ATen/ops/convolution_backward.h>

#include "common.h"
#include "op_arguments.h"

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

// The arguments of a modulated conv, as modulated_conv2d and styled_conv2d (which has no 'down') and their
// backwards read them: read and checked in one place.
struct ModulatedConv {
  at::Tensor input, weight, styles;
  int64_t up, down;
  c10::optional<at::Tensor> kernel;
};

ModulatedConv read_modulated_conv(const Arguments& args, bool has_down) {
  ModulatedConv conv{args.tensor("input"), args.tensor("weight"), args.tensor("styles"), args.integer("up"),
                     has_down ? args.integer("down") : 1, args.optional_tensor("resample_kernel")};
  check_modulated_arguments(args.op(), conv.input, conv.weight, conv.styles, conv.up, conv.down, conv.kernel);
  return conv;
}

// The demodulation (B, C_out) in the compute type; undefined when the op does not demodulate.
at::Tensor demodulation(const Arguments& args, const ModulatedConv& modulated) {
  return args.flag("demodulate") ? call_demod(modulated.weight, modulated.styles, args.real("eps")) : at::Tensor();
}

// sum over (h, w) of a * b, (B, C) in the compute type: a kernel that reads each tensor once in its own
// layout (an einsum would copy channels-last operands into its batched-GEMM layout first).
at::Tensor spatial_dot(const at::Tensor& a, const at::Tensor& b) {
  return call_op_for_tensor("spatial_dot", {{"a", a}, {"b", b}});
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

// conv(input * s, W): the modulated conv, not demodulated.
at::Tensor modulated_conv(const ModulatedConv& args) {
  return conv(args.input.mul(broadcast_per_channel(args.styles)), args.weight, args.up, args.down, args.kernel);
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
// undefined when not demodulating). The demodulation's own share of the weight's and styles' gradients
// is left to the caller (pixelfolder_ops/_gradients.py, shared with the Triton backend): returned is the
// gradient of t = 1 / demod^2 - eps, (B, C_out) in the compute type (empty without demodulation).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> modulated_backward(
    const at::Tensor& grad_conv, const at::Tensor& demod, const at::Tensor& grad_demod, const ModulatedConv& args) {
  const auto& [input, weight, styles, up, down, kernel] = args;
  const auto scale = broadcast_per_channel(styles);
  auto [grad_modulated, grad_weight] = conv_backward(grad_conv, input.mul(scale), weight, up, down, kernel);
  auto grad_input = grad_modulated.mul(scale);
  auto grad_styles = spatial_dot(grad_modulated, input);
  // demod = rsqrt(t + eps): d demod / d t = -demod^3 / 2. Empty without demodulation.
  const auto grad_t = demod.defined() ? grad_demod.mul(demod.pow(3)).mul(-0.5)
                                      : at::empty({0}, styles.options().dtype(at::toOpMathType(styles.scalar_type())));
  return {grad_input.contiguous(output_memory_format(input)), grad_weight.contiguous(), grad_styles, grad_t};
}

}  // namespace

at::Tensor modulated_conv2d(const Arguments& args) {
  const auto modulated = read_modulated_conv(args, true);
  auto output = modulated_conv(modulated);
  const auto demod = demodulation(args, modulated);
  if (demod.defined()) output.mul_(broadcast_per_channel(demod));
  return output.contiguous(output_memory_format(modulated.input));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> modulated_conv2d_backward(const Arguments& args) {
  const auto& grad_output = args.tensor("grad_output");
  const auto modulated = read_modulated_conv(args, true);
  const auto demod = demodulation(args, modulated);
  if (!demod.defined()) return modulated_backward(grad_output, {}, {}, modulated);
  const auto output = args.optional_tensor("output");
  TORCH_CHECK(output.has_value(), args.op(), ": argument 'output' is needed when demodulating");
  // d(loss)/d(demod) = sum_hw grad * conv = sum_hw grad * output / demod.
  const auto grad_demod = spatial_dot(grad_output, *output).div(demod);
  const auto grad_conv = grad_output.mul(broadcast_per_channel(demod)).to(grad_output.scalar_type());
  return modulated_backward(grad_conv, demod, grad_demod, modulated);
}

std::tuple<at::Tensor, at::Tensor> styled_conv2d(const Arguments& args) {
  const auto modulated = read_modulated_conv(args, false);
  const auto conv_output = modulated_conv(modulated).contiguous(output_memory_format(modulated.input));
  const auto demod = demodulation(args, modulated);
  // The epilogue takes its noise, bias and options from this op's arguments.
  auto output = call_op_for_tensor("styled_conv2d_epilogue",
                                   {{"conv_output", conv_output}, {"demod", optional_value(demod)}}, &args);
  return {output, conv_output};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> styled_conv2d_backward(
    const Arguments& args) {
  const auto modulated = read_modulated_conv(args, false);
  const auto demod = demodulation(args, modulated);
  // One pass over the output gradient gives the conv's gradient (demodulated) and every reduction.
  const auto reductions =
      call_op("styled_conv2d_epilogue_backward", {{"demod", optional_value(demod)}}, &args);
  const auto grad_conv = reductions[0].toTensor(), grad_demod = reductions[1].toTensor();
  auto [grad_input, grad_weight, grad_styles, grad_t] =
      modulated_backward(grad_conv, demod, demod.defined() ? grad_demod : at::Tensor(), modulated);
  return {grad_input, grad_weight, grad_styles, grad_t, reductions[2].toTensor(), reductions[3].toTensor()};
}

// The pads of ToRGB's x2 up-sampling of the skip, (x0, x1, y0, y1): (2, 1) per axis for a 4-tap kernel
// (pixelfolder_ops/to_rgb.py's skip_pad states the same for the other backends).
std::vector<int64_t> to_rgb_skip_pad(const at::Tensor& skip_kernel) {
  const int64_t p = skip_kernel.size(0) - 2;
  return {(p + 1) / 2 + 1, p / 2, (p + 1) / 2 + 1, p / 2};
}

std::tuple<at::Tensor, at::Tensor> to_rgb(const Arguments& args) {
  constexpr const char* op = "to_rgb";
  const auto& input = args.tensor("input");
  const auto& weight = args.tensor("weight");
  const auto& styles = args.tensor("styles");
  const auto& bias = args.tensor("bias");
  const auto skip = args.optional_tensor("skip"), skip_kernel = args.optional_tensor("skip_kernel");
  const auto clamp = args.optional_real("clamp");
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
  if (clamp) output.clamp_(-*clamp, *clamp);
  // With a clamp and a skip, the clamped layer output is kept for the backward (where it saturated there
  // is no gradient); without a skip it is the output itself.
  auto clamped = at::empty({0}, output.options());
  if (skip) {
    check_tensor(op, "skip", *skip, 4, input.device());
    check_same_dtype(op, "skip", *skip, input);
    const auto upsampled = skip_kernel ? call_upfirdn2d(*skip, *skip_kernel, {2, 2}, {1, 1}, to_rgb_skip_pad(*skip_kernel))
                                       : *skip;
    if (clamp) clamped = output;
    output = clamp ? output.add(upsampled) : output.add_(upsampled);
  }
  return {output.contiguous(output_memory_format(input)), clamped};
}

namespace {

void check_epilogue_arguments(const Arguments& args) {
  const char* op = args.op();
  const auto& conv_output = args.tensor("conv_output");
  const auto demod = args.optional_tensor("demod"), noise = args.optional_tensor("noise");
  const auto noise_strength = args.optional_tensor("noise_strength"), bias = args.optional_tensor("bias");
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
  TORCH_CHECK(!args.flag("unfold_output") || channels % 4 == 0, op,
              ": unfold_output needs a channel count divisible by 4, got ", channels);
}

// The backward reads grad_output where the forward stored, so it must have the forward output's shape.
void check_epilogue_grad_output(const Arguments& args) {
  const auto& grad_output = args.tensor("grad_output");
  const auto& conv_output = args.tensor("conv_output");
  check_tensor(args.op(), "grad_output", grad_output, 4, conv_output.device());
  check_same_dtype(args.op(), "grad_output", grad_output, conv_output);
  const auto expected = epilogue_output_sizes(conv_output, args.flag("unfold_output"));
  TORCH_CHECK(grad_output.sizes() == at::IntArrayRef(expected), args.op(), ": argument 'grad_output' must have the "
              "output's shape ", at::IntArrayRef(expected), ", got ", grad_output.sizes());
}

}  // namespace

EpilogueOptions checked_epilogue_options(const Arguments& args) {
  check_epilogue_arguments(args);
  return {args.flag("unfold_output"), leaky_relu_arguments(args, "gain")};
}

EpilogueOptions checked_epilogue_backward_options(const Arguments& args) {
  const auto options = checked_epilogue_options(args);
  check_epilogue_grad_output(args);
  return options;
}

}  // namespace pixelfolder
