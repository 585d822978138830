"""The compiled extension ("cpu" backend) against the reference: values, gradients (gradcheck,
gradgradcheck where the discriminator needs it), torch.library.opcheck, torch.compile, and the models.
The CUDA versions of these tests are in test_extension_cuda.py."""
import hashlib
import math
import os
import re
import subprocess
import sys

import pytest
import torch

import models
import pixelfolder_ops as ops
from pixelfolder_ops import _layout as ops_layout
from pixelfolder_ops import extension, reference
from pixelfolder_ops.extension.to_rgb import skip_pad
from pixelfolder_ops.triton._indexing import fits_int32_offsets

REASON = extension.unavailable_reason("cpu")
needs_extension = pytest.mark.skipif(REASON is not None, reason=f"the cpu backend is unavailable: {REASON}")
DTYPES = [torch.float32, torch.float64]
LAYOUTS = ["contiguous", "channels_last", "strided"]
TOLERANCE = {torch.float32: dict(rtol=1e-4, atol=1e-5), torch.float64: dict(rtol=1e-10, atol=1e-12)}


def test_extension_builds_and_reports():
    assert REASON is None, REASON
    info = extension.build_info()
    assert "cpu" in info["backends"] and info["torch_version"] == torch.__version__.split("+")[0]
    assert "cpu" in ops.available_backends()
    # PIXELFOLDER_CUDA_EMULATION=1: the "cpu" backend runs the CUDA kernels' bodies (csrc/emulation).
    assert info["cuda_emulation"] == (os.environ.get("PIXELFOLDER_CUDA_EMULATION") == "1")
    # The CPU kernels use every core where torch itself runs on OpenMP.
    assert info["cpu_parallel"] == (sys.platform.startswith("linux") and "OpenMP" in torch.__config__.parallel_info())


def randn(*shape, dtype=torch.float64, seed=0, layout="contiguous", requires_grad=False):
    """Random values (never zeros) in the asked layout: "strided" is a non-contiguous view."""
    generator = torch.Generator().manual_seed(seed)
    if layout == "strided" and len(shape) == 4:
        # Every other column of a wider tensor, then the batch and channel axes swapped back.
        wide = torch.randn(shape[1], shape[0], shape[2], 2 * shape[3], dtype=dtype, generator=generator)
        x = wide[..., ::2].transpose(0, 1)
    else:
        x = torch.randn(*shape, dtype=dtype, generator=generator)
        if layout == "channels_last" and len(shape) == 4:
            x = x.contiguous(memory_format=torch.channels_last)
    return x.requires_grad_(requires_grad)


def assert_close(actual, expected, dtype):
    torch.testing.assert_close(actual, expected, **TOLERANCE[dtype])


def resample_kernel(dtype, gain=1):
    return ops.make_resample_kernel([1, 3, 3, 1], dtype) * gain


