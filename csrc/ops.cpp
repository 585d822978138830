// The op schemas, in one block, and the build information the Python loader reports.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/library.h>
#include <torch/version.h>

#include <utility>
#include <vector>

#include "common.h"
#ifdef PIXELFOLDER_WITH_CUDA
#include "cuda/build_info.h"
#endif
#ifdef PIXELFOLDER_CUDA_EMULATION
#include "emulation/cuda_emulation.h"
#endif

TORCH_LIBRARY(pixelfolder_ops, m) {
  m.def("fold(Tensor input) -> Tensor");
  m.def("unfold(Tensor input) -> Tensor");

  m.def("fused_leaky_relu(Tensor input, Tensor? bias, float negative_slope, float scale, "
        "float? clamp=None) -> Tensor");
  // The input gradient, from the output's sign (and, with a clamp, where it saturated).
  m.def("fused_leaky_relu_backward(Tensor grad_output, Tensor output, float negative_slope, "
        "float scale, float? clamp=None) -> Tensor");

  // up, down: (x, y); pad: (x0, x1, y0, y1).
  m.def("upfirdn2d(Tensor input, Tensor kernel, int[2] up, int[2] down, int[4] pad) -> Tensor");
  // The input gradient: an upfirdn2d with the flipped kernel and up and down swapped.
  m.def("upfirdn2d_backward(Tensor grad_output, Tensor kernel, int[2] up, int[2] down, int[4] pad, "
        "int input_height, int input_width) -> Tensor");

  m.def("fourier_embedding(Tensor weight, Tensor bias, int height, int width) -> Tensor");
  m.def("fourier_embedding_backward(Tensor grad_output, Tensor weight, Tensor bias) -> (Tensor, Tensor)");

  // d[b, o] = rsqrt(sum_i styles[b, i]^2 * sum_k weight[o, i, k]^2 + eps), shape (B, C_out), in the
  // compute type (float32 for 16-bit weights).
  m.def("modulated_conv2d_demod(Tensor weight, Tensor styles, float eps) -> Tensor");
  // sum over (h, w) of a * b per (image, channel), (B, C) in the compute type, in a fixed order.
  m.def("spatial_dot(Tensor a, Tensor b) -> Tensor");
  m.def("modulated_conv2d(Tensor input, Tensor weight, Tensor styles, bool demodulate, int up, "
        "int down, Tensor? kernel, float eps) -> Tensor");
  // Gradients for input, weight and styles; `output` is the forward's result (needed to demodulate).
  m.def("modulated_conv2d_backward(Tensor grad_output, Tensor input, Tensor weight, Tensor styles, "
        "Tensor? output, bool demodulate, int up, int down, Tensor? kernel, float eps) "
        "-> (Tensor, Tensor, Tensor)");

  // Returns the layer's output and the raw (not demodulated) conv output the backward needs.
  m.def("styled_conv2d(Tensor input, Tensor weight, Tensor styles, Tensor? noise, "
        "Tensor? noise_strength, Tensor? bias, bool demodulate, int up, Tensor? kernel, "
        "float negative_slope, float gain, bool unfold_output, float eps) -> (Tensor, Tensor)");
  // act(conv_output * demod + noise_strength * noise + bias) * gain, unfolded by the store.
  m.def("styled_conv2d_epilogue(Tensor conv_output, Tensor? demod, Tensor? noise, "
        "Tensor? noise_strength, Tensor? bias, float negative_slope, float gain, "
        "bool unfold_output) -> Tensor");
  // With g the gradient of the pre-activation: the conv's gradient g * demod (conv_output's shape),
  // and in the compute type sum_hw g * conv_output (demod's gradient, (B, C)), sum_bhw g (the bias's,
  // (C,)) and sum_c g (the noise map's, (B, 1, H, W); empty without noise).
  m.def("styled_conv2d_epilogue_backward(Tensor grad_output, Tensor conv_output, Tensor? demod, "
        "Tensor? noise, Tensor? noise_strength, Tensor? bias, float negative_slope, float gain, "
        "bool unfold_output) -> (Tensor, Tensor, Tensor, Tensor)");
  // Gradients for input, weight and styles, and in the compute type those of the bias and of the
  // noise map (empty without noise).
  m.def("styled_conv2d_backward(Tensor grad_output, Tensor input, Tensor weight, Tensor styles, "
        "Tensor? noise, Tensor? noise_strength, Tensor? bias, Tensor conv_output, bool demodulate, "
        "int up, Tensor? kernel, float negative_slope, float gain, bool unfold_output, float eps) "
        "-> (Tensor, Tensor, Tensor, Tensor, Tensor)");

  // skip_pad: the pads of the skip's x2 upfirdn2d, (x0, x1, y0, y1).
  m.def("to_rgb(Tensor input, Tensor weight, Tensor styles, Tensor bias, Tensor? skip, "
        "Tensor? skip_kernel, int[4] skip_pad) -> Tensor");
}

namespace {

pybind11::dict build_info() {
  pybind11::dict info;
  pybind11::list backends;
  backends.append("cpu");
  info["torch_version"] = std::to_string(TORCH_VERSION_MAJOR) + "." +
                          std::to_string(TORCH_VERSION_MINOR) + "." +
                          std::to_string(TORCH_VERSION_PATCH);
#ifdef PIXELFOLDER_WITH_CUDA
  backends.append("cuda");
  info["cuda_version"] = pixelfolder::cuda_build_version();
  info["cuda_arch_list"] = pixelfolder::cuda_build_arch_list();
#else
  info["cuda_version"] = pybind11::none();
  info["cuda_arch_list"] = pybind11::list();
#endif
  info["backends"] = backends;
  // The emulation build's "cpu" backend runs the CUDA kernels (csrc/emulation).
#ifdef PIXELFOLDER_CUDA_EMULATION
  info["cuda_emulation"] = true;
  info["cuda_emulation_seed"] = pixelfolder::cuda_emulation::seed();
#else
  info["cuda_emulation"] = false;
#endif
  // Without OpenMP, at::parallel_for runs the CPU kernels on one core.
#ifdef _OPENMP
  info["cpu_parallel"] = true;
#else
  info["cpu_parallel"] = false;
#endif
  return info;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.doc() = "pixelfolder_ops kernels: importing this registers the torch.ops.pixelfolder_ops ops.";
  module.def(
      "fits_32bit_index",
      [](const std::vector<std::pair<std::vector<int64_t>, std::vector<int64_t>>>& tensors) {
        return std::all_of(tensors.begin(), tensors.end(),
                           [](const auto& t) { return pixelfolder::fits_32bit_index(t.first, t.second); });
      },
      "Whether the kernels index tensors of these (sizes, strides) in 32 bits (else in 64).");
  module.def("build_info", &build_info,
             "Which backends were compiled, the CUDA architectures and the torch / CUDA versions built against.");
}
