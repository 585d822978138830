// Bias + leaky ReLU + gain (+ clamp), and the channel layout of the tensors it runs on: shared by
// fused_leaky_relu and the styled_conv2d epilogue, on the CPU and on CUDA.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/macros/Macros.h>

#include <limits>

#include "common.h"

namespace pixelfolder {

template <typename T>
struct LeakyReLU {
  T negative_slope, gain, clamp;  // clamp = +inf: none

  template <typename U>
  LeakyReLU<U> as() const {
    return {U(negative_slope), U(gain), U(clamp)};
  }

  // For a backward that reads the outputs back from stored_t memory: a saturated output is the clamp
  // rounded to stored_t, which its gradient test must see as saturated.
  template <typename U, typename stored_t>
  LeakyReLU<U> as_read_from() const {
    return {U(negative_slope), U(gain), U(stored_t(U(clamp)))};
  }

  // Both members are selects between values (min / max forms, no && or ||), so that loops over them
  // compile without branches, which random signs would mispredict half the time, and vectorize.
  // NaN propagates, as in the reference.
  C10_HOST_DEVICE T operator()(T x) const {
    const T positive = x < T(0) ? T(0) : x, negative = T(0) < x ? T(0) : x;
    const T y = (positive + negative * negative_slope) * gain;
    const T low = y < -clamp ? -clamp : y;
    return clamp < low ? clamp : low;
  }

  // d output / d input, from the output alone: with negative_slope >= 0 and gain > 0 the output is
  // positive exactly where the input is, and a clamped output has no gradient.
  C10_HOST_DEVICE T gradient(T output) const {
    const T negative_gain = gain * negative_slope;
    const T slope = T(0) < output ? gain : negative_gain;
    const T below_clamp = clamp <= output ? T(0) : slope;
    return output <= -clamp ? T(0) : below_clamp;
  }
};

// The activation of an op, from its arguments negative_slope, the gain (named `gain_name`: "scale" in
// fused_leaky_relu's StyleGAN2-family signature, "gain" in styled_conv2d's) and clamp; as<T>() gives it
// in the kernels' compute type.
inline LeakyReLU<double> leaky_relu_arguments(const Arguments& args, const char* gain_name = "scale") {
  const double negative_slope = args.real("negative_slope"), gain = args.real(gain_name);
  const auto clamp = args.optional_real("clamp");
  // The backward reads the input's sign from the output's, which needs these.
  TORCH_CHECK(negative_slope >= 0, args.op(), ": argument 'negative_slope' must be >= 0, got ", negative_slope);
  TORCH_CHECK(gain > 0, args.op(), ": argument '", gain_name, "' must be > 0, got ", gain);
  TORCH_CHECK(!clamp || *clamp > 0, args.op(), ": argument 'clamp' must be > 0, got ", clamp.value_or(0));
  return {negative_slope, gain, clamp ? *clamp : std::numeric_limits<double>::infinity()};
}

// Where channel dimension 1 is in memory: a tensor contiguous in its layout has each element's
// channel at (index / inner) % channels (NCHW-like) or index % channels (channels-last).
struct ChannelLayout {
  int64_t channels, inner;
  bool channels_last;

  static ChannelLayout of(const at::Tensor& t) {
    const bool channels_last = output_memory_format(t) == at::MemoryFormat::ChannelsLast;
    const int64_t channels = t.dim() >= 2 ? t.size(1) : 1;
    int64_t inner = 1;
    for (int64_t d = 2; d < t.dim(); ++d) inner *= t.size(d);
    return {channels, inner, channels_last};
  }

  at::MemoryFormat memory_format() const {
    return channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  }

  template <typename index_t>
  C10_HOST_DEVICE index_t channel(index_t index) const {
    return channels_last ? index % index_t(channels) : index / index_t(inner) % index_t(channels);
  }
};

}  // namespace pixelfolder