# Every op's arguments for the backend protocol (reference/*.py), on small odd shapes.
def op_cases(dtype=torch.float64, layout="contiguous", requires_grad=False):
    def t(*shape, seed, grad=requires_grad):
        return randn(*shape, dtype=dtype, seed=seed, layout=layout, requires_grad=grad)

    blur = resample_kernel(dtype)
    return {
        "fold": ("fold", (t(2, 3, 6, 10, seed=1),)),
        "unfold": ("unfold", (t(2, 8, 3, 5, seed=2),)),
        "fused_leaky_relu": ("fused_leaky_relu", (t(2, 5, 3, 7, seed=3), t(5, seed=4), 0.2, math.sqrt(2))),
        "fused_leaky_relu_2d_no_bias": ("fused_leaky_relu", (t(3, 7, seed=5), None, 0.1, 1.5)),
        "upfirdn2d_up": ("upfirdn2d", (t(2, 3, 5, 7, seed=6), blur * 4, (2, 2), (1, 1), (2, 1, 2, 1))),
        "upfirdn2d_down": ("upfirdn2d", (t(2, 3, 7, 6, seed=7), blur, (1, 1), (2, 2), (1, 1, 1, 1))),
        "upfirdn2d_mixed": ("upfirdn2d", (t(1, 2, 6, 5, seed=8), randn(3, 5, dtype=dtype, seed=9), (3, 1), (1, 2),
                                          (-1, 2, 3, -2))),
        "fourier_embedding": ("fourier_embedding", (t(6, 2, seed=10), t(6, seed=11), 5, 7)),
        "modulated_conv2d": ("modulated_conv2d", (t(2, 3, 5, 7, seed=12), t(4, 3, 3, 3, seed=13), t(2, 3, seed=14),
                                                  True, 1, 1, None, 1e-8)),
        "modulated_conv2d_up": ("modulated_conv2d", (t(2, 3, 5, 4, seed=15), t(4, 3, 3, 3, seed=16),
                                                     t(2, 3, seed=17), True, 2, 1, blur, 1e-8)),
        "modulated_conv2d_down": ("modulated_conv2d", (t(2, 3, 6, 4, seed=18), t(4, 3, 3, 3, seed=19),
                                                       t(2, 3, seed=20), False, 1, 2, blur, 1e-8)),
        "styled_conv2d": ("styled_conv2d", (t(2, 3, 5, 7, seed=21), t(8, 3, 3, 3, seed=22), t(2, 3, seed=23),
                                            t(2, 1, 5, 7, seed=24), t(1, seed=25), t(8, seed=26), True, 1, None, 0.2,
                                            math.sqrt(2), True, 1e-8)),
        "styled_conv2d_up_shared_noise": ("styled_conv2d", (
            t(2, 3, 3, 4, seed=27), t(4, 3, 3, 3, seed=28), t(2, 3, seed=29), t(1, 1, 6, 8, seed=30), t(1, seed=31),
            None, True, 2, blur, 0.2, math.sqrt(2), False, 1e-8)),
        "to_rgb": ("to_rgb", (t(2, 5, 6, 4, seed=32), t(3, 5, 1, 1, seed=33), t(2, 5, seed=34), t(3, seed=35),
                              t(2, 3, 3, 2, seed=36), resample_kernel(dtype, 4), )),
        "to_rgb_no_skip": ("to_rgb", (t(2, 5, 3, 5, seed=37), t(3, 5, 1, 1, seed=38), t(2, 5, seed=39),
                                      t(3, seed=40), None, None)),
    }


CASES = list(op_cases())


@needs_extension
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES)
def test_op_matches_reference(case, dtype, layout):
    name, args = op_cases(dtype, layout)[case]
    actual = getattr(extension, name)(*args)
    expected = getattr(reference, name)(*args)
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    assert_close(actual, expected, dtype)


@needs_extension
@pytest.mark.parametrize("up", [1, 2, 3])
@pytest.mark.parametrize("down", [1, 2, 3])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
def test_upfirdn2d_sweep_against_reference(up, down, layout):
    # Every tap placement the kernel's per-axis runs must cover: even and odd kernel sizes, pads
    # that crop (negative) or reach past the input, different factors along x and y.
    x = randn(2, 3, 7, 6, layout=layout)
    for kernel_shape, pad in [((4, 4), (2, 1, 2, 1)), ((3, 5), (-1, 3, 2, -2)), ((1, 2), (0, 0, 4, 1))]:
        kernel = randn(*kernel_shape, dtype=torch.float64, seed=3)
        for axes_up, axes_down in [((up, up), (down, down)), ((up, 1), (1, down))]:
            expected = reference.upfirdn2d(x, kernel, axes_up, axes_down, pad)
            torch.testing.assert_close(extension.upfirdn2d(x, kernel, axes_up, axes_down, pad), expected)


@needs_extension
def test_public_ops_on_the_cpu_backend():
    x = randn(2, 8, 6, 4, dtype=torch.float32)
    kernel = resample_kernel(torch.float32)
    with ops.use_backend("cpu"):
        assert torch.equal(ops.unfold(ops.fold(x)), x)
        assert_close(ops.upfirdn2d(x, kernel, up=2, pad=(2, 1)),
                     ops.upfirdn2d(x, kernel, up=2, pad=(2, 1), backend="reference"), torch.float32)


