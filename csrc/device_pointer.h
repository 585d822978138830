// Pointers into tensors as kernels take them. On the GPU, and in the CPU kernels, plain pointers;
// in the CUDA emulation build (csrc/emulation) checked pointers that know their tensor's name and
// elements, so that every access of an emulated kernel is checked (checked_memory.h). Kernels take
// RestrictPointer parameters (T* __restrict__ on the GPU); structs passed to kernels hold
// DevicePointers (T*); launchers make both with pointer_to(tensor, name).
#pragma once

#include <ATen/core/Tensor.h>

#ifdef PIXELFOLDER_CUDA_EMULATION
#include "emulation/checked_memory.h"
#endif

namespace pixelfolder {

#ifdef PIXELFOLDER_CUDA_EMULATION
template <typename T>
using DevicePointer = cuda_emulation::GlobalPointer<T>;
template <typename T>
using RestrictPointer = cuda_emulation::GlobalPointer<T>;
#else
template <typename T>
using DevicePointer = T*;
template <typename T>
using RestrictPointer = T* __restrict__;
#endif

// `tensor`'s data as a kernel's pointer; the emulation's reports call it `name`.
template <typename T>
DevicePointer<T> pointer_to(const at::Tensor& tensor, const char* name) {
#ifdef PIXELFOLDER_CUDA_EMULATION
  // The offsets of its first and last elements from element 0 (a strided view's reach).
  std::ptrdiff_t first = 0, last = tensor.numel() == 0 ? -1 : 0;
  for (int64_t d = 0; d < tensor.dim() && tensor.numel() > 0; ++d) {
    const int64_t reach = (tensor.size(d) - 1) * tensor.stride(d);
    (reach < 0 ? first : last) += reach;
  }
  return {tensor.data_ptr<T>(), first, last, name};
#else
  (void)name;
  return tensor.data_ptr<T>();
#endif
}

}  // namespace pixelfolder
