"""Compiler flags of the extension, shared by setup.py (which reads this file without importing the
package) and the JIT build, so that an installed and a JIT-built extension are the same."""
import sys

# ATen's at::parallel_for runs serially in code compiled without OpenMP: the CPU kernels need it to use
# every core. The extension then links libgomp.so.1, the one torch has already loaded.
OPENMP = ["-fopenmp"] if sys.platform.startswith("linux") else []
CXX_FLAGS = ["-O3"] + OPENMP
# No --use_fast_math: the Fourier embedding needs sin/cos accurate for large arguments.
NVCC_FLAGS = ["-O3", "--expt-relaxed-constexpr"]
LINK_FLAGS = OPENMP
