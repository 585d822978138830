// upfirdn2d on CUDA: one thread per output element, summing only the kernel taps that land on input
// samples (the zeros of the upsampling and the padding are never read), through the input's strides.
#include <torch/library.h>

#include "../op_arguments.h"
#include "cuda_common.cuh"

namespace pixelfolder {
namespace {

template <typename scalar_t, typename opmath_t, typename index_t>
__global__ void upfirdn2d_kernel(RestrictPointer<const scalar_t> input, RestrictPointer<const scalar_t> kernel,
                                 RestrictPointer<scalar_t> output, Strides4<index_t> in, Strides4<index_t> out,
                                 BasicUpFirDnAxis<index_t> axis_x, BasicUpFirDnAxis<index_t> axis_y,
                                 bool channels_last, index_t numel) {
  PIXELFOLDER_GRID_STRIDE_LOOP(index_t, index, numel) {
    const auto o = coordinates_of(index, out.size, channels_last);
    const auto plane = input + o.n * in.stride[0] + o.c * in.stride[1];
    opmath_t sum = 0;
    axis_y.for_each_tap(o.y, [&](index_t iy, index_t ty) {
      axis_x.for_each_tap(o.x, [&](index_t ix, index_t tx) {
        sum += opmath_t(plane[iy * in.stride[2] + ix * in.stride[3]]) * opmath_t(kernel[ty * axis_x.taps + tx]);
      });
    });
    output[index] = sum;
  }
}

at::Tensor upfirdn2d_cuda(const Arguments& args) {
  constexpr const char* op = "upfirdn2d";
  const auto& input = args.tensor("input");
  const auto& kernel = args.tensor("kernel");
  const auto up = args.integers("up"), down = args.integers("down"), pad = args.integers("pad");
  check_upfirdn2d_arguments(op, input, kernel, up, down, pad, kCudaKernelDevice);
  const CudaDeviceGuard guard(input.device());
  const UpFirDnAxes axes = upfirdn2d_axes(input, kernel, up, down, pad);
  auto output = empty_upfirdn2d_output(input, axes);
  const int64_t numel = output.numel();
  if (numel == 0) return output;
  const auto k = kernel.contiguous();
  const bool channels_last = output_memory_format(input) == at::MemoryFormat::ChannelsLast;
  const bool fits = fits_32bit_index({input, output, k}) &&
                    std::max(axes.x.arithmetic_bound(), axes.y.arithmetic_bound()) < std::numeric_limits<int32_t>::max();
  PIXELFOLDER_DISPATCH_CUDA_TYPES(input.scalar_type(), op, [&] {
    PIXELFOLDER_DISPATCH_INDEX_TYPE(fits, [&] {
      launch_kernel(upfirdn2d_kernel<scalar_t, at::opmath_type<scalar_t>, index_t>, blocks_for(numel),
                    kThreadsPerBlock, pointer_to<scalar_t>(input, "input"), pointer_to<scalar_t>(k, "kernel"),
                    pointer_to<scalar_t>(output, "output"),
                    Strides4<index_t>(input), Strides4<index_t>(output), axes.x.as<index_t>(), axes.y.as<index_t>(),
                    channels_last, static_cast<index_t>(numel));
    });
  });
  return output;
}

}  // namespace

TORCH_LIBRARY_IMPL(pixelfolder_ops, PIXELFOLDER_CUDA_DISPATCH_KEY, m) {
  m.impl("upfirdn2d", kernel_of<upfirdn2d_cuda>());
  m.impl("upfirdn2d_backward", kernel_of<upfirdn2d_input_gradient>());
}

}  // namespace pixelfolder
