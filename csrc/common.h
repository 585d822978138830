// Helpers shared by every kernel file: argument checks, the output layout rule, upfirdn2d's axis
// arithmetic, and calls to other pixelfolder_ops ops through the dispatcher.
#pragma once

// Light headers (the Tensor class and one header per ATen function used) keep the JIT build fast.
#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/macros/Macros.h>

#include <algorithm>
#include <cstdlib>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <string>
#include <vector>

#include "arguments.h"

namespace pixelfolder {

// TORCH_CHECK that names the op and the argument. Every tensor of an op must be on one device, its
// index included: a kernel launched on cuda:0 must not be given cuda:1 memory.
inline void check_tensor(const char* op, const char* arg, const at::Tensor& t, int64_t ndim, c10::Device device) {
  TORCH_CHECK(t.device() == device, op, ": argument '", arg, "' must be on ", device,
              " (the device of the op's other tensors), got ", t.device());
  TORCH_CHECK(at::isFloatingType(t.scalar_type()), op, ": argument '", arg,
              "' must be a floating-point tensor, got ", t.scalar_type());
  TORCH_CHECK(ndim < 0 || t.dim() == ndim, op, ": argument '", arg, "' must be ", ndim,
              "-D, got shape ", t.sizes());
}

// The op's first tensor, on the kernel's device type: its device is the one the others must be on.
inline c10::Device check_first_tensor(const char* op, const char* arg, const at::Tensor& t, int64_t ndim,
                                      c10::DeviceType kernel_device) {
  TORCH_CHECK(t.device().type() == kernel_device, op, ": argument '", arg, "' must be on ",
              c10::DeviceTypeName(kernel_device), ", got ", t.device());
  check_tensor(op, arg, t, ndim, t.device());
  return t.device();
}

inline void check_same_dtype(const char* op, const char* arg, const at::Tensor& t,
                             const at::Tensor& reference) {
  TORCH_CHECK(t.scalar_type() == reference.scalar_type(), op, ": argument '", arg,
              "' must have dtype ", reference.scalar_type(), ", got ", t.scalar_type());
}

// Every kernel takes float32 and float64, and the two 16-bit types (computed in float32).
inline void check_dtype_for_device(const char* op, const at::Tensor& t) {
  const auto type = t.scalar_type();
  TORCH_CHECK(type == at::kFloat || type == at::kDouble || type == at::kHalf || type == at::kBFloat16, op,
              ": dtype ", type, " is not supported on ", t.device().type());
}

// Outputs of 4-D ops are channels-last exactly when one image of the input is channels-last and not
// also NCHW-contiguous: a batch broadcast from one image (batch stride 0, as the generators' inputs
// made once per call) takes that image's layout (pixelfolder_ops/_layout.py states the same rule
// for the fake kernels).
inline at::MemoryFormat output_memory_format(const at::Tensor& input) {
  if (input.dim() != 4 || input.size(0) == 0) return at::MemoryFormat::Contiguous;
  const auto image = input.narrow(0, 0, 1);
  const bool channels_last = !image.is_contiguous() && image.is_contiguous(at::MemoryFormat::ChannelsLast);
  return channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

inline at::Tensor empty_4d(at::IntArrayRef sizes, const at::Tensor& like) {
  return at::empty(sizes, like.options().memory_format(output_memory_format(like)));
}

inline c10::optional<at::Tensor> contiguous(const c10::optional<at::Tensor>& t) {
  return t ? c10::optional<at::Tensor>(t->contiguous()) : c10::nullopt;
}

// Kernels index in 32 bits when every offset they compute fits (GPU: a 64-bit integer division or
// remainder is a subroutine call of dozens of instructions, a 32-bit one a few). A grid-stride loop
// steps past its count by up to one grid (2^16 blocks of 256 threads, cuda/cuda_common.cuh), so that
// much headroom is kept.
constexpr int64_t kMaxGridThreads = int64_t{1} << 24;

// Whether every element's offset in a tensor of these sizes and strides, and every grid-stride index
// over as many elements, stays below 2^31 (strides are never negative in PyTorch; an expanded axis has
// stride 0, so its elements share offsets).
inline bool fits_32bit_index(at::IntArrayRef sizes, at::IntArrayRef strides) {
  int64_t numel = 1, last_offset = 0;
  for (size_t d = 0; d < sizes.size(); ++d) {
    if (sizes[d] == 0) return true;
    numel *= sizes[d];
    last_offset += (sizes[d] - 1) * strides[d];
  }
  return std::max(numel, last_offset + 1) <= std::numeric_limits<int32_t>::max() - kMaxGridThreads;
}

inline bool fits_32bit_index(std::initializer_list<at::Tensor> tensors) {
  return std::all_of(tensors.begin(), tensors.end(),
                     [](const at::Tensor& t) { return fits_32bit_index(t.sizes(), t.strides()); });
}

// Runs the lambda with `index_t` int32_t when FITS_32BIT, else int64_t (as AT_DISPATCH_* names scalar_t).
#define PIXELFOLDER_DISPATCH_INDEX_TYPE(FITS_32BIT, ...) \
  [&] {                                                  \
    if (FITS_32BIT) {                                    \
      using index_t = int32_t;                           \
      return __VA_ARGS__();                              \
    }                                                    \
    using index_t = int64_t;                             \
    return __VA_ARGS__();                                \
  }()

// One axis of upfirdn2d: the input is upsampled by `up` (zeros between samples), padded by
// (pad0, pad1) (negative crops), correlated with the flipped kernel, and sampled every `down`;
// computed in index_t (kernels: 32 bits where the tensors allow).
template <typename index_t>
struct BasicUpFirDnAxis {
  index_t in_size, up, down, pad0, pad1, taps;

  template <typename other_t>
  BasicUpFirDnAxis<other_t> as() const {
    return {other_t(in_size), other_t(up), other_t(down), other_t(pad0), other_t(pad1), other_t(taps)};
  }

  C10_HOST_DEVICE index_t out_size() const { return (in_size * up + pad0 + pad1 - taps) / down + 1; }

  // Output sample o reads upsampled position o * down + t - pad0 with kernel tap taps - 1 - t;
  // only positions that are multiples of `up` hold input samples.
  template <typename Visit>
  C10_HOST_DEVICE void for_each_tap(index_t o, Visit&& visit) const {
    const index_t start = o * down - pad0;
    index_t t = ((-start) % up + up) % up;  // first t with (start + t) divisible by up
    for (; t < taps; t += up) {
      const index_t i = (start + t) / up;
      if (i >= 0 && i < in_size) visit(i, taps - 1 - t);
    }
  }

  // Bounds the magnitude of every value the arithmetic above reaches (upsampled, padded positions).
  index_t arithmetic_bound() const {
    return std::max(in_size * up, out_size() * down) + std::abs(pad0) + std::abs(pad1) + taps;
  }

  // The pads of the gradient: an upfirdn2d of the output gradient with the flipped kernel and up
  // and down swapped gives back in_size samples.
  std::pair<index_t, index_t> gradient_pads() const {
    return {taps - pad0 - 1, in_size * up - out_size() * down + pad0 - up + 1};
  }
};

using UpFirDnAxis = BasicUpFirDnAxis<int64_t>;

// Calls to pixelfolder_ops ops from C++ go through the dispatcher (arguments.h's call_op), so the composite
// ops reach the kernels of the tensor's device.
inline at::Tensor call_upfirdn2d(const at::Tensor& input, const at::Tensor& kernel, at::IntArrayRef up,
                                 at::IntArrayRef down, at::IntArrayRef pad) {
  return call_op_for_tensor("upfirdn2d", {{"input", input}, {"kernel", kernel}, {"up", up.vec()},
                                          {"down", down.vec()}, {"pad", pad.vec()}});
}

// The gradient of upfirdn2d with respect to its input: an upfirdn2d of the output gradient with the
// flipped kernel and up and down swapped.
inline at::Tensor call_upfirdn2d_input_gradient(const at::Tensor& grad_output, const at::Tensor& kernel,
                                                at::IntArrayRef up, at::IntArrayRef down,
                                                at::IntArrayRef pad, int64_t in_h, int64_t in_w) {
  const UpFirDnAxis x{in_w, up[0], down[0], pad[0], pad[1], kernel.size(1)};
  const UpFirDnAxis y{in_h, up[1], down[1], pad[2], pad[3], kernel.size(0)};
  const auto [x0, x1] = x.gradient_pads();
  const auto [y0, y1] = y.gradient_pads();
  return call_upfirdn2d(grad_output, kernel.flip({0, 1}), down, up, {x0, x1, y0, y1});
}

// upfirdn2d_backward's entry point, on every device.
inline at::Tensor upfirdn2d_input_gradient(const Arguments& args) {
  return call_upfirdn2d_input_gradient(args.tensor("grad_output"), args.tensor("kernel"), args.integers("up"),
                                       args.integers("down"), args.integers("pad"), args.integer("input_height"),
                                       args.integer("input_width"));
}

inline at::Tensor call_demod(const at::Tensor& weight, const at::Tensor& styles, double eps) {
  return call_op_for_tensor("modulated_conv2d_demod", {{"weight", weight}, {"styles", styles}, {"eps", eps}});
}

}  // namespace pixelfolder
