// The modulated-conv ops, written once for every device: ATen's convolutions (cuDNN on CUDA) plus
// the pixelfolder_ops kernels of the tensors' device, reached through the dispatcher. Each
// device's <op> file registers these for its dispatch key.
#pragma once

#include <ATen/core/Tensor.h>

#include <tuple>

#include "activation.h"
#include "arguments.h"

namespace pixelfolder {

// The entry points of the composite ops, registered for every device by its <op> file.
at::Tensor modulated_conv2d(const Arguments& args);

// Gradients of input, weight and styles (the latter two without the demodulation's share), and that of
// t = 1 / demod^2 - eps in the compute type (empty without demodulation).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> modulated_conv2d_backward(const Arguments& args);

// The layer's output and the raw (not demodulated) conv output the backward needs.
std::tuple<at::Tensor, at::Tensor> styled_conv2d(const Arguments& args);

// modulated_conv2d_backward's four, then (in the compute type) the gradients of the bias (C,) and of the
// noise map (B, 1, H, W), the latter empty without noise.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> styled_conv2d_backward(
    const Arguments& args);

// The layer's output and, with a clamp and a skip, its clamped output before the skip is added (else empty).
std::tuple<at::Tensor, at::Tensor> to_rgb(const Arguments& args);

// The options of styled_conv2d_epilogue and its backward, read once their arguments are checked (the
// backward's grad_output included): what the CPU and CUDA kernels share of their argument handling.
struct EpilogueOptions {
  bool unfold_output;
  LeakyReLU<double> activation;
};
EpilogueOptions checked_epilogue_options(const Arguments& args);
EpilogueOptions checked_epilogue_backward_options(const Arguments& args);

}  // namespace pixelfolder
