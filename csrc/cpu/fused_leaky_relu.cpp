// Bias + leaky ReLU + gain (+ clamp) on the CPU, and its input gradient from the output's sign.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../activation.h"
#include "../common.h"
#include "../op_arguments.h"

namespace pixelfolder {
namespace {

// Runs visit(offset, length, channel, channel_step) over runs of a tensor contiguous in `layout`:
// NCHW-like runs share one channel (step 0), channels-last runs walk the channels (step 1).
template <typename Visit>
void for_each_channel_run(const ChannelLayout& layout, int64_t numel, Visit visit) {
  const int64_t run = layout.channels_last ? layout.channels : layout.inner;
  if (numel == 0 || run == 0) return;
  at::parallel_for(0, numel / run, std::max<int64_t>(1, 32768 / run), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      if (layout.channels_last) {
        visit(r * run, run, int64_t(0), int64_t(1));
      } else {
        visit(r * run, run, r % layout.channels, int64_t(0));
      }
    }
  });
}

at::Tensor fused_leaky_relu_cpu(const Arguments& args) {
  constexpr const char* op = "fused_leaky_relu";
  const auto& input = args.tensor("input");
  const auto bias = args.optional_tensor("bias");
  check_fused_leaky_relu_arguments(op, input, bias, c10::kCPU);
  const auto act_arguments = leaky_relu_arguments(args);
  const auto layout = ChannelLayout::of(input);
  const auto x = input.contiguous(layout.memory_format());
  auto output = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), op, [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    const auto act = act_arguments.as<opmath_t>();
    const scalar_t* in = x.data_ptr<scalar_t>();
    scalar_t* out = output.data_ptr<scalar_t>();
    const auto b = bias ? bias->contiguous() : at::Tensor();
    const scalar_t* bias_data = bias ? b.data_ptr<scalar_t>() : nullptr;
    for_each_channel_run(layout, x.numel(), [&](int64_t offset, int64_t length, int64_t channel, int64_t step) {
      const auto f = act;  // a local copy, which the output stores cannot alias: the loop vectorizes
      for (int64_t k = 0; k < length; ++k) {
        const opmath_t shift = bias_data ? opmath_t(bias_data[channel + k * step]) : opmath_t(0);
        out[offset + k] = f(opmath_t(in[offset + k]) + shift);
      }
    });
  });
  return output;
}

at::Tensor fused_leaky_relu_backward_cpu(const Arguments& args) {
  constexpr const char* op = "fused_leaky_relu_backward";
  const auto& grad_output = args.tensor("grad_output");
  const auto& output = args.tensor("output");
  check_fused_leaky_relu_backward_arguments(op, grad_output, output, c10::kCPU);
  const auto act_arguments = leaky_relu_arguments(args);
  const auto format = ChannelLayout::of(output).memory_format();
  const auto y = output.contiguous(format);
  const auto g = grad_output.contiguous(format);
  auto grad_input = at::empty_like(y);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, output.scalar_type(), op, [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    const auto act = act_arguments.as_read_from<opmath_t, scalar_t>();
    const scalar_t* y_data = y.data_ptr<scalar_t>();
    const scalar_t* g_data = g.data_ptr<scalar_t>();
    scalar_t* out = grad_input.data_ptr<scalar_t>();
    at::parallel_for(0, y.numel(), 32768, [&](int64_t begin, int64_t end) {
      const auto f = act;  // see fused_leaky_relu_cpu
      for (int64_t i = begin; i < end; ++i) {
        out[i] = opmath_t(g_data[i]) * f.gradient(opmath_t(y_data[i]));
      }
    });
  });
  return grad_input;
}

}  // namespace

TORCH_LIBRARY_IMPL(pixelfolder_ops, CPU, m) {
  m.impl("fused_leaky_relu", kernel_of<fused_leaky_relu_cpu>());
  m.impl("fused_leaky_relu_backward", kernel_of<fused_leaky_relu_backward_cpu>());
}

}  // namespace pixelfolder
