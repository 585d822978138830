"""The Triton backend against the reference backend: every op's output and every gradient.

On a machine without CUDA the kernels run on the CPU under Triton's interpreter (TRITON_INTERPRET=1,
set by conftest.py before any kernel is imported), with tiny shapes. The interpreter computes bfloat16 tl.dot wrongly,
so there the half-precision cases run in float16; bfloat16 is tested on CUDA.

The oracle is the reference backend in float64 on the same (rounded) inputs. Half precision is checked
by the relative error of the whole tensor, with the output gradient zero where the output is within a
few roundings of zero: a pre-activation there may take the other side of the leaky ReLU in either
computation, which moves every gradient that depends on it by (1 - slope) of that entry's share (two
such entries of 14,256 gave a 1.6% error in float16).
"""
import pytest
import torch

ON_CUDA = torch.cuda.is_available()
pytest.importorskip("triton", reason="Triton is not installed (pip install triton)")

import models  # noqa: E402
import pixelfolder_ops as ops  # noqa: E402
import pixelfolder_ops.triton as triton_backend  # noqa: E402
from benchmarks import kernel_resources  # noqa: E402
from test_kernel_resources import in_fresh_python  # noqa: E402

DEVICE = "cuda" if ON_CUDA else "cpu"
HALF = torch.bfloat16 if ON_CUDA else torch.float16
# float32 (TF32 off) and float64 (accumulated in float64): per element, relative to the largest reference
# value. Half precision: the kernels round the styled weights, the gradients they pass on and the result
# to 16 bits (unit roundoff u = 2^-11 for float16, 2^-8 for bfloat16) and accumulate in float32, whose
# error over the longest reduction here (512 x 9 = 4608 terms: 4608 x 2^-24 = 2.7e-4 at worst) stays
# below one u; so the normwise error is a few roundings of u whatever the reduction length. Measured in
# float16: at most 0.8 u for outputs and gradients, 2.0 u for a 3-entry styles gradient (a sum over
# 10,080 products whose terms cancel); 3 u: 1.5e-3 for float16 (a 1% error fails), 1.2e-2 for bfloat16.
TOLERANCE = {torch.float64: 1e-12, torch.float32: 1e-4, torch.float16: 3 * 2 ** -11, torch.bfloat16: 3 * 2 ** -8}
needs_cuda = pytest.mark.skipif(not ON_CUDA, reason="needs a CUDA GPU")


@pytest.fixture(autouse=True)
def no_tf32():
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def randn(*shape, dtype=torch.float32, seed=0, scale=1.0, offset=0.0, grad=True):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale + offset
    return x.to(device=DEVICE, dtype=dtype).requires_grad_(grad)


def assert_close(actual, expected, dtype, what):
    actual, expected, tolerance = actual.detach().double(), expected.detach().double(), TOLERANCE[dtype]
    if dtype in (torch.float32, torch.float64):
        scale = expected.abs().max().item()
        torch.testing.assert_close(actual, expected, rtol=tolerance, atol=tolerance * scale,
                                   msg=lambda message: f"{what}: {message}")
    else:
        error = ((actual - expected).norm() / expected.norm()).item()
        assert error <= tolerance, f"{what}: relative error {error:.2e} > {tolerance:.0e}"


def assert_matches_reference(op, inputs, dtype):
    """op(*inputs, backend=...) on both backends (the reference in float64): the outputs, then the
    gradients of every input that requires one, for the same random output gradient (rounded to
    the inputs' dtype). In half precision that gradient is zero where the output is within a few
    roundings of zero: there either side of a leaky ReLU is right."""
    positions = [i for i, x in enumerate(inputs) if isinstance(x, torch.Tensor) and x.requires_grad]
    oracle_inputs = [x.detach().double().requires_grad_(x.requires_grad) if isinstance(x, torch.Tensor) else x
                     for x in inputs]
    expected, actual = op(*oracle_inputs, backend="reference"), op(*inputs, backend="triton")
    assert actual.shape == expected.shape and actual.dtype == inputs[0].dtype
    assert_close(actual, expected, dtype, "output")
    grad_out = randn(*expected.shape, seed=99, grad=False).to(dtype)
    if dtype in (torch.float16, torch.bfloat16):
        grad_out[expected.abs() < 8 * torch.finfo(dtype).eps / 2 * expected.abs().max()] = 0
    expected_grads, actual_grads = (
        torch.autograd.grad(out, [backend_inputs[i] for i in positions], grad_out.to(out.dtype))
        for out, backend_inputs in ((expected, oracle_inputs), (actual, inputs)))
    for position, grad, expected_grad in zip(positions, actual_grads, expected_grads):
        assert_close(grad, expected_grad, dtype, f"gradient of input {position}")


