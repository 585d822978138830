// The modulated-conv ops, written once for every device: ATen's convolutions (cuDNN on CUDA) plus
// the pixelfolder_ops kernels of the tensors' device, reached through the dispatcher. Each
// device's <op> file registers these for its dispatch key.
#pragma once

#include <ATen/core/Tensor.h>

#include <tuple>

namespace pixelfolder {

at::Tensor modulated_conv2d(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& styles,
                            bool demodulate, int64_t up, int64_t down, const c10::optional<at::Tensor>& kernel,
                            double eps);

std::tuple<at::Tensor, at::Tensor, at::Tensor> modulated_conv2d_backward(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight, const at::Tensor& styles,
    const c10::optional<at::Tensor>& output, bool demodulate, int64_t up, int64_t down,
    const c10::optional<at::Tensor>& kernel, double eps);

std::tuple<at::Tensor, at::Tensor> styled_conv2d(
    const at::Tensor& input, const at::Tensor& weight, const at::Tensor& styles,
    const c10::optional<at::Tensor>& noise, const c10::optional<at::Tensor>& noise_strength,
    const c10::optional<at::Tensor>& bias, bool demodulate, int64_t up, const c10::optional<at::Tensor>& kernel,
    double negative_slope, double gain, bool unfold_output, double eps);

// Gradients of input, weight and styles, and (in the compute type) of the bias (C,) and of the noise
// map (B, 1, H, W), the latter empty without noise.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> styled_conv2d_backward(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight, const at::Tensor& styles,
    const c10::optional<at::Tensor>& noise, const c10::optional<at::Tensor>& noise_strength,
    const c10::optional<at::Tensor>& bias, const at::Tensor& conv_output, bool demodulate, int64_t up,
    const c10::optional<at::Tensor>& kernel, double negative_slope, double gain, bool unfold_output, double eps);

at::Tensor to_rgb(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& styles, const at::Tensor& bias,
                  const c10::optional<at::Tensor>& skip, const c10::optional<at::Tensor>& skip_kernel,
                  at::IntArrayRef skip_pad);

// Argument checks of the epilogue kernels, shared by their CPU and CUDA versions.
void check_epilogue_arguments(const char* op, const at::Tensor& conv_output, const c10::optional<at::Tensor>& demod,
                              const c10::optional<at::Tensor>& noise,
                              const c10::optional<at::Tensor>& noise_strength,
                              const c10::optional<at::Tensor>& bias, bool unfold_output);

}  // namespace pixelfolder
