"""The "cuda" backend: every CUDA source compiles with nvcc (no GPU needed), and on a GPU each op
matches the reference in float32 / bfloat16 / float16, NCHW and channels-last, forward and backward."""
import glob
import math
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

import models
import pixelfolder_ops as ops
from pixelfolder_ops import extension, reference
from pixelfolder_ops.correctness import tf32

from benchmarks.kernel_resources import nvcc_command, nvcc_path
from test_extension import (CASES, LAYOUTS, SEVERAL_BLOCKS, op_cases, schema_args, styled_conv_case,
                            styled_conv_gradients)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CUDA_SOURCES = sorted(glob.glob(os.path.join(ROOT, "csrc", "cuda", "*.cu")))
NVCC = nvcc_path()
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.slow
@pytest.mark.skipif(not NVCC or not os.path.exists(NVCC), reason="nvcc is not installed")
def test_every_cuda_source_compiles(tmp_path):
    assert CUDA_SOURCES

    def compile_one(source):
        output = tmp_path / (os.path.basename(source) + ".o")
        result = subprocess.run(nvcc_command(source, str(output)), capture_output=True, text=True)
        return source, result.returncode, result.stdout + result.stderr

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        failures = [f"{source}:\n{log}" for source, code, log in pool.map(compile_one, CUDA_SOURCES) if code]
    assert not failures, "\n\n".join(failures)


CUDA_DTYPES = [torch.float32, torch.bfloat16, torch.float16]
TOLERANCE = {torch.float32: dict(rtol=1e-3, atol=1e-4), torch.bfloat16: dict(rtol=5e-2, atol=5e-2),
             torch.float16: dict(rtol=1e-2, atol=1e-2)}


def to_device(value, dtype, device="cuda"):
    """``value`` on ``device`` in ``dtype`` with its strides: ``.to()`` would make a copy of a view that
    is not dense (the "strided" layout) contiguous, and the kernels would never see a strided input."""
    if not isinstance(value, torch.Tensor):
        return value
    source = value.detach()
    span = 1 + sum((size - 1) * stride for size, stride in zip(source.shape, source.stride()))
    copy = torch.empty(span, dtype=dtype, device=device).as_strided(source.shape, source.stride())
    return copy.copy_(source).requires_grad_(value.requires_grad)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
def test_device_copies_keep_the_layout(layout):
    _, args = op_cases(torch.float64, layout)["styled_conv2d"]
    for arg in (a for a in args if isinstance(a, torch.Tensor)):
        copy = to_device(arg, torch.float32, "cpu")
        assert copy.stride() == arg.stride() and torch.equal(copy, arg.float())


@pytest.fixture
def exact_float32():
    with tf32(False):
        yield


@needs_cuda
def test_cuda_backend_is_available():
    assert extension.unavailable_reason("cuda") is None, extension.unavailable_reason("cuda")
    assert "cuda" in extension.build_info()["backends"]


@needs_cuda
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
@pytest.mark.parametrize("dtype", CUDA_DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES)
def test_cuda_op_matches_reference(case, dtype, layout, exact_float32):
    name, args = op_cases(torch.float64, layout, requires_grad=True)[case]
    cuda_args = [to_device(a, dtype) for a in args]
    reference_args = [to_device(a, torch.float64) for a in args]  # the oracle in float64, on the GPU
    assert [a.stride() for a in cuda_args if isinstance(a, torch.Tensor)] == \
        [a.stride() for a in args if isinstance(a, torch.Tensor)]
    actual = getattr(extension, name)(*cuda_args)
    expected = getattr(reference, name)(*reference_args)
    torch.testing.assert_close(actual.double(), expected, **TOLERANCE[dtype])
    grad = torch.randn_like(expected)
    inputs = [a for a in cuda_args if isinstance(a, torch.Tensor) and a.requires_grad]
    reference_inputs = [a for a in reference_args if isinstance(a, torch.Tensor) and a.requires_grad]
    grads = torch.autograd.grad(actual, inputs, grad.to(dtype))
    expected_grads = torch.autograd.grad(expected, reference_inputs, grad)
    for g, e in zip(grads, expected_grads):
        scale = e.abs().max().clamp_min(1)  # reductions over many elements: compare relative to the size
        torch.testing.assert_close(g.double() / scale, e / scale, **TOLERANCE[dtype])


TF32_UNIT_ROUNDOFF = 2.0 ** -11
CONV_CASES = [case for case in CASES if case.startswith(("modulated_conv2d", "styled_conv2d", "to_rgb"))]


@needs_cuda
@pytest.mark.parametrize("case", CONV_CASES)
def test_cuda_convs_in_tf32_within_tf32_accuracy(case):
    # TF32 (the default for cuDNN convs) rounds both factors of every product to 10 mantissa bits, 2u
    # relative (u = 2^-11), and the errors, of either sign, add up over the K = 27 products (3 channels
    # x 3 x 3) behind an output to about 2 sqrt(K) u times the outputs' scale.
    name, args = op_cases(torch.float64)[case]
    with tf32(True):
        actual = getattr(extension, name)(*[to_device(a, torch.float32) for a in args])
    expected = getattr(reference, name)(*[to_device(a, torch.float64) for a in args])
    u = TF32_UNIT_ROUNDOFF
    torch.testing.assert_close(actual.double(), expected, rtol=2 * u,
                               atol=2 * math.sqrt(27) * u * expected.abs().max().item())