def styled_conv_inputs(batch, in_channels, out_channels, height, width, kernel_size, noise_batch, bias, dtype):
    noise = None if noise_batch is None else randn(noise_batch, 1, height, width, dtype=dtype, seed=3)
    strength = None if noise_batch is None else randn(1, dtype=dtype, seed=4, scale=0.5)
    return (randn(batch, in_channels, height, width, dtype=dtype, seed=0),
            randn(out_channels, in_channels, kernel_size, kernel_size, dtype=dtype, seed=1,
                  scale=(in_channels * kernel_size ** 2) ** -0.5),
            randn(batch, in_channels, dtype=dtype, seed=2, scale=0.5, offset=1.0),
            noise, strength, randn(out_channels, dtype=dtype, seed=5) if bias else None)


# ---------------------------------------------------------------------------------------- StyledConv

# batch, C_in, C_out, H, W, kernel, noise batch (None: no noise), bias, unfold_output. Under the interpreter
# the tiles are 64 x 64 x 64 and the weight gradient's pixels go in three chunks of whole pixel tiles: the
# second case spans two K chunks, two channel tiles and two pixel tiles per image, and a chunk boundary
# inside an image; the last unfolds 66 channels per sub-pixel (two channel tiles per quadrant) and has a
# chunk that spans two images.
STYLED_CONV_CASES = [
    (1, 3, 32, 5, 7, 3, 1, True, True),
    (2, 80, 72, 9, 11, 3, 2, True, False),
    (2, 64, 128, 3, 2, 1, None, False, True),
    (1, 512, 32, 2, 2, 3, 1, True, False),
    (4, 16, 264, 3, 5, 3, None, True, True),
]


def case_id(case):
    return "x".join(map(str, case[:6]))


# float64 on the cases with several tiles and chunks only: the interpreter's time goes by the tile.
@pytest.mark.parametrize("case,dtype", [(case, dtype) for case in STYLED_CONV_CASES for dtype in (torch.float32, HALF)]
                         + [(STYLED_CONV_CASES[i], torch.float64) for i in (1, 4)],
                         ids=lambda value: case_id(value) if isinstance(value, tuple) else str(value)[6:])
@pytest.mark.slow
def test_styled_conv2d_matches_reference(case, dtype):
    *shape, unfold_output = case
    inputs = styled_conv_inputs(*shape, dtype=dtype)

    def op(*inputs, backend):
        return ops.styled_conv2d(*inputs, unfold_output=unfold_output, backend=backend)
    assert_matches_reference(op, inputs, dtype)


@pytest.mark.parametrize("negative_slope,gain,demodulate,noise_batch,bias,unfold_output", [
    (0.0, 1.0, True, 2, True, True), (0.0, 2.0, False, 1, False, False), (0.2, 1.4, False, None, True, True),
    (0.2, 1.4, True, 2, False, False)])
def test_styled_conv2d_activation_demodulation_noise_and_bias_options(negative_slope, gain, demodulate, noise_batch,
                                                                       bias, unfold_output):
    """Slope 0 included: the backward reads the slope from the saved output, and needs the conv only where
    the output is positive."""
    inputs = styled_conv_inputs(2, 16, 16, 7, 5, 3, noise_batch, bias, torch.float32)

    def op(*inputs, backend):
        return ops.styled_conv2d(*inputs, demodulate=demodulate, negative_slope=negative_slope, gain=gain,
                                 unfold_output=unfold_output, backend=backend)
    assert_matches_reference(op, inputs, torch.float32)


def layouts(x):
    """The input NCHW, channels-last, and as a strided slice that is neither."""
    batch, channels, height, width = x.shape
    wider = randn(batch, 2 * channels, height, width + 3, seed=7, grad=False)
    strided = wider[:, ::2, :, 1:-2].detach().copy_(x.detach())
    return {"nchw": x.detach(), "channels_last": x.detach().to(memory_format=torch.channels_last), "strided": strided}


