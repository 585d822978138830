// The coordinate grid of fourier_embedding, made where it is used: x = linspace(-1, 1, width) along
// the width, y = linspace(-1, 1, height) along the height, computed as torch.linspace does (from
// the nearer end) so the values match it.
#pragma once

#include <c10/macros/Macros.h>

#include <cstdint>

namespace pixelfolder {

template <typename T, typename index_t>
C10_HOST_DEVICE T linspace_minus1_to_1(index_t index, index_t steps) {
  if (steps == 1) return T(-1);
  const T step = T(2) / T(steps - 1);
  return index < steps / 2 ? T(-1) + step * T(index) : T(1) - step * T(steps - 1 - index);
}

}  // namespace pixelfolder
