// What the CUDA sources were compiled for (defined in build_info.cu, where nvcc's macros exist).
#pragma once

#include <string>
#include <vector>

namespace pixelfolder {

std::string cuda_build_version();            // e.g. "13.0"
std::vector<std::string> cuda_build_arch_list();  // e.g. {"8.0", "9.0"}

}  // namespace pixelfolder
