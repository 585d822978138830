// Fourier embedding on the CPU: the phases w_x x + w_y y + b with the grid made in the loop, then
// sin in place; and the gradients for the frequencies and phases.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <vector>

#include "../common.h"
#include "../op_arguments.h"
#include "../fourier_grid.h"

namespace pixelfolder {
namespace {

at::Tensor fourier_embedding_cpu(const Arguments& args) {
  constexpr const char* op = "fourier_embedding";
  const auto& weight = args.tensor("weight");
  const auto& bias = args.tensor("bias");
  const int64_t height = args.integer("height"), width = args.integer("width");
  check_fourier_embedding_arguments(op, weight, bias, height, width, c10::kCPU);
  const int64_t channels = weight.size(0);
  // Phases and sin in the compute type, rounded once at the end: a 16-bit phase would be off by up to
  // u |phase|, several times the rounding of the result itself.
  const auto compute_type = at::toOpMathType(weight.scalar_type());
  auto phases = at::empty({1, channels, height, width}, weight.options().dtype(compute_type));
  const auto w = weight.contiguous();
  const auto b = bias.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, weight.scalar_type(), op, [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    const scalar_t* w_data = w.data_ptr<scalar_t>();
    const scalar_t* b_data = b.data_ptr<scalar_t>();
    opmath_t* out = phases.data_ptr<opmath_t>();
    std::vector<opmath_t> xs(width);
    for (int64_t x = 0; x < width; ++x) xs[x] = linspace_minus1_to_1<opmath_t>(x, width);
    at::parallel_for(0, channels * height, 16, [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const int64_t c = row / height, h = row % height;
        // The row's phase is fixed; only the x term varies along it.
        const opmath_t phase = opmath_t(w_data[2 * c + 1]) * linspace_minus1_to_1<opmath_t>(h, height) +
                               opmath_t(b_data[c]);
        const opmath_t frequency_x = w_data[2 * c];
        for (int64_t x = 0; x < width; ++x) {
          out[row * width + x] = frequency_x * xs[x] + phase;
        }
      }
    });
  });
  // ATen's sin is vectorised (SLEEF); a scalar std::sin per element is slower than the reference.
  return phases.sin_().to(weight.scalar_type());
}

std::tuple<at::Tensor, at::Tensor> fourier_embedding_backward_cpu(const Arguments& args) {
  constexpr const char* op = "fourier_embedding_backward";
  const auto& grad_output = args.tensor("grad_output");
  const auto& weight = args.tensor("weight");
  const auto& bias = args.tensor("bias");
  check_fourier_embedding_backward_arguments(op, grad_output, weight, bias, c10::kCPU);
  const int64_t channels = weight.size(0), height = grad_output.size(2), width = grad_output.size(3);
  auto grad_weight = at::empty_like(weight, at::MemoryFormat::Contiguous);
  auto grad_bias = at::empty_like(bias, at::MemoryFormat::Contiguous);
  const auto w = weight.contiguous();
  const auto b = bias.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, weight.scalar_type(), op, [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    const scalar_t* w_data = w.data_ptr<scalar_t>();
    const scalar_t* b_data = b.data_ptr<scalar_t>();
    const scalar_t* g = grad_output.data_ptr<scalar_t>();
    const auto gs = grad_output.strides();
    scalar_t* gw = grad_weight.data_ptr<scalar_t>();
    scalar_t* gb = grad_bias.data_ptr<scalar_t>();
    // d/d(phase) of sin is cos; the x and y frequencies' gradients weight it by the coordinate.
    at::parallel_for(0, channels, 1, [&](int64_t begin, int64_t end) {
      for (int64_t c = begin; c < end; ++c) {
        opmath_t sum_x = 0, sum_y = 0, sum = 0;
        for (int64_t h = 0; h < height; ++h) {
          const opmath_t y = linspace_minus1_to_1<opmath_t>(h, height);
          const opmath_t phase = opmath_t(w_data[2 * c + 1]) * y + opmath_t(b_data[c]);
          opmath_t row_x = 0, row = 0;
          for (int64_t i = 0; i < width; ++i) {
            const opmath_t x = linspace_minus1_to_1<opmath_t>(i, width);
            const opmath_t d = opmath_t(g[c * gs[1] + h * gs[2] + i * gs[3]]) *
                               std::cos(opmath_t(w_data[2 * c]) * x + phase);
            row_x += d * x;
            row += d;
          }
          sum_x += row_x;
          sum_y += row * y;
          sum += row;
        }
        gw[2 * c] = sum_x;
        gw[2 * c + 1] = sum_y;
        gb[c] = sum;
      }
    });
  });
  return {grad_weight, grad_bias};
}

}  // namespace

TORCH_LIBRARY_IMPL(pixelfolder_ops, CPU, m) {
  m.impl("fourier_embedding", kernel_of<fourier_embedding_cpu>());
  m.impl("fourier_embedding_backward", kernel_of<fourier_embedding_backward_cpu>());
}

}  // namespace pixelfolder
