// ToRGB on CUDA: the device-independent composite (composite.cpp): the modulated 1x1 conv as one
// batched GEMM with the bias, plus the x2 upfirdn2d of the skip added in place.
#include <torch/library.h>

#include "../composite.h"
#include "cuda_common.cuh"

namespace pixelfolder {

TORCH_LIBRARY_IMPL(pixelfolder_ops, PIXELFOLDER_CUDA_DISPATCH_KEY, m) {
  m.impl("to_rgb", kernel_of<to_rgb>());
}

}  // namespace pixelfolder
