// Pixel fold / unfold on CUDA: one thread per output element, written in the output's memory
// order and gathered from the input through its strides (any layout, no copy first).
#include <torch/library.h>

#include "../op_arguments.h"
#include "cuda_common.cuh"

namespace pixelfolder {
namespace {

// fold: coarse out[n, (dy * 2 + dx) * C + c, i, j] = fine in[n, c, 2i + dy, 2j + dx]; unfold reads back.
template <typename scalar_t, bool kFold, typename index_t>
__global__ void fold_kernel(RestrictPointer<const scalar_t> input, RestrictPointer<scalar_t> output,
                            Strides4<index_t> in, Strides4<index_t> out, bool channels_last, index_t numel) {
  PIXELFOLDER_GRID_STRIDE_LOOP(index_t, index, numel) {
    const auto o = coordinates_of(index, out.size, channels_last);
    if (kFold) {
      const index_t channels = in.size[1], block = o.c / channels;
      output[index] = input[in.offset(o.n, o.c % channels, 2 * o.y + block / 2, 2 * o.x + block % 2)];
    } else {
      const index_t channels = out.size[1];
      const index_t block = (o.y % 2) * 2 + o.x % 2;
      output[index] = input[in.offset(o.n, block * channels + o.c, o.y / 2, o.x / 2)];
    }
  }
}

template <bool kFold>
at::Tensor fold_cuda(const Arguments& args) {
  const auto& input = args.tensor("input");
  if (kFold) {
    check_fold_arguments(input, kCudaKernelDevice);
  } else {
    check_unfold_arguments(input, kCudaKernelDevice);
  }
  const CudaDeviceGuard guard(input.device());
  auto output = kFold ? empty_fold_output(input) : empty_unfold_output(input);
  const int64_t numel = output.numel();
  if (numel == 0) return output;
  const bool channels_last = output_memory_format(input) == at::MemoryFormat::ChannelsLast;
  PIXELFOLDER_DISPATCH_CUDA_TYPES(input.scalar_type(), "fold", [&] {
    PIXELFOLDER_DISPATCH_INDEX_TYPE(fits_32bit_index({input, output}), [&] {
      launch_kernel(fold_kernel<scalar_t, kFold, index_t>, blocks_for(numel), kThreadsPerBlock,
                    pointer_to<scalar_t>(input, "input"), pointer_to<scalar_t>(output, "output"),
                    Strides4<index_t>(input), Strides4<index_t>(output), channels_last, static_cast<index_t>(numel));
    });
  });
  return output;
}

}  // namespace

TORCH_LIBRARY_IMPL(pixelfolder_ops, PIXELFOLDER_CUDA_DISPATCH_KEY, m) {
  m.impl("fold", kernel_of<fold_cuda<true>>());
  m.impl("unfold", kernel_of<fold_cuda<false>>());
}

}  // namespace pixelfolder
