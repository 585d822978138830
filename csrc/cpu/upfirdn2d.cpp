// upfirdn2d on the CPU, one output row of one channel at a time: for every (y tap, x tap) pair the
// row gains tap * (a run of input samples), a loop with unit or constant strides that the compiler
// vectorizes, accumulated in opmath precision.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <numeric>

#include "../common.h"
#include "../op_arguments.h"

namespace pixelfolder {
namespace {

// For every output position along y, the (input row, kernel row) pairs it sums.
struct RowTaps {
  std::vector<int64_t> begin;  // pairs of output row o are [begin[o], begin[o + 1])
  std::vector<int64_t> input_row, kernel_row;

  explicit RowTaps(const UpFirDnAxis& axis) {
    begin.push_back(0);
    for (int64_t o = 0; o < axis.out_size(); ++o) {
      axis.for_each_tap(o, [&](int64_t i, int64_t t) {
        input_row.push_back(i);
        kernel_row.push_back(t);
      });
      begin.push_back(static_cast<int64_t>(kernel_row.size()));
    }
  }
};

// Along x, kernel tap t is used by the outputs o = first + n * out_step, n in [0, count), which read
// input samples i = first_input + n * in_step.
struct ColumnRun {
  int64_t tap, first, first_input, count;
};

struct ColumnRuns {
  std::vector<ColumnRun> runs;
  int64_t out_step = 1, in_step = 1;

  explicit ColumnRuns(const UpFirDnAxis& axis) {
    // Output o reads upsampled position o * down + t - pad0, an input sample when divisible by up:
    // the outputs that do are spaced up / gcd(up, down) apart.
    out_step = axis.up / std::gcd(axis.up, axis.down);
    in_step = out_step * axis.down / axis.up;
    const int64_t out_size = axis.out_size();
    for (int64_t t = 0; t < axis.taps; ++t) {
      for (int64_t o = 0; o < std::min(out_step, out_size); ++o) {
        const int64_t position = o * axis.down + t - axis.pad0;
        if (((position % axis.up) + axis.up) % axis.up != 0) continue;
        int64_t first = o, first_input = position / axis.up;  // exact: position is a multiple of up
        if (first_input < 0) {  // skip the outputs that read left of the input
          const int64_t skip = (-first_input + in_step - 1) / in_step;
          first += skip * out_step;
          first_input += skip * in_step;
        }
        if (first >= out_size || first_input >= axis.in_size) continue;
        const int64_t count = std::min((out_size - 1 - first) / out_step, (axis.in_size - 1 - first_input) / in_step) + 1;
        runs.push_back({axis.taps - 1 - t, first, first_input, count});
      }
    }
  }
};

template <typename scalar_t>
void upfirdn2d_kernel(const at::Tensor& input, const at::Tensor& kernel, const at::Tensor& output,
                      const UpFirDnAxis& axis_x, const UpFirDnAxis& axis_y) {
  using opmath_t = at::opmath_type<scalar_t>;
  const RowTaps rows(axis_y);
  const ColumnRuns columns(axis_x);
  const int64_t channels = input.size(1), out_h = output.size(2), out_w = output.size(3);
  const int64_t kernel_w = kernel.size(1), out_step = columns.out_step;
  const int64_t in_step = columns.in_step * input.stride(3);
  const auto is = input.strides();
  const auto os = output.strides();
  const scalar_t* in = input.data_ptr<scalar_t>();
  const scalar_t* k = kernel.data_ptr<scalar_t>();
  scalar_t* out = output.data_ptr<scalar_t>();
  // One task per output row of one channel.
  at::parallel_for(0, input.size(0) * channels * out_h, 16, [&](int64_t begin, int64_t end) {
    std::vector<opmath_t> sums(out_w);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t oy = task % out_h, c = task / out_h % channels, b = task / (out_h * channels);
      std::fill(sums.begin(), sums.end(), opmath_t(0));
      opmath_t* sum = sums.data();
      for (int64_t p = rows.begin[oy]; p < rows.begin[oy + 1]; ++p) {
        const scalar_t* in_row = in + b * is[0] + c * is[1] + rows.input_row[p] * is[2];
        const scalar_t* k_row = k + rows.kernel_row[p] * kernel_w;
        for (const ColumnRun& run : columns.runs) {
          const opmath_t tap = k_row[run.tap];
          const scalar_t* source = in_row + run.first_input * is[3];
          opmath_t* target = sum + run.first;
          if (out_step == 1 && in_step == 1) {  // the common case, kept apart so that it vectorizes
            for (int64_t n = 0; n < run.count; ++n) target[n] += tap * opmath_t(source[n]);
          } else {
            for (int64_t n = 0; n < run.count; ++n) target[n * out_step] += tap * opmath_t(source[n * in_step]);
          }
        }
      }
      scalar_t* row = out + b * os[0] + c * os[1] + oy * os[2];
      for (int64_t ox = 0; ox < out_w; ++ox) row[ox * os[3]] = sum[ox];
    }
  });
}

at::Tensor upfirdn2d_cpu(const Arguments& args) {
  constexpr const char* op = "upfirdn2d";
  const auto& input = args.tensor("input");
  const auto& kernel = args.tensor("kernel");
  const auto up = args.integers("up"), down = args.integers("down"), pad = args.integers("pad");
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
  m.impl("upfirdn2d", kernel_of<upfirdn2d_cpu>());
  m.impl("upfirdn2d_backward", kernel_of<upfirdn2d_input_gradient>());
}

}  // namespace pixelfolder
