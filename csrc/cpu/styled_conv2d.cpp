// StyledConv on the CPU: the composite conv (composite.cpp) and one epilogue pass that applies the
// demodulation, noise, bias, leaky ReLU and gain, and stores unfolded when asked.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../activation.h"
#include "../common.h"
#include "../op_arguments.h"
#include "../composite.h"
#include "../epilogue.h"

namespace pixelfolder {
namespace {

// Calls visit(n, c, y, conv_row, epilogue_row, to) for every row (n, c, y) of the conv output, in
// parallel: `to` is where the forward stores the row's first element (unfolded when asked), its
// next elements following every output_column_step(unfold_output) columns. Working by rows reads
// the per-row operands once and leaves the inner loops free of index arithmetic. The loops work on
// local copies of the row and the activation, which the stores cannot alias, so they vectorize.
template <typename scalar_t, typename opmath_t, typename Visit>
void for_each_row(const at::Tensor& conv_output, const EpiloguePointers<scalar_t, opmath_t>& epilogue,
                  bool unfold_output, Visit visit) {
  const int64_t channels = conv_output.size(1), height = conv_output.size(2);
  const scalar_t* in = conv_output.data_ptr<scalar_t>();
  const auto is = conv_output.strides();
  at::parallel_for(0, conv_output.size(0) * channels * height, 16, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / (channels * height), c = row / height % channels, y = row % height;
      visit(n, c, y, in + n * is[0] + c * is[1] + y * is[2], epilogue.row(n, c, y),
            epilogue_output_index(unfold_output, channels, c, y, 0));
    }
  });
}

int64_t output_column_step(bool unfold_output) { return unfold_output ? 2 : 1; }

at::Tensor epilogue_cpu(const at::Tensor& conv_output, const c10::optional<at::Tensor>& demod,
                        const c10::optional<at::Tensor>& noise, const c10::optional<at::Tensor>& noise_strength,
                        const c10::optional<at::Tensor>& bias, double negative_slope, double gain,
                        bool unfold_output) {
  constexpr const char* op = "styled_conv2d_epilogue";
  check_epilogue_arguments(op, conv_output, demod, noise, noise_strength, bias, unfold_output);
  auto output = empty_epilogue_output(conv_output, unfold_output);
  const auto d = contiguous(demod), b = contiguous(bias);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, conv_output.scalar_type(), op, [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    const auto act = make_leaky_relu<opmath_t>(op, negative_slope, gain, c10::nullopt);
    const auto epilogue = epilogue_pointers<scalar_t>(conv_output, d, noise, noise_strength, b);
    scalar_t* out = output.data_ptr<scalar_t>();
    const auto os = output.strides();
    const int64_t width = conv_output.size(3), in_step = conv_output.stride(3);
    const int64_t out_step = output_column_step(unfold_output) * os[3];
    for_each_row(conv_output, epilogue, unfold_output,
                 [&](int64_t n, int64_t, int64_t, const scalar_t* conv_row,
                     const EpilogueRow<scalar_t, opmath_t> row, OutputIndex to) {
                   const auto f = act;
                   scalar_t* out_row = out + n * os[0] + to.c * os[1] + to.y * os[2] + to.x * os[3];
                   for (int64_t x = 0; x < width; ++x) {
                     out_row[x * out_step] = f(row.preactivation(conv_row[x * in_step], x));
                   }
                 });
  });
  return output;
}

at::Tensor epilogue_backward_cpu(const at::Tensor& grad_output, const at::Tensor& conv_output,
                                 const c10::optional<at::Tensor>& demod, const c10::optional<at::Tensor>& noise,
                                 const c10::optional<at::Tensor>& noise_strength,
                                 const c10::optional<at::Tensor>& bias, double negative_slope, double gain,
                                 bool unfold_output) {
  constexpr const char* op = "styled_conv2d_epilogue_backward";
  check_epilogue_arguments(op, conv_output, demod, noise, noise_strength, bias, unfold_output);
  check_epilogue_grad_output(op, grad_output, conv_output, unfold_output);
  auto grad_preactivation = empty_4d(conv_output.sizes(), conv_output);
  const auto d = contiguous(demod), b = contiguous(bias);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, conv_output.scalar_type(), op, [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    const auto act = make_leaky_relu<opmath_t>(op, negative_slope, gain, c10::nullopt);
    const auto epilogue = epilogue_pointers<scalar_t>(conv_output, d, noise, noise_strength, b);
    const scalar_t* g = grad_output.data_ptr<scalar_t>();
    scalar_t* out = grad_preactivation.data_ptr<scalar_t>();
    const auto gs = grad_output.strides();
    const auto os = grad_preactivation.strides();
    const int64_t width = conv_output.size(3), in_step = conv_output.stride(3);
    const int64_t grad_step = output_column_step(unfold_output) * gs[3];
    // a is recomputed rather than stored by the forward: it is one multiply-add away.
    for_each_row(conv_output, epilogue, unfold_output,
                 [&](int64_t n, int64_t c, int64_t y, const scalar_t* conv_row,
                     const EpilogueRow<scalar_t, opmath_t> row, OutputIndex from) {
                   const auto f = act;
                   const scalar_t* grad_row = g + n * gs[0] + from.c * gs[1] + from.y * gs[2] + from.x * gs[3];
                   scalar_t* out_row = out + n * os[0] + c * os[1] + y * os[2];
                   for (int64_t x = 0; x < width; ++x) {
                     const opmath_t a = row.preactivation(conv_row[x * in_step], x);
                     out_row[x * os[3]] = opmath_t(grad_row[x * grad_step]) * f.gradient(f(a));
                   }
                 });
  });
  return grad_preactivation;
}

}  // namespace

TORCH_LIBRARY_IMPL(pixelfolder_ops, CPU, m) {
  m.impl("styled_conv2d", &styled_conv2d);
  m.impl("styled_conv2d_backward", &styled_conv2d_backward);
  m.impl("styled_conv2d_epilogue", &epilogue_cpu);
  m.impl("styled_conv2d_epilogue_backward", &epilogue_backward_cpu);
}

}  // namespace pixelfolder
