// Pixel fold / unfold on the CPU: one strided gather, so any input layout is read in place.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../common.h"
#include "../op_arguments.h"

namespace pixelfolder {
namespace {

// out[b, (dy * 2 + dx) * C + c, i, j] = in[b, c, 2i + dy, 2j + dx]; unfold is the same map read
// backwards, so both ops copy between a "fine" (B, C, 2h, 2w) and a "coarse" (B, 4C, h, w) tensor.
template <typename scalar_t, bool kFold>
void fold_copy(const at::Tensor& fine, const at::Tensor& coarse) {
  const int64_t batch = fine.size(0), channels = fine.size(1);
  const int64_t height = coarse.size(2), width = coarse.size(3);
  const auto fs = fine.strides();
  const auto cs = coarse.strides();
  scalar_t* fine_data = fine.data_ptr<scalar_t>();
  scalar_t* coarse_data = coarse.data_ptr<scalar_t>();
  // One task per (b, c, row of the fine tensor): both of its coarse rows are read or written.
  at::parallel_for(0, batch * channels * 2 * height, 64, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t fine_row = task % (2 * height);
      const int64_t c = task / (2 * height) % channels, b = task / (2 * height * channels);
      const int64_t dy = fine_row % 2, i = fine_row / 2;
      scalar_t* fine_ptr = fine_data + b * fs[0] + c * fs[1] + fine_row * fs[2];
      // The even and odd columns of the fine row go to the dx = 0 and dx = 1 coarse rows: one sweep.
      scalar_t* even = coarse_data + b * cs[0] + (dy * 2 * channels + c) * cs[1] + i * cs[2];
      scalar_t* odd = even + channels * cs[1];
      for (int64_t j = 0; j < width; ++j) {
        if (kFold) {
          even[j * cs[3]] = fine_ptr[2 * j * fs[3]];
          odd[j * cs[3]] = fine_ptr[(2 * j + 1) * fs[3]];
        } else {
          fine_ptr[2 * j * fs[3]] = even[j * cs[3]];
          fine_ptr[(2 * j + 1) * fs[3]] = odd[j * cs[3]];
        }
      }
    }
  });
}

at::Tensor fold_cpu(const Arguments& args) {
  const auto& input = args.tensor("input");
  check_fold_arguments(input, c10::kCPU);
  auto output = empty_fold_output(input);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "fold", [&] { fold_copy<scalar_t, true>(input, output); });
  return output;
}

at::Tensor unfold_cpu(const Arguments& args) {
  const auto& input = args.tensor("input");
  check_unfold_arguments(input, c10::kCPU);
  auto output = empty_unfold_output(input);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "unfold", [&] { fold_copy<scalar_t, false>(output, input); });
  return output;
}

}  // namespace

TORCH_LIBRARY_IMPL(pixelfolder_ops, CPU, m) {
  m.impl("fold", kernel_of<fold_cpu>());
  m.impl("unfold", kernel_of<unfold_cpu>());
}

}  // namespace pixelfolder
