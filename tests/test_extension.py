"""The compiled extension ("cpu" backend) on the cases of pixelfolder_ops.correctness: values and every
gradient against the reference in each dtype and layout, gradcheck (gradgradcheck where the
discriminator's R1 penalty needs it), torch.library.opcheck of every op it calls, torch.compile, the same
bits every run, and the models. With PIXELFOLDER_CUDA_EMULATION=1 the "cpu" backend runs the CUDA
kernels' bodies (csrc/emulation), so these tests check the CUDA kernels too; on a GPU,
test_extension_cuda.py runs the cuda backend."""
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
from pixelfolder_ops import correctness, extension
from pixelfolder_ops.correctness import LAYER, SECOND_ORDER, SMALL
from pixelfolder_ops.extension import LIBRARY
from pixelfolder_ops.triton._indexing import fits_int32_offsets

pytestmark = pytest.mark.needs_backend("cpu")
BACKEND = "cpu"
EMULATION = os.environ.get("PIXELFOLDER_CUDA_EMULATION") == "1"
TESTS = os.path.dirname(os.path.abspath(__file__))


def names(*tags, op=None):
    return correctness.case_names(*tags, op=op, leave_out=correctness.NOT_ON_A_CPU)


def runs():
    """Every case in every dtype and layout. By default: every dtype in NCHW and every layout in float32,
    a PixelFolder layer's shape in NCHW only; the rest is slow."""
    for name in names():
        case = correctness.find(name)
        for dtype in correctness.DTYPES:
            for layout in correctness.LAYOUTS:
                default = layout == "contiguous" or (dtype == torch.float32 and LAYER not in case.tags)
                yield pytest.param(name, dtype, layout, id=f"{name}-{str(dtype)[6:]}-{layout}",
                                   marks=() if default else pytest.mark.slow)


@pytest.mark.slow
def test_collecting_the_tests_builds_nothing(tmp_path):
    # Whether a backend can run is asked when a test runs (the needs_backend marker), never at collection.
    env = dict(os.environ, TORCH_EXTENSIONS_DIR=str(tmp_path))
    result = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", TESTS],
                            capture_output=True, text=True, env=env, cwd=os.path.dirname(TESTS))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert os.listdir(tmp_path) == [] and "pixelfolder_ops: " not in result.stderr


def test_extension_builds_and_reports():
    info = extension.build_info()
    assert "cpu" in info["backends"] and info["torch_version"] == torch.__version__.split("+")[0]
    assert "cpu" in ops.available_backends()
    # PIXELFOLDER_CUDA_EMULATION=1: the "cpu" backend runs the CUDA kernels' bodies (csrc/emulation).
    assert info["cuda_emulation"] == EMULATION
    # The CPU kernels use every core where torch itself runs on OpenMP.
    assert info["cpu_parallel"] == (sys.platform.startswith("linux") and "OpenMP" in torch.__config__.parallel_info())


@pytest.mark.parametrize("case, dtype, layout", list(runs()))
def test_matches_the_reference(case, dtype, layout, assert_matches_reference):
    assert_matches_reference(case, BACKEND, dtype, "cpu", layout)


@pytest.mark.parametrize("layout", correctness.LAYOUTS)
@pytest.mark.parametrize("case", [name for name in names(SMALL) if correctness.find(name).op != "fourier_embedding"
                                  and len(correctness.find(name).tensors[0][1].shape) == 4])  # made from images
def test_outputs_follow_the_layout_rule(case, layout, assert_follows_the_layout_rule):
    assert_follows_the_layout_rule(case, BACKEND, layout)


@pytest.mark.parametrize("case", names(SMALL))
def test_gradcheck(case, gradchecks):
    gradchecks(case, BACKEND)


@pytest.mark.parametrize("case", names(SECOND_ORDER))
def test_gradgradcheck(case, gradchecks):
    gradchecks(case, BACKEND, second_order=True)


# The ops whose backward this backend does not differentiate again.
FIRST_ORDER_ONLY = ("fourier_embedding", "modulated_conv2d", "styled_conv2d")


@pytest.mark.parametrize("case", [names(SMALL, op=op)[0] for op in FIRST_ORDER_ONLY])
def test_second_order_is_a_clear_error(case, second_order_error):
    second_order_error(case, BACKEND)


