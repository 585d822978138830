// upfirdn2d on CUDA: one thread per output element, summing only the kernel taps that land on input
// samples (the zeros of the upsampling and the padding are never read), through the input's strides.
#include <torch/library.h>

#include "cuda_common.cuh"

namespace pixelfolder {
namespace {

template <typename scalar_t, typename opmath_t>
__global__ void upfirdn2d_kernel(const scalar_t* __restrict__ input, const scalar_t* __restrict__ kernel,
                                 scalar_t* __restrict__ output, Strides4 in, Strides4 out, UpFirDnAxis axis_x,
                                 UpFirDnAxis axis_y, bool channels_last, int64_t numel) {
  PIXELFOLDER_GRID_STRIDE_LOOP(index, numel) {
    const auto o = coordinates_of(index, out.size, channels_last);
    const scalar_t* plane = input + o.n * in.stride[0] + o.c * in.stride[1];
    opmath_t sum = 0;
    axis_y.for_each_tap(o.y, [&](int64_t iy, int64_t ty) {
      axis_x.for_each_tap(o.x, [&](int64_t ix, int64_t tx) {
        sum += opmath_t(plane[iy * in.stride[2] + ix * in.stride[3]]) * opmath_t(kernel[ty * axis_x.taps + tx]);
      });
    });
    output[index] = sum;
  }
}

at::Tensor upfirdn2d_cuda(const at::Tensor& input, const at::Tensor& kernel, at::IntArrayRef up,
                          at::IntArrayRef down, at::IntArrayRef pad) {
  constexpr const char* op = "upfirdn2d";
  check_tensor(op, "input", input, 4, c10::kCUDA);
  check_tensor(op, "kernel", kernel, 2, c10::kCUDA);
  check_same_dtype(op, "kernel", kernel, input);
  check_dtype_for_device(op, input);
  TORCH_CHECK(up.size() == 2 && down.size() == 2 && pad.size() == 4, op,
              ": arguments 'up', 'down', 'pad' must have 2, 2 and 4 values");
  TORCH_CHECK(up[0] >= 1 && up[1] >= 1 && down[0] >= 1 && down[1] >= 1, op,
              ": arguments 'up' and 'down' must be >= 1, got ", up, " and ", down);
  TORCH_CHECK(input.size(3) * up[0] + pad[0] + pad[1] >= kernel.size(1) &&
              input.size(2) * up[1] + pad[2] + pad[3] >= kernel.size(0),
              op, ": arguments 'pad' and 'kernel' leave no output for input of shape ", input.sizes());
  const c10::cuda::CUDAGuard guard(input.device());
  const UpFirDnAxis axis_x{input.size(3), up[0], down[0], pad[0], pad[1], kernel.size(1)};
  const UpFirDnAxis axis_y{input.size(2), up[1], down[1], pad[2], pad[3], kernel.size(0)};
  auto output = empty_4d({input.size(0), input.size(1), axis_y.out_size(), axis_x.out_size()}, input);
  const int64_t numel = output.numel();
  if (numel == 0) return output;
  const auto k = kernel.contiguous();
  const bool channels_last = output_memory_format(input) == at::MemoryFormat::ChannelsLast;
  PIXELFOLDER_DISPATCH_CUDA_TYPES(input.scalar_type(), op, [&] {
    upfirdn2d_kernel<scalar_t, at::opmath_type<scalar_t>>
        <<<blocks_for(numel), kThreadsPerBlock, 0, c10::cuda::getCurrentCUDAStream()>>>(
            input.data_ptr<scalar_t>(), k.data_ptr<scalar_t>(), output.data_ptr<scalar_t>(), Strides4(input),
            Strides4(output), axis_x, axis_y, channels_last, numel);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return output;
}

}  // namespace

TORCH_LIBRARY_IMPL(pixelfolder_ops, CUDA, m) {
  m.impl("upfirdn2d", &upfirdn2d_cuda);
  m.impl("upfirdn2d_backward", &call_upfirdn2d_input_gradient);
}

}  // namespace pixelfolder
