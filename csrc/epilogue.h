// The styled_conv2d epilogue for one conv output element, shared by the CPU and CUDA kernels:
// pre-activation a = conv * demod + noise_strength * noise + bias, and where the (optionally
// unfolded) output stores it.
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <c10/macros/Macros.h>

#include <cstdint>

#include "common.h"
#include "device_pointer.h"

namespace pixelfolder {

// The epilogue of one conv output row (b, c, y), its per-row operands read once:
// a = conv * scale + noise_scale * noise[x] + shift (scale 1 without demod, shift 0 without bias).
template <typename scalar_t, typename opmath_t>
struct EpilogueRow {
  opmath_t scale, noise_scale, shift;
  DevicePointer<const scalar_t> noise;  // this row of the noise, or null
  int64_t noise_stride;

  C10_HOST_DEVICE opmath_t preactivation(opmath_t conv, int64_t x) const {
    opmath_t a = conv * scale;
    if (noise) a += noise_scale * opmath_t(noise[x * noise_stride]);
    return a + shift;
  }
};

template <typename scalar_t, typename opmath_t>
struct EpiloguePointers {
  DevicePointer<const opmath_t> demod;           // (B, C) or null
  DevicePointer<const scalar_t> noise;           // (B or 1, 1, H, W) or null
  DevicePointer<const scalar_t> noise_strength;  // one element, or null
  DevicePointer<const scalar_t> bias;            // (C,) or null
  int64_t noise_batch_stride, noise_row_stride, noise_col_stride, channels;

  C10_HOST_DEVICE EpilogueRow<scalar_t, opmath_t> row(int64_t b, int64_t c, int64_t y) const {
    return {demod ? opmath_t(demod[b * channels + c]) : opmath_t(1),
            noise ? opmath_t(*noise_strength) : opmath_t(0),
            bias ? opmath_t(bias[c]) : opmath_t(0),
            noise ? noise + b * noise_batch_stride + y * noise_row_stride : nullptr,
            noise_col_stride};
  }

  C10_HOST_DEVICE opmath_t preactivation(opmath_t conv, int64_t b, int64_t c, int64_t y, int64_t x) const {
    return row(b, c, y).preactivation(conv, x);
  }
};

// The epilogue's tensor operands, read from its op's arguments: bias and demod made contiguous (demod in
// opmath_t) and kept alive while a kernel uses pointers(); a noise of one image is broadcast over the batch.
struct EpilogueTensors {
  at::Tensor conv_output;
  c10::optional<at::Tensor> demod, noise, noise_strength, bias;

  explicit EpilogueTensors(const Arguments& args)
      : conv_output(args.tensor("conv_output")),
        demod(contiguous(args.optional_tensor("demod"))),
        noise(args.optional_tensor("noise")),
        noise_strength(args.optional_tensor("noise_strength")),
        bias(contiguous(args.optional_tensor("bias"))) {}

  template <typename scalar_t, typename opmath_t = at::opmath_type<scalar_t>>
  EpiloguePointers<scalar_t, opmath_t> pointers() const {
    return {demod ? pointer_to<opmath_t>(*demod, "demod") : nullptr,
            noise ? pointer_to<scalar_t>(*noise, "noise") : nullptr,
            noise ? pointer_to<scalar_t>(*noise_strength, "noise_strength") : nullptr,
            bias ? pointer_to<scalar_t>(*bias, "bias") : nullptr,
            noise && noise->size(0) > 1 ? noise->stride(0) : 0,
            noise ? noise->stride(2) : 0,
            noise ? noise->stride(3) : 0,
            conv_output.size(1)};
  }
};

// Output coordinates of conv element (c, y, x): itself, or with unfold_output, channel
// c = (dy * 2 + dx) * C/4 + c' goes to (c', 2y + dy, 2x + dx).
template <typename index_t>
struct OutputIndex {
  index_t c, y, x;
};

template <typename index_t>
C10_HOST_DEVICE inline OutputIndex<index_t> epilogue_output_index(bool unfold_output, index_t channels, index_t c,
                                                                  index_t y, index_t x) {
  if (!unfold_output) return {c, y, x};
  const index_t quarter = channels / 4, block = c / quarter;
  return {c % quarter, 2 * y + block / 2, 2 * x + block % 2};
}

}  // namespace pixelfolder
