// ToRGB on the CPU: the device-independent composite (composite.cpp): the modulated 1x1 conv as one
// batched GEMM with the bias, plus the x2 upfirdn2d of the skip added in place.
#include <torch/library.h>

#include "../composite.h"

namespace pixelfolder {

TORCH_LIBRARY_IMPL(pixelfolder_ops, CPU, m) {
  m.impl("to_rgb", kernel_of<to_rgb>());
}

}  // namespace pixelfolder