def differentiable_call(case):
    """The op of ``case`` as a function of its inputs that require grad, and those inputs."""
    name, args = op_cases(requires_grad=True)[case]
    function = getattr(extension, name)
    tensors = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]

    def call(*inputs):
        it = iter(inputs)
        return function(*[next(it) if isinstance(a, torch.Tensor) and a.requires_grad else a for a in args])

    return call, tensors


@needs_extension
@pytest.mark.parametrize("case", CASES)
def test_gradcheck(case):
    assert torch.autograd.gradcheck(*differentiable_call(case), fast_mode=True)


@needs_extension
@pytest.mark.parametrize("case", ["fused_leaky_relu", "fused_leaky_relu_2d_no_bias", "upfirdn2d_up", "upfirdn2d_down",
                                  "upfirdn2d_mixed", "fold", "unfold", "to_rgb"])
@pytest.mark.slow
def test_gradgradcheck(case):
    assert torch.autograd.gradgradcheck(*differentiable_call(case))


@needs_extension
def test_fourier_embedding_gradient_over_more_pixels_than_a_block_has_threads():
    # 24 x 20 pixels per channel, more than the 256 threads of the CUDA backward's block: every
    # thread's partial sum is non-zero, so every step of the block's shared-memory reduction counts
    # (op_cases' 5 x 7 leaves the upper half of it zeros).
    weight, bias = randn(4, 2, seed=1, requires_grad=True), randn(4, seed=2, requires_grad=True)
    grad = randn(1, 4, 24, 20, seed=3)
    actual = torch.autograd.grad(extension.fourier_embedding(weight, bias, 24, 20), (weight, bias), grad)
    expected = torch.autograd.grad(reference.fourier_embedding(weight, bias, 24, 20), (weight, bias), grad)
    for a, e in zip(actual, expected):
        assert_close(a, e, torch.float64)


@needs_extension
@pytest.mark.parametrize("case", ["fourier_embedding", "modulated_conv2d", "styled_conv2d"])
def test_second_order_is_a_clear_error(case):
    name, args = op_cases(requires_grad=True)[case]
    out = getattr(extension, name)(*args)
    first = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad][0]
    (grad,) = torch.autograd.grad(out.square().sum(), first, create_graph=True)
    with pytest.raises(RuntimeError, match="first-order gradients only"):
        grad.sum().backward()


@needs_extension
@pytest.mark.parametrize("up, down, pad", [((2, 2), (1, 1), (2, 1, 2, 1)), ((1, 1), (2, 2), (1, 1, 1, 1)),
                                           ((3, 1), (1, 2), (-1, 2, 3, -2))])
def test_upfirdn2d_kernel_gradient_to_second_order(up, down, pad):
    x = randn(1, 2, 6, 5, requires_grad=True)
    kernel = randn(4, 3, seed=1, requires_grad=True)

    def call(x, kernel):
        return extension.upfirdn2d(x, kernel, up, down, pad)

    assert torch.autograd.gradcheck(call, (x, kernel))
    assert torch.autograd.gradgradcheck(call, (x, kernel))


def schema_args(name, args):
    """The arguments of op `name` as its C++ schema takes them: lists for int[] arguments, and the
    extra arguments the Python layer fills in."""
    args = tuple(args)
    if name == "to_rgb":
        args = args + ([0, 0, 0, 0] if args[5] is None else skip_pad(args[5]),)
    elif name == "upfirdn2d":
        args = args[:2] + tuple(list(a) for a in args[2:])
    elif name == "fused_leaky_relu":
        args = args + (None,)
    return args


@needs_extension
@pytest.mark.parametrize("case", CASES)
def test_opcheck(case):
    name, args = op_cases(torch.float32, requires_grad=True)[case]
    torch.library.opcheck(getattr(torch.ops.pixelfolder_ops, name).default, schema_args(name, args))


@needs_extension
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_opcheck_of_the_demodulation_factor(dtype):
    # The factor is float32 for 16-bit weights: the fake kernel must say so too.
    weight, styles = randn(4, 3, 3, 3, dtype=dtype, seed=1), randn(2, 3, dtype=dtype, seed=2)
    torch.library.opcheck(torch.ops.pixelfolder_ops.modulated_conv2d_demod.default, (weight, styles, 1e-8))