@pytest.mark.parametrize("layout", ["nchw", "channels_last", "strided"])
@pytest.mark.parametrize("unfold_output", [False, True])
@pytest.mark.slow
def test_styled_conv2d_reads_every_layout_in_place_and_writes_the_layout_rules(layout, unfold_output):
    x, *rest = styled_conv_inputs(2, 24, 32, 5, 6, 3, 2, True, torch.float32)
    x = layouts(x)[layout].requires_grad_()
    out = ops.styled_conv2d(x, *rest, unfold_output=unfold_output, backend="triton")
    # The layout rule: channels-last exactly for a channels-last input, NCHW for the others.
    expected_format = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    assert out.is_contiguous(memory_format=expected_format)

    def op(*inputs, backend):
        return ops.styled_conv2d(*inputs, unfold_output=unfold_output, backend=backend)
    assert_matches_reference(op, (x, *rest), torch.float32)


@pytest.mark.slow
def test_styled_conv2d_gradcheck_in_float64():
    inputs = styled_conv_inputs(2, 3, 8, 3, 4, 3, 1, True, torch.float64)
    assert torch.autograd.gradcheck(lambda *inputs: ops.styled_conv2d(*inputs, unfold_output=True, backend="triton"),
                                    inputs, fast_mode=True)


@pytest.mark.slow
def test_styled_conv2d_backward_gives_the_same_bits_twice():
    inputs = styled_conv_inputs(2, 80, 72, 9, 11, 3, 2, True, torch.float32)
    out = ops.styled_conv2d(*inputs, backend="triton")
    grad_out = randn(*out.shape, seed=99, grad=False)
    first, second = (torch.autograd.grad(out, inputs, grad_out, retain_graph=True) for _ in range(2))
    assert all(torch.equal(a, b) for a, b in zip(first, second))


BACKWARD_KERNELS = ("_input_backward_kernel", "_weight_backward_kernel")


@pytest.mark.slow
@pytest.mark.skipif(bool(kernel_resources.missing_tools(["triton"], interpreted_ok=True)),
                    reason="; ".join(kernel_resources.missing_tools(["triton"], interpreted_ok=True)))
def test_backward_kernels_compile_for_sm90_without_atomic_instructions(tmp_path):
    """No float atomics, read from the PTX (atom.* / red.* instructions) of each backward kernel as
    PixelFolder launches it in bfloat16, in its first config; a kernel with tl.atomic_add shows the check
    finds them."""
    (tmp_path / "atomic_kernel.py").write_text(
        "import triton\nimport triton.language as tl\n\n\n@triton.jit\ndef atomic_kernel(ptr):\n"
        "    tl.atomic_add(ptr + tl.arange(0, 32), 1.0)\n")
    found = in_fresh_python(f"""
import re, sys, triton
from triton.compiler import ASTSource
sys.path.insert(0, {str(tmp_path)!r})
from atomic_kernel import atomic_kernel

def atomics(source):
    ptx = triton.compile(source, target=kr.triton_target("sm_90")).asm["ptx"]
    return sorted(set(re.findall(r"\\b(?:atom|red)\\.[\\w.]+", ptx)))

jobs = {{}}
for job in kr.triton_jobs(kr.record_launches(torch.bfloat16, True, size=16), "sm_90", {BACKWARD_KERNELS!r}):
    jobs.setdefault(job["name"], job)
found = {{name: atomics(ASTSource(job["function"], job["signature"], job["constants"], job["attrs"]))
         for name, job in jobs.items()}}
found["atomic_kernel"] = atomics(ASTSource(atomic_kernel, {{"ptr": "*fp32"}}))
print(json.dumps(found))""")
    assert found.pop("atomic_kernel"), "the check finds no atomic instruction in a kernel that has one"
    assert found == {name: [] for name in BACKWARD_KERNELS}


def test_styled_conv2d_up2_runs_the_reference():
    inputs = styled_conv_inputs(2, 8, 8, 4, 4, 3, None, True, torch.float32)

    def op(x, weight, styles, noise, strength, bias, backend):
        return ops.styled_conv2d(x, weight, styles, bias=bias, up=2, backend=backend)
    assert_matches_reference(op, inputs, torch.float32)


