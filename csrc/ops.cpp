// The build information the Python loader reports. The op schemas are defined in Python, from each op's
// definition (pixelfolder_ops/_protocol.py); the kernel files register kernels for them.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/version.h>

#include <utility>
#include <vector>

#include "common.h"
#ifdef PIXELFOLDER_WITH_CUDA
#include "cuda/build_info.h"
#endif
#ifdef PIXELFOLDER_CUDA_EMULATION
#include "emulation/cuda_emulation.h"
#endif

namespace {

pybind11::dict build_info() {
  pybind11::dict info;
  pybind11::list backends;
  backends.append("cpu");
  info["torch_version"] = std::to_string(TORCH_VERSION_MAJOR) + "." +
                          std::to_string(TORCH_VERSION_MINOR) + "." +
                          std::to_string(TORCH_VERSION_PATCH);
#ifdef PIXELFOLDER_WITH_CUDA
  backends.append("cuda");
  info["cuda_version"] = pixelfolder::cuda_build_version();
  info["cuda_arch_list"] = pixelfolder::cuda_build_arch_list();
#else
  info["cuda_version"] = pybind11::none();
  info["cuda_arch_list"] = pybind11::list();
#endif
  info["backends"] = backends;
  // The emulation build's "cpu" backend runs the CUDA kernels (csrc/emulation).
#ifdef PIXELFOLDER_CUDA_EMULATION
  info["cuda_emulation"] = true;
  info["cuda_emulation_seed"] = pixelfolder::cuda_emulation::seed();
#else
  info["cuda_emulation"] = false;
#endif
  // Without OpenMP, at::parallel_for runs the CPU kernels on one core.
#ifdef _OPENMP
  info["cpu_parallel"] = true;
#else
  info["cpu_parallel"] = false;
#endif
  return info;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.doc() = "pixelfolder_ops kernels: importing this registers the torch.ops.pixelfolder_ops ops.";
  module.def(
      "fits_32bit_index",
      [](const std::vector<std::pair<std::vector<int64_t>, std::vector<int64_t>>>& tensors) {
        return std::all_of(tensors.begin(), tensors.end(),
                           [](const auto& t) { return pixelfolder::fits_32bit_index(t.first, t.second); });
      },
      "Whether the kernels index tensors of these (sizes, strides) in 32 bits (else in 64).");
  module.def("build_info", &build_info,
             "Which backends were compiled, the CUDA architectures and the torch / CUDA versions built against.");
}