@needs_extension
def test_opcheck_of_backward_ops():
    grad = randn(2, 5, 3, 7, dtype=torch.float32, seed=1)
    output = randn(2, 5, 3, 7, dtype=torch.float32, seed=2).requires_grad_()
    torch.library.opcheck(torch.ops.pixelfolder_ops.fused_leaky_relu_backward.default,
                          (grad.requires_grad_(), output, 0.2, math.sqrt(2), 0.5))
    kernel = resample_kernel(torch.float32)
    torch.library.opcheck(torch.ops.pixelfolder_ops.upfirdn2d_backward.default,
                          (randn(2, 3, 10, 8, dtype=torch.float32, requires_grad=True), kernel, [2, 2], [1, 1],
                           [2, 1, 2, 1], 5, 4))
    for noise in (randn(2, 1, 3, 5, dtype=torch.float32, seed=3), None):
        torch.library.opcheck(torch.ops.pixelfolder_ops.styled_conv2d_epilogue_backward.default, (
            randn(2, 2, 6, 10, dtype=torch.float32, seed=4), randn(2, 8, 3, 5, dtype=torch.float32, seed=5),
            randn(2, 8, dtype=torch.float32, seed=6), noise, None if noise is None else randn(1, dtype=torch.float32),
            randn(8, dtype=torch.float32, seed=7), 0.2, math.sqrt(2), True))
    torch.library.opcheck(torch.ops.pixelfolder_ops.spatial_dot.default,
                          (randn(2, 5, 3, 7, dtype=torch.bfloat16, layout="channels_last"),
                           randn(2, 5, 3, 7, dtype=torch.bfloat16, seed=1)))


@needs_extension
def test_clamp_of_fused_leaky_relu():
    x = randn(2, 4, 3, 5) * 3
    bias = randn(4, seed=1)
    out = torch.ops.pixelfolder_ops.fused_leaky_relu(x, bias, 0.2, math.sqrt(2), 1.0)
    assert_close(out, reference.fused_leaky_relu(x, bias, 0.2, math.sqrt(2)).clamp(-1, 1), torch.float64)


@needs_extension
def test_cpp_checks_name_the_op_and_argument():
    with pytest.raises(RuntimeError, match="upfirdn2d: argument 'kernel' must be 2-D"):
        torch.ops.pixelfolder_ops.upfirdn2d(randn(1, 1, 4, 4), randn(4), [1, 1], [1, 1], [0, 0, 0, 0])
    with pytest.raises(RuntimeError, match="fold: argument 'input' must be a floating-point tensor"):
        torch.ops.pixelfolder_ops.fold(torch.ones(1, 1, 4, 4, dtype=torch.int32))


# Unit roundoff (half the machine epsilon) of the 16-bit types.
UNIT_ROUNDOFF = {torch.bfloat16: 2.0 ** -9, torch.float16: 2.0 ** -12}


@needs_extension
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("case", CASES)
def test_16_bit_against_a_float64_oracle(case, dtype, layout):
    # The oracle runs in float64 on the same 16-bit inputs, and the kernels compute in float32, so what
    # remains is the rounding of values stored in 16 bits, each within u of itself: the result
    # (rtol 2u: it and one intermediate), and intermediates (the modulated input, the conv output before
    # the blur and the epilogue) whose errors, of either sign, add up over the longest sum behind an
    # output, K = 27 conv terms (3 channels x 3 x 3), to about sqrt(K) u times the outputs' scale.
    name, args = op_cases(torch.float32, layout)[case]
    args16 = [a.to(dtype) if isinstance(a, torch.Tensor) else a for a in args]
    expected = getattr(reference, name)(*[a.double() if isinstance(a, torch.Tensor) else a for a in args16])
    actual = getattr(extension, name)(*args16)
    assert actual.dtype == dtype and actual.shape == expected.shape
    u = UNIT_ROUNDOFF[dtype]
    torch.testing.assert_close(actual.double(), expected, rtol=2 * u, atol=math.sqrt(27) * u * expected.abs().max().item())