def test_styled_conv2d_double_backward_is_a_clear_error():
    x, weight, styles, noise, strength, bias = styled_conv_inputs(1, 16, 16, 3, 3, 3, 1, True, torch.float32)
    out = ops.styled_conv2d(x, weight, styles, noise, strength, bias, backend="triton")
    grad_x, = torch.autograd.grad(out.square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="differentiate twice"):
        grad_x.sum().backward()


@pytest.mark.parametrize("demodulate", [True, False])
def test_modulated_conv2d_matches_reference(demodulate):
    x, weight, styles, *_ = styled_conv_inputs(2, 16, 32, 5, 7, 3, None, False, torch.float32)

    def op(*inputs, backend):
        return ops.modulated_conv2d(*inputs, demodulate=demodulate, backend=backend)
    assert_matches_reference(op, (x, weight, styles), torch.float32)


# -------------------------------------------------------------------------------------------- ToRGB

@pytest.mark.parametrize("dtype", [torch.float32, HALF])
@pytest.mark.parametrize("batch,channels,size,skip", [(2, 32, 6, "up"), (1, 3, 5, "add"), (5, 64, 7, None),
                                                      (1, 128, 2, "up")])
def test_to_rgb_matches_reference(batch, channels, size, skip, dtype):
    skip_size = size // 2 if skip == "up" else size
    skip_kernel = ops.make_resample_kernel((1, 3, 3, 1), dtype, DEVICE) * 4 if skip == "up" else None
    inputs = (randn(batch, channels, size, size, dtype=dtype), randn(3, channels, 1, 1, dtype=dtype, seed=1),
              randn(batch, channels, dtype=dtype, seed=2, offset=1.0), randn(3, dtype=dtype, seed=3),
              None if skip is None else randn(batch, 3, skip_size, skip_size, dtype=dtype, seed=4), skip_kernel)
    assert_matches_reference(ops.to_rgb, inputs, dtype)


# ------------------------------------------------------------------------------ fold, unfold, Fourier