def first_of_each_op():
    """The first small case of each op: together they call every op of the extension (tested below)."""
    return [names(SMALL, op=op)[0] for op in correctness.cases_by_op()]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", [pytest.param(name, marks=() if name in first_of_each_op() else pytest.mark.slow)
                                  for name in names(SMALL)])
def test_opcheck(case, dtype, opchecks):
    # Every op the case calls, forward and backward, the ones the kernels call inside included; in
    # bfloat16 the fake kernels must say which results stay float32 (the demodulation, the sums).
    opchecks(case, BACKEND, "pixelfolder_ops", dtype)


def test_opcheck_reaches_every_op_of_the_extension(opchecks, monkeypatch):
    monkeypatch.setattr(torch.library, "opcheck", lambda *args, **kwargs: None)  # the calls alone
    checked = set().union(*(opchecks(case, BACKEND, "pixelfolder_ops") for case in first_of_each_op()))
    assert checked == {f"pixelfolder_ops::{name}" for name in LIBRARY._arguments}


@pytest.mark.parametrize("case", first_of_each_op())
def test_compiles_to_one_graph(case, compiles_to_one_graph):
    compiles_to_one_graph(case, BACKEND)


@pytest.mark.slow
def test_torch_compile_of_a_layer_with_inductor():
    torch._dynamo.reset()
    styled = correctness.find("styled conv odd 3->8 5x7, no noise, bias, unfold")
    tensors = styled.inputs(torch.float32)
    kernel = ops.make_resample_kernel([1, 3, 3, 1]) * 4

    def layer(input, weight, bias):
        h = styled.call({**tensors, "input": input, "weight": weight, "bias": bias}, BACKEND)
        h = ops.fold(ops.upfirdn2d(h, kernel, pad=(2, 1), backend=BACKEND), backend=BACKEND)
        return ops.fused_leaky_relu(h, bias.repeat(4)[:h.shape[1]], clamp=0.5, backend=BACKEND)

    inputs = (tensors["input"], tensors["weight"], tensors["bias"])
    out = torch.compile(layer, fullgraph=True)(*inputs)
    expected = layer(*inputs)
    assert correctness.relative_error(out, expected) <= styled.tolerance(torch.float32)
    for grad, expected_grad in zip(torch.autograd.grad(out.square().sum(), inputs),
                                   torch.autograd.grad(expected.square().sum(), inputs)):
        assert correctness.relative_error(grad, expected_grad) <= styled.tolerance(torch.float32)


@pytest.mark.parametrize("measured", ["reference", "cpu"])
def test_torch_compile_keeps_the_backend_auto_measured_eagerly(measured, monkeypatch):
    # Under compilation nothing is measured: the graph holds the backend an eager call chose, and a
    # signature never seen eagerly gets the preference order without a graph break.
    torch._dynamo.reset()
    monkeypatch.setenv("PIXELFOLDER_OPS_AUTO", "measure")
    monkeypatch.setattr(ops.backend, "_fastest", lambda op, candidates, device, args, training=False: measured)
    x = torch.randn(2, 8, 6, 6)
    ops.fold(x)
    assert list(ops.backend.auto_choices().values()) == [measured]
    monkeypatch.setattr(ops.backend, "_fastest", None)  # measuring again would fail
    graphs = []

    def record(graph_module, example_inputs):
        graphs.append(graph_module.code)
        return graph_module.forward

    compiled = torch.compile(lambda t: ops.fold(t), backend=record, fullgraph=True)
    assert torch.equal(compiled(x), ops.fold(x, backend="reference"))
    assert ("pixelfolder_ops.fold" in graphs[0]) == (measured == "cpu")
    other = torch.randn(2, 8, 4, 6)
    assert torch.equal(compiled(other), ops.fold(other, backend="reference"))
    assert "pixelfolder_ops.fold" in graphs[-1]  # unmeasured: the preference, cpu


# Over several reduction blocks (channel_tiles.cuh) in each direction, NCHW and channels-last, unfolded
# and not: the emulation build draws new block and thread orders for every launch.
DETERMINISM_CASES = ["styled conv 3->36 33x35 (several blocks), per image noise",
                     "styled conv 3->36 33x35 (several blocks), shared noise, unfold"]