@needs_extension
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_demodulation_of_16_bit_weights_stays_float32(dtype):
    weight = randn(6, 5, 3, 3, dtype=torch.float32, seed=1).to(dtype)
    styles = randn(3, 5, dtype=torch.float32, seed=2).to(dtype)
    demod = torch.ops.pixelfolder_ops.modulated_conv2d_demod(weight, styles, 1e-8)
    modulated = weight.double()[None] * styles.double()[:, None, :, None, None]
    oracle = modulated.square().sum((2, 3, 4)).add(1e-8).rsqrt()
    assert demod.dtype == torch.float32
    # 45 float32 products summed: within 1e-5 relative, where a 16-bit result is off by up to u.
    torch.testing.assert_close(demod.double(), oracle, rtol=1e-5, atol=0)


@needs_extension
@pytest.mark.parametrize("unfold_output", [False, True])
def test_epilogue_backward_refuses_a_gradient_of_another_shape(unfold_output):
    # The kernels read the gradient where the forward stored: a smaller one would be read out of bounds.
    conv_output = randn(2, 8, 16, 16, dtype=torch.float32)
    output_shape = "[2, 2, 32, 32]" if unfold_output else "[2, 8, 16, 16]"
    with pytest.raises(RuntimeError, match=re.escape(f"argument 'grad_output' must have the output's shape "
                                                     f"{output_shape}, got [1, 1, 2, 2]")):
        torch.ops.pixelfolder_ops.styled_conv2d_epilogue_backward(randn(1, 1, 2, 2, dtype=torch.float32), conv_output,
                                                                  None, None, None, None, 0.2, math.sqrt(2),
                                                                  unfold_output)


# The per-channel reductions of the backward (csrc/cuda/channel_tiles.cuh) take 32 channels and 1024
# pixels per block: 36 channels and 33 x 35 pixels need two of each, both partly filled.
SEVERAL_BLOCKS = dict(size=(2, 3, 33, 35), out_channels=36)


def styled_conv_case(dtype, layout, unfold_output, noise, bias, size=(2, 3, 5, 7), out_channels=8, seed=50):
    """styled_conv2d's arguments, every tensor requiring grad; ``noise``: None, "per_image" or "shared"
    (one image for the batch)."""
    batch, channels, height, width = size

    def t(*shape, offset):
        return randn(*shape, dtype=dtype, seed=seed + offset, layout=layout, requires_grad=True)

    noise_images = {None: 0, "per_image": batch, "shared": 1}[noise]
    return (t(*size, offset=0), t(out_channels, channels, 3, 3, offset=1), t(batch, channels, offset=2),
            t(noise_images, 1, height, width, offset=3) if noise else None, t(1, offset=4) if noise else None,
            t(out_channels, offset=5) if bias else None, True, 1, None, 0.2, math.sqrt(2), unfold_output, 1e-8)


def styled_conv_gradients(function, args):
    """The gradients of every tensor argument for one fixed random output gradient."""
    inputs = [a for a in args if isinstance(a, torch.Tensor)]
    out = function(*args)
    grad = randn(*out.shape, seed=99).to(out.device, out.dtype)  # the same values, rounded, in every dtype
    return torch.autograd.grad(out, inputs, grad)


def assert_gradients_close(actual, expected, dtype):
    for a, e in zip(actual, expected):
        assert a.dtype == e.dtype and a.shape == e.shape
        scale = e.abs().max().clamp_min(1)  # sums over many elements: compared relative to the largest
        assert_close(a / scale, e / scale, dtype)


