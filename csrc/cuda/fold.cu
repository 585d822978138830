// Pixel fold / unfold on CUDA: one thread per output element, written in the output's memory
// order and gathered from the input through its strides (any layout, no copy first).
#include <torch/library.h>

#include "cuda_common.cuh"

namespace pixelfolder {
namespace {

// fold: coarse out[n, (dy * 2 + dx) * C + c, i, j] = fine in[n, c, 2i + dy, 2j + dx]; unfold reads back.
template <typename scalar_t, bool kFold>
__global__ void fold_kernel(const scalar_t* __restrict__ input, scalar_t* __restrict__ output, Strides4 in,
                            Strides4 out, bool channels_last, int64_t numel) {
  PIXELFOLDER_GRID_STRIDE_LOOP(index, numel) {
    const auto o = coordinates_of(index, out.size, channels_last);
    if (kFold) {
      const int64_t channels = in.size[1], block = o.c / channels;
      output[index] = input[in.offset(o.n, o.c % channels, 2 * o.y + block / 2, 2 * o.x + block % 2)];
    } else {
      const int64_t channels = out.size[1];
      const int64_t block = (o.y % 2) * 2 + o.x % 2;
      output[index] = input[in.offset(o.n, block * channels + o.c, o.y / 2, o.x / 2)];
    }
  }
}

template <bool kFold>
at::Tensor fold_cuda(const at::Tensor& input, const char* op) {
  check_tensor(op, "input", input, 4, c10::kCUDA);
  check_dtype_for_device(op, input);
  if (kFold) {
    TORCH_CHECK(input.size(2) % 2 == 0 && input.size(3) % 2 == 0, op,
                ": argument 'input' must have even height and width, got shape ", input.sizes());
  } else {
    TORCH_CHECK(input.size(1) % 4 == 0, op, ": argument 'input' must have a channel count divisible by 4, got shape ",
                input.sizes());
  }
  const c10::cuda::CUDAGuard guard(input.device());
  auto output = kFold ? empty_4d({input.size(0), 4 * input.size(1), input.size(2) / 2, input.size(3) / 2}, input)
                      : empty_4d({input.size(0), input.size(1) / 4, input.size(2) * 2, input.size(3) * 2}, input);
  const int64_t numel = output.numel();
  if (numel == 0) return output;
  const bool channels_last = output_memory_format(input) == at::MemoryFormat::ChannelsLast;
  PIXELFOLDER_DISPATCH_CUDA_TYPES(input.scalar_type(), "fold", [&] {
    fold_kernel<scalar_t, kFold><<<blocks_for(numel), kThreadsPerBlock, 0, c10::cuda::getCurrentCUDAStream()>>>(
        input.data_ptr<scalar_t>(), output.data_ptr<scalar_t>(), Strides4(input), Strides4(output), channels_last,
        numel);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return output;
}

at::Tensor fold(const at::Tensor& input) { return fold_cuda<true>(input, "fold"); }
at::Tensor unfold(const at::Tensor& input) { return fold_cuda<false>(input, "unfold"); }

}  // namespace

TORCH_LIBRARY_IMPL(pixelfolder_ops, CUDA, m) {
  m.impl("fold", &fold);
  m.impl("unfold", &unfold);
}

}  // namespace pixelfolder
