// StyledConv on the CPU: the composite conv (composite.cpp) and one epilogue pass that applies the
// demodulation, noise, bias, leaky ReLU and gain, and stores unfolded when asked; its backward pass
// writes the conv's gradient and reduces the demodulation, bias and noise gradients as it goes.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <numeric>
#include <vector>

#include "../activation.h"
#include "../common.h"
#include "../op_arguments.h"
#include "../composite.h"
#include "../epilogue.h"

namespace pixelfolder {
namespace {

// Calls visit(n, c, y, conv_row, epilogue_row, to) for every row (n, c, y) of the conv output: the
// image rows (n, y) in parallel, the channels of each in order (so a task owns its (n, y) and sums over
// channels in a fixed order). `to` is where the forward stores the row's first element (unfolded when
// asked), its next elements following every output_column_step(unfold_output) columns. Working by
// rows reads the per-row operands once and leaves the inner loops free of index arithmetic. The loops
// work on local copies of the row and the activation, which the stores cannot alias, so they vectorize.
template <typename scalar_t, typename opmath_t, typename Visit>
void for_each_row(const at::Tensor& conv_output, const EpiloguePointers<scalar_t, opmath_t>& epilogue,
                  bool unfold_output, Visit visit) {
  const int64_t channels = conv_output.size(1), height = conv_output.size(2);
  const scalar_t* in = conv_output.data_ptr<scalar_t>();
  const auto is = conv_output.strides();
  at::parallel_for(0, conv_output.size(0) * height, 1, [&](int64_t begin, int64_t end) {
    for (int64_t image_row = begin; image_row < end; ++image_row) {
      const int64_t n = image_row / height, y = image_row % height;
      for (int64_t c = 0; c < channels; ++c) {
        visit(n, c, y, in + n * is[0] + c * is[1] + y * is[2], epilogue.row(n, c, y),
              epilogue_output_index(unfold_output, channels, c, y, int64_t{0}));
      }
    }
  });
}

int64_t output_column_step(bool unfold_output) { return unfold_output ? 2 : 1; }

at::Tensor epilogue_cpu(const Arguments& args) {
  constexpr const char* op = "styled_conv2d_epilogue";
  const auto options = checked_epilogue_options(args);
  const auto& conv_output = args.tensor("conv_output");
  auto output = empty_epilogue_output(conv_output, options.unfold_output);
  const EpilogueTensors operands(args);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, conv_output.scalar_type(), op, [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    const auto act = options.activation.as<opmath_t>();
    const auto epilogue = operands.pointers<scalar_t>();
    scalar_t* out = output.data_ptr<scalar_t>();
    const auto os = output.strides();
    const int64_t width = conv_output.size(3), in_step = conv_output.stride(3);
    const int64_t out_step = output_column_step(options.unfold_output) * os[3];
    for_each_row(conv_output, epilogue, options.unfold_output,
                 [&](int64_t n, int64_t, int64_t, const scalar_t* conv_row,
                     const EpilogueRow<scalar_t, opmath_t> row, OutputIndex<int64_t> to) {
                   const auto f = act;
                   scalar_t* out_row = out + n * os[0] + to.c * os[1] + to.y * os[2] + to.x * os[3];
                   for (int64_t x = 0; x < width; ++x) {
                     out_row[x * out_step] = f(row.preactivation(conv_row[x * in_step], x));
                   }
                 });
  });
  return output;
}

// The pre-activation gradient g of each row, stored as the conv's gradient g * demod, with the row's
// sums of g * conv (demod's gradient) and of g (the bias's) and, with noise, g added into the noise
// map's row (B, 1, H, W) channel after channel; then the rows' sums added in order. Only plain loops:
// one pass over the tensors (benchmarks.byte_ledger counts an op that calls none as one kernel).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> epilogue_backward_cpu(const Arguments& args) {
  constexpr const char* op = "styled_conv2d_epilogue_backward";
  const auto options = checked_epilogue_backward_options(args);
  const auto& grad_output = args.tensor("grad_output");
  const auto& conv_output = args.tensor("conv_output");
  const auto noise = args.optional_tensor("noise");
  const int64_t batch = conv_output.size(0), channels = conv_output.size(1), height = conv_output.size(2);
  const int64_t width = conv_output.size(3);
  auto grad_conv = empty_4d(conv_output.sizes(), conv_output);
  const auto sums = conv_output.options().dtype(at::toOpMathType(conv_output.scalar_type()));
  auto grad_demod = at::empty({batch, channels}, sums);
  auto grad_bias = at::empty({channels}, sums);
  auto grad_noise = at::empty(noise ? std::vector<int64_t>{batch, 1, height, width} : std::vector<int64_t>{0}, sums);
  const EpilogueTensors operands(args);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, conv_output.scalar_type(), op, [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    const auto act = options.activation.as<opmath_t>();
    const auto epilogue = operands.pointers<scalar_t>();
    const scalar_t* g = grad_output.data_ptr<scalar_t>();
    scalar_t* out = grad_conv.data_ptr<scalar_t>();
    std::vector<opmath_t> demod_row_sums(batch * channels * height), bias_row_sums(batch * channels * height);
    opmath_t* noise_map = noise ? grad_noise.data_ptr<opmath_t>() : nullptr;
    const auto gs = grad_output.strides();
    const auto os = grad_conv.strides();
    const int64_t in_step = conv_output.stride(3);
    const int64_t grad_step = output_column_step(options.unfold_output) * gs[3];
    // a is recomputed rather than stored by the forward: it is one multiply-add away.
    for_each_row(conv_output, epilogue, options.unfold_output,
                 [&](int64_t n, int64_t c, int64_t y, const scalar_t* conv_row,
                     const EpilogueRow<scalar_t, opmath_t> row, OutputIndex<int64_t> from) {
                   const auto f = act;
                   const scalar_t* grad_row = g + n * gs[0] + from.c * gs[1] + from.y * gs[2] + from.x * gs[3];
                   scalar_t* out_row = out + n * os[0] + c * os[1] + y * os[2];
                   opmath_t* noise_row = noise_map ? noise_map + (n * height + y) * width : nullptr;
                   opmath_t demod_sum = 0, bias_sum = 0;
                   for (int64_t x = 0; x < width; ++x) {
                     const opmath_t conv = conv_row[x * in_step];
                     const opmath_t grad = opmath_t(grad_row[x * grad_step]) * f.gradient(f(row.preactivation(conv, x)));
                     out_row[x * os[3]] = grad * row.scale;
                     demod_sum += grad * conv;
                     bias_sum += grad;
                     if (noise_row) noise_row[x] = c == 0 ? grad : noise_row[x] + grad;
                   }
                   demod_row_sums[(n * channels + c) * height + y] = demod_sum;
                   bias_row_sums[(n * channels + c) * height + y] = bias_sum;
                 });
    opmath_t* demod_out = grad_demod.data_ptr<opmath_t>();
    opmath_t* bias_out = grad_bias.data_ptr<opmath_t>();
    for (int64_t c = 0; c < channels; ++c) bias_out[c] = 0;
    for (int64_t nc = 0; nc < batch * channels; ++nc) {
      const auto demod_rows = demod_row_sums.begin() + nc * height, bias_rows = bias_row_sums.begin() + nc * height;
      demod_out[nc] = std::accumulate(demod_rows, demod_rows + height, opmath_t(0));
      bias_out[nc % channels] += std::accumulate(bias_rows, bias_rows + height, opmath_t(0));
    }
  });
  return {grad_conv, grad_demod, grad_bias, grad_noise};
}

}  // namespace

TORCH_LIBRARY_IMPL(pixelfolder_ops, CPU, m) {
  m.impl("styled_conv2d", kernel_of<styled_conv2d>());
  m.impl("styled_conv2d_backward", kernel_of<styled_conv2d_backward>());
  m.impl("styled_conv2d_epilogue", kernel_of<epilogue_cpu>());
  m.impl("styled_conv2d_epilogue_backward", kernel_of<epilogue_backward_cpu>());
}

}  // namespace pixelfolder
