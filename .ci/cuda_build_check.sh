#!/usr/bin/env bash
# CI step: the package installed with its CUDA kernels compiled for sm_90 against a CUDA 13 build of
# PyTorch, then loaded on this machine, which has no GPU (as a cluster's login node is): it imports,
# build_info() lists the CUDA kernels and their architecture, every op has a CUDA kernel registered,
# the cuda backend is reported unavailable for want of a GPU, and the cpu backend works.
# Everything lives in build/cuda_build_check/ (a fresh venv and setuptools build folder each run).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
work=$root/build/cuda_build_check
started=$SECONDS
phase() { echo "CI cuda build: $1 ($((SECONDS - started)) s so far)"; }

rm -rf "$work"
mkdir -p "$work"
python3 -m venv "$work/venv"
. "$work/venv/bin/activate"
phase "installing torch==2.14.1 (CUDA 13)"
pip install -q torch==2.14.1

phase "building and installing the package with its CUDA kernels for sm_90"
python - <<'PY'
import runpy
home, how = runpy.run_path("pixelfolder_ops/extension/_toolkit.py")["find_cuda_home"]()
print(f"CI cuda build: CUDA toolkit {home} (found from {how})")
PY
# setuptools' own build folder, so no build from another venv is reused or overwritten. Only pytest
# and numpy (torch warns without it) besides the package: test_cuda_build.py needs nothing else.
printf '[build]\nbuild_base = %s\n' "$work/setuptools" > "$work/setuptools.cfg"
DIST_EXTRA_CONFIG="$work/setuptools.cfg" PIXELFOLDER_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=2 \
    nice pip install -q --no-build-isolation . pytest numpy

phase "checking the installed build without a GPU"
# From outside the clone, so that Python imports the installed package, not the clone's sources; a JIT
# build of the extension would be a failure here, so its cache points at an empty folder it must not fill.
cd "$work"
export TORCH_EXTENSIONS_DIR=$work/no_jit_build
mkdir -p "$TORCH_EXTENSIONS_DIR"
python - <<'PY'
import os
import sys

import torch

import pixelfolder_ops
from pixelfolder_ops import extension

failures = []
def check(condition, message):
    if not condition:
        failures.append(message)

check(torch.version.cuda is not None and not torch.cuda.is_available(),
      f"expected a CUDA build of torch and no GPU; torch {torch.__version__}, GPU visible: {torch.cuda.is_available()}")
check(os.path.realpath(pixelfolder_ops.__file__).startswith(os.path.realpath(sys.prefix)),
      f"expected the installed package, imported {pixelfolder_ops.__file__}")
module = extension.load().module
check(module is not None and module.__name__ == "pixelfolder_ops._C",
      f"expected the installed pixelfolder_ops._C, loaded {module and module.__name__} ({extension.load().error})")
info = extension.build_info() or {}
check("cuda" in info.get("backends", ()) and info.get("cuda_arch_list") == ["9.0"],
      f"expected build_info() to list the cuda backend built for 9.0 alone; got {info}")
print("build_info():", info)
print("unavailable_reason('cuda'):", extension.unavailable_reason("cuda"))
for failure in failures:
    print("CI cuda build: FAILED:", failure, file=sys.stderr)
sys.exit(1 if failures else 0)
PY
# No ini file: the project's would put the clone first on sys.path.
python -m pytest -q -p no:cacheprovider -c /dev/null --rootdir "$work" "$root/tests/test_cuda_build.py"
if [ -n "$(ls -A "$TORCH_EXTENSIONS_DIR")" ]; then
    echo "CI cuda build: FAILED: the extension was JIT-built instead of the installed one loaded" >&2
    exit 1
fi
phase "done"