def test_backward_gives_the_same_bits_twice(digest_of_the_backward):
    assert digest_of_the_backward(DETERMINISM_CASES, BACKEND) == digest_of_the_backward(DETERMINISM_CASES, BACKEND)


@pytest.mark.slow
def test_backward_gives_the_same_bits_under_other_emulation_seeds(digests_under_emulation_seeds):
    # In the emulation build the seed draws the order of blocks and of threads between barriers: a
    # reduction whose result depended on either would give other bits under another seed.
    assert len(digests_under_emulation_seeds(DETERMINISM_CASES, BACKEND, ("contiguous", "channels_last"))) == 1


def test_cpp_checks_name_the_op_and_argument():
    # The kernels check what they read, whoever calls them (the public functions check first).
    x = torch.randn(1, 1, 4, 4)
    with pytest.raises(RuntimeError, match="upfirdn2d: argument 'kernel' must be 2-D"):
        LIBRARY.call("upfirdn2d", input=x, kernel=torch.randn(4), up=[1, 1], down=[1, 1], pad=[0, 0, 0, 0])
    with pytest.raises(RuntimeError, match="fold: argument 'input' must be a floating-point tensor"):
        LIBRARY.call("fold", input=torch.ones(1, 1, 4, 4, dtype=torch.int32))


@pytest.mark.parametrize("unfold_output", [False, True])
def test_epilogue_backward_refuses_a_gradient_of_another_shape(unfold_output):
    # The kernels read the gradient where the forward stored: a smaller one would be read out of bounds.
    conv_output = torch.randn(2, 8, 16, 16)
    output_shape = "[2, 2, 32, 32]" if unfold_output else "[2, 8, 16, 16]"
    with pytest.raises(RuntimeError, match=re.escape(f"argument 'grad_output' must have the output's shape "
                                                     f"{output_shape}, got [1, 1, 2, 2]")):
        LIBRARY.call("styled_conv2d_epilogue_backward", grad_output=torch.randn(1, 1, 2, 2), conv_output=conv_output,
                     demod=None, noise=None, noise_strength=None, bias=None, demodulate=False, up=1,
                     negative_slope=0.2, gain=math.sqrt(2), unfold_output=unfold_output, eps=1e-8, clamp=None)


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


# ------------------------------------------------------------------------------------------ the models

def test_pixelfolder_matches_the_reference(assert_model_matches_reference):
    torch.manual_seed(0)
    generator = models.PixelFolder(64, width=0.125)
    assert_model_matches_reference(generator, BACKEND, torch.randn(2, 512), noise=generator.make_noise(2))


def test_discriminator_matches_the_reference(assert_model_matches_reference):
    torch.manual_seed(0)
    assert_model_matches_reference(models.Discriminator(32, width=0.125), BACKEND, torch.randn(2, 3, 32, 32))


def test_discriminator_r1_penalty_matches_the_reference(assert_model_matches_reference):
    torch.manual_seed(0)
    assert_model_matches_reference(models.Discriminator(32, width=0.125), BACKEND, torch.randn(2, 3, 32, 32), r1=True)


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
        torch.testing.assert_close(compiled(z, noise=noise), generator(z, noise=noise), rtol=0, atol=0)


@pytest.mark.parametrize("factory", [lambda: models.PixelFolder(64, width=0.125),
                                     lambda: models.StyleGAN2Generator(32, width=0.125),
                                     lambda: models.CIPS(16, width=0.125), lambda: models.INRGAN(32, width=0.125)],
                         ids=["PixelFolder", "StyleGAN2", "CIPS", "INRGAN"])
def test_generators_run_channels_last_end_to_end(factory, tolerance_of_the_model):
    # After to_channels_last every activation of more than one channel is channels-last, from the
    # layers that make them from nothing to the images, and the images are the same.
    torch.manual_seed(0)
    generator = factory().eval()
    z, noise = torch.randn(2, 512), generator.make_noise(2)
    tolerance = tolerance_of_the_model(generator, z, noise=noise)
    with torch.no_grad(), ops.use_backend(BACKEND):
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
    assert correctness.relative_error(images, expected) <= tolerance
