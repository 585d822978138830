#include <cuda_runtime_api.h>

#include "build_info.h"

namespace pixelfolder {

std::string cuda_build_version() {
  return std::to_string(CUDART_VERSION / 1000) + "." + std::to_string(CUDART_VERSION % 1000 / 10);
}

std::vector<std::string> cuda_build_arch_list() {
  // nvcc defines __CUDA_ARCH_LIST__ (e.g. 800,900) in every pass, the host pass included.
  std::vector<std::string> archs;
  for (const int arch : {__CUDA_ARCH_LIST__}) {
    archs.push_back(std::to_string(arch / 100) + "." + std::to_string(arch % 100 / 10));
  }
  return archs;
}

}  // namespace pixelfolder