@pytest.mark.parametrize("shape", [(1, 3, 2, 2), (2, 5, 6, 10), (3, 32, 14, 2)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_fold_and_unfold_match_reference_exactly(shape, channels_last):
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    x = randn(*shape).to(memory_format=memory_format)
    folded = ops.fold(x, backend="triton")
    assert torch.equal(folded, ops.fold(x, backend="reference"))
    assert folded.is_contiguous(memory_format=memory_format)
    assert torch.equal(ops.unfold(folded, backend="triton"), x)
    grad = randn(*folded.shape, seed=1, grad=False)
    assert torch.equal(torch.autograd.grad(folded, x, grad)[0], ops.unfold(grad, backend="reference"))


@pytest.mark.parametrize("dtype", [torch.float32, HALF])
@pytest.mark.parametrize("channels,height,width", [(3, 5, 7), (32, 1, 3), (64, 16, 16)])
def test_fourier_embedding_matches_reference(channels, height, width, dtype):
    inputs = (randn(channels, 2, dtype=dtype, scale=2.0), randn(channels, dtype=dtype, seed=1), height, width)
    assert_matches_reference(ops.fourier_embedding, inputs, dtype)


# ----------------------------------------------------------------------- torch.compile and the model

@pytest.mark.slow
def test_ops_compile_without_graph_breaks():
    """The backend's ops traced whole, forward and backward (aot_eager on the CPU: no C++ build)."""
    x, weight, styles, _, _, bias = styled_conv_inputs(2, 16, 16, 6, 6, 3, None, True, torch.float32)
    skip_kernel = ops.make_resample_kernel((1, 3, 3, 1), device=DEVICE) * 4

    def layers(x, weight, styles, bias):
        embedding = triton_backend.fourier_embedding(weight[:, :2, 0, 0], bias, 6, 6)
        out = triton_backend.styled_conv2d(x + embedding, weight, styles, None, None, bias, True, 1, None, 0.2,
                                           2 ** 0.5, True, 1e-8)
        skip = triton_backend.to_rgb(triton_backend.fold(out), weight[:3, :, :1, :1], styles, bias[:3], None, None)
        return triton_backend.to_rgb(out, weight[:3, :4, :1, :1], styles[:, :4], bias[:3], skip, skip_kernel)

    compiled = torch.compile(layers, fullgraph=True, backend="inductor" if ON_CUDA else "aot_eager")
    inputs = (x, weight, styles, bias)
    expected = layers(*inputs)
    expected_grads = torch.autograd.grad(expected.sum(), inputs)
    out = compiled(*inputs)
    grads = torch.autograd.grad(out.sum(), inputs)
    assert_close(out, expected, torch.float32, "output")
    for grad, expected_grad in zip(grads, expected_grads):
        assert_close(grad, expected_grad, torch.float32, "gradient")


@pytest.mark.slow
@pytest.mark.parametrize("size,batch", [(16, 2), pytest.param(64, 1, marks=pytest.mark.slow)])
def test_pixelfolder_images_and_gradients_match_reference(size, batch):
    torch.manual_seed(0)
    generator = models.PixelFolder(size, width=0.125).to(DEVICE)
    z = randn(batch, 512, grad=False)
    noise = generator.make_noise(batch, generator=torch.Generator().manual_seed(1), device="cpu")
    noise = [n.to(DEVICE) for n in noise]
    results = {}
    for backend in ("reference", "triton"):
        with ops.use_backend(backend):
            image = generator(z, noise=noise)
        generator.zero_grad()
        image.square().mean().backward()
        results[backend] = image, [p.grad.clone() for p in generator.parameters() if p.grad is not None]
    (expected, expected_grads), (image, grads) = results["reference"], results["triton"]
    assert_close(image, expected, torch.float32, "image")
    assert len(grads) == len(expected_grads)
    for grad, expected_grad in zip(grads, expected_grads):
        assert_close(grad, expected_grad, torch.float32, "parameter gradient")


@needs_cuda
@pytest.mark.parametrize("case", [(32, 512, 512, 8, 8, 3, 32, True, True), (4, 128, 512, 33, 17, 3, 1, True, True),
                                  (8, 256, 128, 31, 31, 3, 8, True, False)])
def test_styled_conv2d_layer_shapes_in_bfloat16_on_cuda(case):
    *shape, unfold_output = case
    inputs = styled_conv_inputs(*shape, dtype=torch.bfloat16)

    def op(*inputs, backend):
        return ops.styled_conv2d(*inputs, unfold_output=unfold_output, backend=backend)
    assert_matches_reference(op, inputs, torch.bfloat16)


OPCHECK_CASES = {
    "fold": lambda: (randn(2, 3, 4, 6),),
    "unfold": lambda: (randn(2, 8, 3, 2),),
    "fourier_embedding": lambda: (randn(5, 2), randn(5, seed=1), 3, 4),
    "styled_conv2d": lambda: (randn(2, 4, 5, 3), randn(8, 4, 3, 3, seed=1), randn(2, 4, seed=2),
                              randn(2, 1, 5, 3, seed=3), randn(1, seed=4), randn(8, seed=5), True, 0.2, 2 ** 0.5,
                              True, 1e-8),
    "styled_conv2d_input_backward": lambda: (
        randn(2, 2, 10, 6, grad=False), randn(2, 2, 10, 6, seed=1, grad=False), randn(2, 4, 5, 3, seed=2, grad=False),
        randn(8, 4, 3, 3, seed=3, grad=False), randn(2, 4, seed=4, grad=False),
        randn(2, 8, seed=5, grad=False).abs(), 0.2, 2 ** 0.5, True),
    "styled_conv2d_weight_backward": lambda: (
        randn(2, 8, 5, 3, grad=False), randn(2, 8, 5, 3, seed=1, grad=False), randn(2, 4, 5, 3, seed=2, grad=False),
        randn(8, 4, 3, 3, seed=3, grad=False), randn(2, 4, seed=4, grad=False), randn(2, 8, seed=5, grad=False).abs(),
        randn(1, 1, 5, 3, seed=6, grad=False), randn(1, seed=7, grad=False), randn(8, seed=8, grad=False), 0.0, 2.0,
        False),
    "to_rgb": lambda: (randn(2, 4, 4, 4), randn(3, 4, 1, 1, seed=1), randn(2, 4, seed=2), randn(3, seed=3),
                       randn(2, 3, 2, 2, seed=4), torch.full((4, 4), 0.25, device=DEVICE)),
}


@pytest.mark.parametrize("name", OPCHECK_CASES)
@pytest.mark.slow
def test_opcheck(name):
    # Schema, fake kernel, autograd registration and dispatch agree with the real kernel.
    torch.library.opcheck(getattr(torch.ops.pixelfolder_triton, name).default, OPCHECK_CASES[name]())
