"""The extension built with its CUDA kernels, as loaded on any machine with a CUDA build of PyTorch,
with or without a GPU (a cluster's login node has none): every op has a CUDA kernel registered, and
without a GPU the cuda backend says so while the cpu backend keeps working. .ci/cuda_build_check.sh
runs these against the installed package built for sm_90."""
import pytest
import torch

import pixelfolder_ops as ops
from pixelfolder_ops import extension

pytestmark = pytest.mark.skipif(torch.version.cuda is None, reason="needs a CUDA build of PyTorch")


def pixelfolder_op_names():
    """The ops of torch.ops.pixelfolder_ops, defined (with the extension loaded) at the backends' first use."""
    extension.unavailable_reason("cuda")
    return sorted(name for name in torch._C._dispatch_get_all_op_names() if name.startswith("pixelfolder_ops::"))


def test_build_info_lists_the_cuda_kernels():
    info = extension.build_info()
    assert info is not None, extension.unavailable_reason("cpu")
    assert "cuda" in info["backends"], extension.unavailable_reason("cuda")
    assert info["cuda_version"].split(".")[0] == torch.version.cuda.split(".")[0]
    assert info["cuda_arch_list"], info


def test_every_op_has_a_cuda_kernel():
    names = pixelfolder_op_names()
    assert "pixelfolder_ops::fold" in names and "pixelfolder_ops::styled_conv2d" in names, names
    missing = [name for name in names if not torch._C._dispatch_has_kernel_for_dispatch_key(name, "CUDA")]
    assert not missing, f"no CUDA kernel registered for {missing}"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible")
def test_without_a_gpu_the_cuda_backend_says_so():
    assert "cuda" not in ops.available_backends()
    assert "GPU" in extension.unavailable_reason("cuda")
    with pytest.raises(ops.BackendUnavailableError, match="GPU"):
        ops.fold(torch.randn(1, 2, 4, 4), backend="cuda")


def test_the_cpu_backend_works():
    assert "cpu" in ops.available_backends()
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 8, 6, 4, generator=generator)
    bias = torch.randn(8, generator=generator)
    kernel = torch.tensor([1.0, 3.0, 3.0, 1.0])
    kernel = torch.outer(kernel, kernel) / 64
    weight = torch.randn(5, 8, 3, 3, generator=generator)
    styles = torch.randn(2, 8, generator=generator)
    for call in (lambda backend: ops.fold(x, backend=backend),
                 lambda backend: ops.fused_leaky_relu(x, bias, backend=backend),
                 lambda backend: ops.upfirdn2d(x, kernel, up=2, pad=(2, 1), backend=backend),
                 lambda backend: ops.modulated_conv2d(x, weight, styles, backend=backend)):
        torch.testing.assert_close(call("cpu"), call("reference"), rtol=1e-4, atol=1e-5)