@needs_extension
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("noise", [None, "per_image", "shared"], ids=["no_noise", "noise", "shared_noise"])
@pytest.mark.parametrize("unfold_output", [False, True], ids=["conv_layout", "unfolded"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_styled_conv2d_gradients_match_the_reference(dtype, layout, unfold_output, noise, bias):
    args = styled_conv_case(dtype, layout, unfold_output, noise, bias)
    assert_gradients_close(styled_conv_gradients(extension.styled_conv2d, args),
                           styled_conv_gradients(reference.styled_conv2d, args), dtype)


@needs_extension
@pytest.mark.parametrize("noise", ["per_image", "shared"], ids=["noise", "shared_noise"])
@pytest.mark.parametrize("unfold_output", [False, True], ids=["conv_layout", "unfolded"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_styled_conv2d_gradients_over_several_reduction_blocks(layout, unfold_output, noise):
    args = styled_conv_case(torch.float64, layout, unfold_output, noise, True, **SEVERAL_BLOCKS)
    assert_gradients_close(styled_conv_gradients(extension.styled_conv2d, args),
                           styled_conv_gradients(reference.styled_conv2d, args), torch.float64)


@needs_extension
@pytest.mark.parametrize("layout, unfold_output, noise, bias", [
    ("contiguous", False, None, False), ("channels_last", True, "per_image", True),
    ("strided", False, "shared", True), ("channels_last", False, None, True), ("contiguous", True, "shared", False)])
def test_styled_conv2d_gradcheck(layout, unfold_output, noise, bias):
    args = styled_conv_case(torch.float64, layout, unfold_output, noise, bias, size=(2, 3, 3, 5))
    inputs = [a for a in args if isinstance(a, torch.Tensor)]

    def call(*tensors):
        it = iter(tensors)
        return extension.styled_conv2d(*[next(it) if isinstance(a, torch.Tensor) else a for a in args])

    assert torch.autograd.gradcheck(call, inputs, fast_mode=True)


def styled_conv_backward_digest():
    """A digest of the StyledConv gradients over several reduction blocks, float32, channels-last with
    noise and NCHW unfolded: the emulation draws new block and thread orders for every launch."""
    digest = hashlib.sha256()
    for layout, unfold_output in (("channels_last", False), ("contiguous", True)):
        args = styled_conv_case(torch.float32, layout, unfold_output, "per_image", True, **SEVERAL_BLOCKS)
        for grad in styled_conv_gradients(extension.styled_conv2d, args):
            digest.update(grad.contiguous().numpy().tobytes())
    return digest.hexdigest()


@needs_extension
def test_styled_conv2d_backward_gives_the_same_bits_twice():
    assert styled_conv_backward_digest() == styled_conv_backward_digest()


@needs_extension
@pytest.mark.slow
def test_styled_conv2d_backward_gives_the_same_bits_under_other_emulation_seeds():
    # In the emulation build the seed draws the order of blocks and of threads between barriers: a
    # reduction whose result depended on either would give other bits under another seed.
    tests = os.path.dirname(os.path.abspath(__file__))
    code = f"import sys; sys.path[:0] = [{tests!r}]; import test_extension; print(test_extension.styled_conv_backward_digest())"
    digests = set()
    for seed in (1, 2):
        env = dict(os.environ, PIXELFOLDER_CUDA_EMULATION_SEED=str(seed))
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                                cwd=os.path.dirname(tests))
        assert result.returncode == 0, result.stderr[-2000:]
        digests.add(result.stdout.split()[-1])
    assert len(digests) == 1


@needs_extension
@pytest.mark.parametrize("layouts", [("contiguous", "channels_last"), ("channels_last", "strided"),
                                     ("strided", "contiguous")])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
def test_spatial_dot_reads_each_layout_and_accumulates_in_the_compute_type(dtype, layouts):
    shape = (2, 37, 33, 35)  # several reduction blocks, as SEVERAL_BLOCKS
    a, b = (randn(*shape, dtype=dtype, seed=seed, layout=layout) for seed, layout in zip((1, 2), layouts))
    actual = torch.ops.pixelfolder_ops.spatial_dot(a, b)
    assert actual.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    # A sum of n products, each rounded at most once (16-bit products are exact in float32), accumulated
    # in a type of unit roundoff u, is within (n + 1) u of the sum of their magnitudes.
    products = a.double() * b.double()
    u = torch.finfo(actual.dtype).eps / 2
    bound = (shape[2] * shape[3] + 1) * u * products.abs().sum((2, 3))
    assert ((actual.double() - products.sum((2, 3))).abs() <= bound).all()


@needs_extension
def test_kernels_index_in_32_bits_exactly_when_every_offset_fits():
    fits = extension.load().module.fits_32bit_index
    limit = 2 ** 31 - 1 - 2 ** 24  # the largest count: indices go up to one grid (2^24 threads) past it

    def sizes_and_strides(t):
        return list(t.shape), list(t.stride())

    one = torch.empty(1)  # expanded, never allocated
    assert fits([sizes_and_strides(torch.empty(2, 3, 5, 7)), sizes_and_strides(one.expand(limit))])
    assert not fits([sizes_and_strides(torch.empty(2, 3, 5, 7)), sizes_and_strides(one.expand(limit + 1))])
    assert not fits([sizes_and_strides(one.expand(2, limit + 1, 1))])
    # Few elements, far apart: the last offset decides.
    assert fits([([2], [limit - 1])]) and not fits([([2], [limit])])
    assert fits([([0, 3], [limit, limit])])
    # The Triton kernels state the same rule, with a grid's reach as the headroom.
    for t in (torch.empty(2, 3, 5, 7), one.expand(limit), one.expand(limit + 1), one.expand(2, limit + 1, 1)):
        assert fits_int32_offsets(t, headroom=2 ** 24) == fits([sizes_and_strides(t)])


@needs_extension
@pytest.mark.slow
def test_torch_compile_fullgraph():
    torch._dynamo.reset()
    x = randn(2, 8, 6, 6, dtype=torch.float32, requires_grad=True)
    weight = randn(8, 8, 3, 3, dtype=torch.float32, seed=1, requires_grad=True)
    styles = randn(2, 8, dtype=torch.float32, seed=2)
    bias = randn(2, dtype=torch.float32, seed=3, requires_grad=True)
    kernel = resample_kernel(torch.float32, 4)

    def layer(x, weight, bias):
        h = extension.styled_conv2d(x, weight, styles, None, None, None, True, 1, None, 0.2, math.sqrt(2), True, 1e-8)
        h = extension.fold(extension.upfirdn2d(h, kernel, (1, 1), (1, 1), (2, 1, 2, 1)))
        return extension.fused_leaky_relu(h, bias.repeat(4), 0.2, math.sqrt(2))

    compiled = torch.compile(layer, fullgraph=True)
    out = compiled(x, weight, bias)
    expected = layer(x, weight, bias)
    assert_close(out, expected, torch.float32)
    grads = torch.autograd.grad(out.square().sum(), (x, weight, bias))
    expected_grads = torch.autograd.grad(expected.square().sum(), (x, weight, bias))
    for grad, expected_grad in zip(grads, expected_grads):
        torch.testing.assert_close(grad, expected_grad, rtol=1e-4, atol=1e-4)


@needs_extension
@pytest.mark.parametrize("measured", ["reference", "cpu"])
def test_torch_compile_keeps_the_backend_auto_measured_eagerly(measured, monkeypatch):
    # Under compilation nothing is measured: the graph holds the backend an eager call chose, and a
    # signature never seen eagerly gets the preference order without a graph break.
    torch._dynamo.reset()
    monkeypatch.setenv("PIXELFOLDER_OPS_AUTO", "measure")
    monkeypatch.setattr(ops.backend, "_fastest", lambda op, candidates, device, args: measured)
    x = randn(2, 8, 6, 6, dtype=torch.float32)
    ops.fold(x)
    assert list(ops.backend.auto_choices().values()) == [measured]
    monkeypatch.setattr(ops.backend, "_fastest", None)  # measuring again would fail
    graphs = []

    def record(graph_module, example_inputs):
        graphs.append(graph_module.code)
        return graph_module.forward

    compiled = torch.compile(lambda t: ops.fold(t), backend=record, fullgraph=True)
    assert torch.equal(compiled(x), reference.fold(x))
    assert ("pixelfolder_ops.fold" in graphs[0]) == (measured == "cpu")
    assert torch.equal(compiled(randn(2, 8, 4, 6, dtype=torch.float32)), reference.fold(randn(2, 8, 4, 6, dtype=torch.float32)))
    assert "pixelfolder_ops.fold" in graphs[-1]  # unmeasured: the preference, cpu


def run_model(model, inputs, backend):
    torch.manual_seed(1)  # the generator draws its noise
    with ops.use_backend(backend):
        out = model(inputs)
        grads = torch.autograd.grad(out.square().mean(), list(model.parameters()), allow_unused=True)
    return out, grads


@needs_extension
@pytest.mark.parametrize("factory, input_shape", [
    (lambda: models.PixelFolder(64, width=0.125), (2, 512)),
    (lambda: models.Discriminator(32, width=0.125), (2, 3, 32, 32)),
], ids=["PixelFolder", "Discriminator"])
@pytest.mark.slow
def test_models_match_the_reference(factory, input_shape):
    torch.manual_seed(0)
    model = factory()
    inputs = torch.randn(*input_shape)
    out, grads = run_model(model, inputs, "cpu")
    expected, expected_grads = run_model(model, inputs, "reference")
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)
    for grad, expected_grad in zip(grads, expected_grads):
        assert (grad is None) == (expected_grad is None)
        if grad is not None:
            torch.testing.assert_close(grad, expected_grad, rtol=1e-3, atol=1e-4)


@needs_extension
@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize("name", ["PixelFolder", "StyleGAN2"])
def test_generator_forward_compiles_to_one_graph(name, backend):
    # fullgraph: a host synchronisation (.item(), data-dependent Python control flow) or an op
    # dynamo cannot trace anywhere in the forward would be an error here, on every device.
    torch._dynamo.reset()
    torch.manual_seed(0)
    factory = {"PixelFolder": models.PixelFolder, "StyleGAN2": models.StyleGAN2Generator}[name]
    generator = factory(32, width=0.0625).eval()
    z, noise = torch.randn(2, 512), generator.make_noise(2)
    with ops.use_backend(backend), torch.no_grad():
        compiled = torch.compile(generator, fullgraph=True, backend="eager")
        torch.testing.assert_close(compiled(z, noise=noise), generator(z, noise=noise))


@needs_extension
@pytest.mark.parametrize("factory", [lambda: models.PixelFolder(64, width=0.125),
                                     lambda: models.StyleGAN2Generator(32, width=0.125), lambda: models.CIPS(16, width=0.125),
                                     lambda: models.INRGAN(32, width=0.125)],
                         ids=["PixelFolder", "StyleGAN2", "CIPS", "INRGAN"])
def test_generators_run_channels_last_end_to_end(factory):
    # After to_channels_last every activation of more than one channel is channels-last, from the
    # layers that make them from nothing to the images, and the images are the same.
    torch.manual_seed(0)
    generator = factory().eval()
    z, noise = torch.randn(2, 512), generator.make_noise(2)
    with torch.no_grad(), ops.use_backend("cpu"):
        expected = generator(z, noise=noise)
        models.to_channels_last(generator)
        layouts = []

        def record(module, inputs, output):
            output = output[0] if isinstance(output, tuple) else output
            if isinstance(output, torch.Tensor) and output.dim() == 4 and output.shape[1] > 1:
                layouts.append((type(module).__name__, ops_layout.memory_format(output)))

        for module in generator.modules():
            module.register_forward_hook(record)
        images = generator(z, noise=noise)
    assert layouts and all(layout == torch.channels_last for _, layout in layouts), layouts
    assert images.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(images, expected, rtol=1e-4, atol=1e-5)


@needs_extension
def test_discriminator_r1_penalty_matches_the_reference():
    torch.manual_seed(0)
    model = models.Discriminator(32, width=0.125)
    real = torch.randn(2, 3, 32, 32)

    def r1(backend):
        image = real.clone().requires_grad_()
        with ops.use_backend(backend):
            (grad,) = torch.autograd.grad(model(image).sum(), image, create_graph=True)
            return torch.autograd.grad(grad.square().sum(), list(model.parameters()), allow_unused=True)

    for grad, expected in zip(r1("cpu"), r1("reference")):
        if grad is not None:
            torch.testing.assert_close(grad, expected, rtol=1e-3, atol=1e-4)