@needs_cuda
@pytest.mark.parametrize("noise", [None, "per_image", "shared"], ids=["no_noise", "noise", "shared_noise"])
@pytest.mark.parametrize("unfold_output", [False, True], ids=["conv_layout", "unfolded"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_cuda_styled_conv2d_backward_matches_the_reference_with_the_same_bits_twice(layout, unfold_output, noise,
                                                                                   exact_float32):
    # Over several reduction blocks (32 channels x 1024 pixels each) in every direction.
    args = styled_conv_case(torch.float64, layout, unfold_output, noise, True, **SEVERAL_BLOCKS)
    cuda_args = [to_device(a, torch.float32) for a in args]
    grads = styled_conv_gradients(extension.styled_conv2d, cuda_args)
    assert all(torch.equal(a, b) for a, b in zip(grads, styled_conv_gradients(extension.styled_conv2d, cuda_args)))
    expected = styled_conv_gradients(reference.styled_conv2d, [to_device(a, torch.float64) for a in args])
    for g, e in zip(grads, expected):
        scale = e.abs().max().clamp_min(1)  # reductions over many elements: compare relative to the size
        torch.testing.assert_close(g.double() / scale, e / scale, **TOLERANCE[torch.float32])


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_cuda_ops_refuse_tensors_on_another_gpu():
    # Same device type, another index: a kernel launched on cuda:0 must not read cuda:1 memory.
    _, (x, kernel, up, down, pad) = op_cases(torch.float32)["upfirdn2d_up"]
    with pytest.raises(RuntimeError, match=r"upfirdn2d: argument 'kernel' must be on cuda:0 .*got cuda:1"):
        torch.ops.pixelfolder_ops.upfirdn2d(x.to("cuda:0"), kernel.to("cuda:1"), list(up), list(down), list(pad))
    _, (x, weight, styles, *rest) = op_cases(torch.float32)["modulated_conv2d"]
    with pytest.raises(RuntimeError, match=r"modulated_conv2d: argument 'styles' must be on cuda:0 .*got cuda:1"):
        extension.modulated_conv2d(x.to("cuda:0"), weight.to("cuda:0"), styles.to("cuda:1"), *rest)


@needs_cuda
@pytest.mark.parametrize("case", CASES)
def test_cuda_opcheck(case):
    name, args = op_cases(torch.float32, requires_grad=True)[case]
    args = schema_args(name, (to_device(a, torch.float32) for a in args))
    torch.library.opcheck(getattr(torch.ops.pixelfolder_ops, name).default, args)


@needs_cuda
@pytest.mark.parametrize("case", ["fused_leaky_relu", "upfirdn2d_up", "upfirdn2d_mixed", "to_rgb"])
def test_cuda_gradgradcheck(case):
    name, args = op_cases(requires_grad=True)[case]
    args = [to_device(a, torch.float64) for a in args]
    function = getattr(extension, name)
    assert torch.autograd.gradgradcheck(lambda x: function(x, *args[1:]), [args[0]])


@needs_cuda
@pytest.mark.parametrize("factory, input_shape", [
    (lambda: models.PixelFolder(64, width=0.125), (2, 512)),
    (lambda: models.Discriminator(32, width=0.125), (2, 3, 32, 32)),
], ids=["PixelFolder", "Discriminator"])
def test_cuda_models_match_the_reference(factory, input_shape, exact_float32):
    torch.manual_seed(0)
    model = factory().cuda()
    inputs = torch.randn(*input_shape, device="cuda")
    outputs = {}
    for backend in ("cuda", "reference"):
        torch.manual_seed(1)
        with ops.use_backend(backend):
            outputs[backend] = model(inputs)
    torch.testing.assert_close(outputs["cuda"], outputs["reference"], rtol=1e-3, atol=1e-3)


@needs_cuda
def test_cuda_torch_compile_fullgraph(exact_float32):
    torch._dynamo.reset()
    x = torch.randn(2, 8, 6, 6, device="cuda", requires_grad=True)
    weight = torch.randn(8, 8, 3, 3, device="cuda", requires_grad=True)
    styles = torch.randn(2, 8, device="cuda")

    def layer(x, weight):
        h = extension.styled_conv2d(x, weight, styles, None, None, None, True, 1, None, 0.2, math.sqrt(2), True, 1e-8)
        return extension.fused_leaky_relu(extension.fold(h), None, 0.2, math.sqrt(2))

    out = torch.compile(layer, fullgraph=True)(x, weight)
    torch.testing.assert_close(out, layer(x, weight), rtol=1e-4, atol=1e-4)
    out.sum().backward()
