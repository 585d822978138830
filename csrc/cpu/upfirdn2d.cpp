// upfirdn2d on the CPU: each output sample sums the kernel taps that land on input samples (found
// once per axis), reading the input through its strides.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../common.h"
#include "../op_arguments.h"

namespace pixelfolder {
namespace {

// For every output position along one axis, the (input index, kernel tap) pairs it sums.
struct AxisTaps {
  std::vector<int64_t> begin;  // pairs of output o are [begin[o], begin[o + 1])
  std::vector<int64_t> input_index, tap;

  explicit AxisTaps(const UpFirDnAxis& axis) {
    begin.push_back(0);
    for (int64_t o = 0; o < axis.out_size(); ++o) {
      axis.for_each_tap(o, [&](int64_t i, int64_t t) {
        input_index.push_back(i);
        tap.push_back(t);
      });
      begin.push_back(static_cast<int64_t>(tap.size()));
    }
  }
};

template <typename scalar_t>
void upfirdn2d_kernel(const at::Tensor& input, const at::Tensor& kernel, const at::Tensor& output,
                      const UpFirDnAxis& axis_x, const UpFirDnAxis& axis_y) {
  using opmath_t = at::opmath_type<scalar_t>;
  const AxisTaps taps_x(axis_x), taps_y(axis_y);
  const int64_t channels = input.size(1), out_h = output.size(2), out_w = output.size(3);
  const int64_t kernel_w = kernel.size(1);
  const auto is = input.strides();
  const auto os = output.strides();
  const scalar_t* in = input.data_ptr<scalar_t>();
  const scalar_t* k = kernel.data_ptr<scalar_t>();
  scalar_t* out = output.data_ptr<scalar_t>();
  // One task per output row of one channel.
  at::parallel_for(0, input.size(0) * channels * out_h, 16, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t oy = task % out_h, c = task / out_h % channels, b = task / (out_h * channels);
      const scalar_t* plane = in + b * is[0] + c * is[1];
      scalar_t* row = out + b * os[0] + c * os[1] + oy * os[2];
      for (int64_t ox = 0; ox < out_w; ++ox) {
        opmath_t sum = 0;
        for (int64_t py = taps_y.begin[oy]; py < taps_y.begin[oy + 1]; ++py) {
          const scalar_t* in_row = plane + taps_y.input_index[py] * is[2];
          const scalar_t* k_row = k + taps_y.tap[py] * kernel_w;
          for (int64_t px = taps_x.begin[ox]; px < taps_x.begin[ox + 1]; ++px) {
            sum += opmath_t(in_row[taps_x.input_index[px] * is[3]]) * opmath_t(k_row[taps_x.tap[px]]);
          }
        }
        row[ox * os[3]] = sum;
      }
    }
  });
}

at::Tensor upfirdn2d_cpu(const at::Tensor& input, const at::Tensor& kernel, at::IntArrayRef up,
                         at::IntArrayRef down, at::IntArrayRef pad) {
  constexpr const char* op = "upfirdn2d";
  check_upfirdn2d_arguments(op, input, kernel, up, down, pad, c10::kCPU);
  const UpFirDnAxes axes = upfirdn2d_axes(input, kernel, up, down, pad);
  auto output = empty_upfirdn2d_output(input, axes);
  const auto k = kernel.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), op, [&] {
    upfirdn2d_kernel<scalar_t>(input, k, output, axes.x, axes.y);
  });
  return output;
}

}  // namespace

TORCH_LIBRARY_IMPL(pixelfolder_ops, CPU, m) {
  m.impl("upfirdn2d", &upfirdn2d_cpu);
  m.impl("upfirdn2d_backward", &call_upfirdn2d_input_gradient);
}

}  // namespace pixelfolder
