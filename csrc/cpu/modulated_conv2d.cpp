// Modulated conv on the CPU: the demodulation coefficients and the per-channel spatial dot products
// of its backward as kernels; the conv itself is the device-independent composite (composite.cpp)
// over ATen's convolutions.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>

#include "../common.h"
#include "../op_arguments.h"
#include "../composite.h"

namespace pixelfolder {
namespace {

at::Tensor modulated_conv2d_demod_cpu(const Arguments& args) {
  constexpr const char* op = "modulated_conv2d_demod";
  const auto& weight = args.tensor("weight");
  const auto& styles = args.tensor("styles");
  const double eps = args.real("eps");
  check_modulated_conv2d_demod_arguments(op, weight, styles, c10::kCPU);
  const int64_t batch = styles.size(0), out_channels = weight.size(0), in_channels = weight.size(1);
  const int64_t taps = weight.size(2) * weight.size(3);
  auto demod = empty_demod(weight, styles);
  const auto w = weight.contiguous();
  const auto s = styles.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, weight.scalar_type(), op, [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    // sum_k W[o, i, k]^2 once, then one dot product per (b, o).
    std::vector<opmath_t> weight_energy(out_channels * in_channels);
    const scalar_t* w_data = w.data_ptr<scalar_t>();
    at::parallel_for(0, out_channels * in_channels, 256, [&](int64_t begin, int64_t end) {
      for (int64_t oi = begin; oi < end; ++oi) {
        opmath_t sum = 0;
        for (int64_t k = 0; k < taps; ++k) sum += opmath_t(w_data[oi * taps + k]) * opmath_t(w_data[oi * taps + k]);
        weight_energy[oi] = sum;
      }
    });
    const scalar_t* s_data = s.data_ptr<scalar_t>();
    opmath_t* out = demod.data_ptr<opmath_t>();
    at::parallel_for(0, batch * out_channels, 16, [&](int64_t begin, int64_t end) {
      for (int64_t bo = begin; bo < end; ++bo) {
        const int64_t b = bo / out_channels, o = bo % out_channels;
        opmath_t sum = 0;
        for (int64_t i = 0; i < in_channels; ++i) {
          const opmath_t style = s_data[b * in_channels + i];
          sum += style * style * weight_energy[o * in_channels + i];
        }
        out[bo] = opmath_t(1) / std::sqrt(sum + opmath_t(eps));
      }
    });
  });
  return demod;
}

// Per (image, channel), sum over (h, w) of a * b, row by row in a fixed order, each tensor read through
// its own strides.
at::Tensor spatial_dot_cpu(const Arguments& args) {
  constexpr const char* op = "spatial_dot";
  const auto& a = args.tensor("a");
  const auto& b = args.tensor("b");
  check_spatial_dot_arguments(op, a, b, c10::kCPU);
  const int64_t channels = a.size(1), height = a.size(2), width = a.size(3);
  auto out = empty_spatial_dot(a);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), op, [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    const scalar_t* a_data = a.data_ptr<scalar_t>();
    const scalar_t* b_data = b.data_ptr<scalar_t>();
    const auto as = a.strides(), bs = b.strides();
    opmath_t* sums = out.data_ptr<opmath_t>();
    at::parallel_for(0, out.numel(), 1, [&](int64_t begin, int64_t end) {
      for (int64_t nc = begin; nc < end; ++nc) {
        const int64_t n = nc / channels, c = nc % channels;
        opmath_t sum = 0;
        for (int64_t y = 0; y < height; ++y) {
          const scalar_t* a_row = a_data + n * as[0] + c * as[1] + y * as[2];
          const scalar_t* b_row = b_data + n * bs[0] + c * bs[1] + y * bs[2];
          for (int64_t x = 0; x < width; ++x) sum += opmath_t(a_row[x * as[3]]) * opmath_t(b_row[x * bs[3]]);
        }
        sums[nc] = sum;
      }
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(pixelfolder_ops, CPU, m) {
  m.impl("modulated_conv2d_demod", kernel_of<modulated_conv2d_demod_cpu>());
  m.impl("spatial_dot", kernel_of<spatial_dot_cpu>());
  m.impl("modulated_conv2d", kernel_of<modulated_conv2d>());
  m.impl("modulated_conv2d_backward", kernel_of<modulated_conv2d_backward>());
}

}  // namespace pixelfolder
