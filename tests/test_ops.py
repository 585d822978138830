"""Each reference op against an independent formula, its gradients in float64, and its errors."""
import itertools
import math
import time
import types

import pytest
import torch
import torch.nn.functional as F

import pixelfolder_ops as ops
from pixelfolder_ops import backend, correctness


def randn(*shape, dtype=torch.float64, seed=0):
    return torch.randn(*shape, dtype=dtype, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------- fold

def test_fold_follows_the_official_channel_order():
    x = randn(2, 3, 6, 4)
    y = ops.fold(x)
    assert y.shape == (2, 12, 3, 2)
    for c, i, j, dy, dx in itertools.product(range(3), range(3), range(2), range(2), range(2)):
        assert torch.equal(y[:, (dy * 2 + dx) * 3 + c, i, j], x[:, c, 2 * i + dy, 2 * j + dx])


def test_fold_is_not_pixel_unshuffle():
    x = randn(1, 3, 4, 4)
    assert not torch.equal(ops.fold(x), F.pixel_unshuffle(x, 2))


@pytest.mark.parametrize("shape", [(1, 1, 2, 2), (2, 5, 6, 10), (3, 8, 14, 2)])
def test_unfold_inverts_fold(shape):
    x = randn(*shape)
    assert torch.equal(ops.unfold(ops.fold(x)), x)
    y = randn(shape[0], 4 * shape[1], shape[2], shape[3])
    assert torch.equal(ops.fold(ops.unfold(y)), y)


def test_fold_of_non_contiguous_and_channels_last_input():
    x = randn(2, 4, 6, 8)
    expected = ops.fold(x)
    assert torch.equal(ops.fold(x.to(memory_format=torch.channels_last)), expected)
    wide = randn(2, 4, 6, 16)[..., ::2]
    assert torch.equal(ops.fold(wide), ops.fold(wide.contiguous()))


# ---------------------------------------------------------------------------- fused_leaky_relu

@pytest.mark.parametrize("shape", [(4, 5), (2, 3, 7), (2, 3, 5, 4), (1, 6, 2, 3, 2)])
def test_fused_leaky_relu_matches_leaky_relu(shape):
    x, bias = randn(*shape), randn(shape[1], seed=1)
    expected = F.leaky_relu(x + bias.view(1, -1, *[1] * (len(shape) - 2)), 0.2) * math.sqrt(2)
    torch.testing.assert_close(ops.fused_leaky_relu(x, bias), expected, rtol=0, atol=0)
    torch.testing.assert_close(ops.fused_leaky_relu(x, None, 0.1, 3.0), F.leaky_relu(x, 0.1) * 3.0)


def test_fused_leaky_relu_module_learns_its_bias():
    layer = ops.FusedLeakyReLU(3).double()
    assert torch.equal(layer.bias, torch.zeros(3, dtype=torch.float64))
    layer(randn(2, 3, 4, 4)).sum().backward()
    assert layer.bias.grad is not None and layer.bias.grad.abs().sum() > 0


def test_fused_leaky_relu_module_passes_its_options_and_follows_the_inputs_dtype():
    x = randn(2, 3, 4, 4)
    plain = ops.FusedLeakyReLU(3, bias=False, negative_slope=0.1, scale=3.0)
    assert plain.bias is None and not list(plain.parameters())
    torch.testing.assert_close(plain(x), F.leaky_relu(x, 0.1) * 3)
    torch.testing.assert_close(ops.FusedLeakyReLU(3, bias=False)(x), F.leaky_relu(x, 0.2) * math.sqrt(2))
    layer = ops.FusedLeakyReLU(3, negative_slope=0.1, scale=3.0)
    with torch.no_grad():
        layer.bias.copy_(torch.tensor([0.5, -1.0, 2.0]))
    out = layer(x.bfloat16())  # a float32 bias on a bfloat16 input (autocast)
    assert out.dtype == torch.bfloat16
    expected = F.leaky_relu(x.bfloat16().double() + torch.tensor([0.5, -1.0, 2.0]).double().view(1, 3, 1, 1), 0.1) * 3
    # bfloat16 rounds the sum, the activation and the product (no reduction).
    assert correctness.relative_error(out, expected) <= correctness.tolerance(torch.bfloat16, 0)


# ------------------------------------------------------------------------------------ upfirdn2d

def upfirdn2d_direct(x, kernel, up, down, pad):
    """upfirdn2d by its definition, one output pixel at a time (small inputs only)."""
    (ux, uy), (dx, dy), (x0, x1, y0, y1) = up, down, pad
    batch, channels, height, width = x.shape
    kh, kw = kernel.shape
    upsampled = torch.zeros(batch, channels, height * uy, width * ux, dtype=x.dtype)
    upsampled[:, :, ::uy, ::ux] = x
    padded_h, padded_w = height * uy + y0 + y1, width * ux + x0 + x1
    out = torch.zeros(batch, channels, (padded_h - kh) // dy + 1, (padded_w - kw) // dx + 1, dtype=x.dtype)
    for oy, ox in itertools.product(range(out.shape[2]), range(out.shape[3])):
        for ky, kx in itertools.product(range(kh), range(kw)):
            # Position in the padded image, then in the upsampled one (outside it: zero or cropped).
            py, px = oy * dy + ky - y0, ox * dx + kx - x0
            if 0 <= py < height * uy and 0 <= px < width * ux:
                # A true convolution: the kernel is flipped.
                out[:, :, oy, ox] += upsampled[:, :, py, px] * kernel[kh - 1 - ky, kw - 1 - kx]
    return out


UPFIRDN_CASES = [
    (1, 1, (0, 0, 0, 0)), (2, 1, (2, 1, 2, 1)), (1, 2, (1, 1, 1, 1)), ((2, 1), (1, 2), (1, 2, 0, 1)),
    (3, 2, (2, 2, 1, 3)), (1, 1, (-1, 2, 1, -1)), (2, 2, (0, 0, 0, 0)),
]


@pytest.mark.parametrize("up,down,pad", UPFIRDN_CASES)
def test_upfirdn2d_matches_its_definition(up, down, pad):
    x = randn(2, 3, 5, 7)
    kernel = randn(4, 3, seed=1)
    up_pair = up if isinstance(up, tuple) else (up, up)
    down_pair = down if isinstance(down, tuple) else (down, down)
    expected = upfirdn2d_direct(x, kernel, up_pair, down_pair, pad)
    torch.testing.assert_close(ops.upfirdn2d(x, kernel, up=up, down=down, pad=pad), expected)


def test_upfirdn2d_two_element_pad_applies_to_both_axes():
    x, kernel = randn(1, 2, 4, 6), randn(4, 4, seed=1)
    torch.testing.assert_close(ops.upfirdn2d(x, kernel, up=2, pad=(2, 1)),
                               ops.upfirdn2d(x, kernel, up=2, pad=(2, 1, 2, 1)))


def test_upfirdn2d_channels_last_and_non_contiguous():
    x, kernel = randn(2, 3, 6, 8), randn(3, 3, seed=1)
    expected = ops.upfirdn2d(x, kernel, up=2, down=1, pad=(1, 1))
    torch.testing.assert_close(ops.upfirdn2d(x.to(memory_format=torch.channels_last), kernel, up=2, pad=(1, 1)),
                               expected)
    torch.testing.assert_close(ops.upfirdn2d(x.transpose(2, 3).contiguous().transpose(2, 3), kernel, up=2,
                                             pad=(1, 1)), expected)


# ------------------------------------------------------------------------------ modulated_conv2d

def modulated_conv2d_per_image(x, weight, styles, demodulate, up=1, down=1, eps=1e-8):
    """One ordinary convolution per image, with that image's modulated (and demodulated) weight."""
    blur = torch.tensor([1.0, 3.0, 3.0, 1.0], dtype=x.dtype)
    blur = torch.outer(blur, blur) / 64
    k = weight.shape[-1]
    outputs = []
    for b in range(x.shape[0]):
        w = weight * styles[b].view(1, -1, 1, 1)
        if demodulate:
            w = w / torch.sqrt((w ** 2).sum(dim=(1, 2, 3), keepdim=True) + eps)
        xb = x[b:b + 1]
        if up == 2:
            out = F.conv_transpose2d(xb, w.transpose(0, 1), stride=2)
            out = upfirdn2d_direct(out, blur * 4, (1, 1), (1, 1), (1, 1, 1, 1))
        elif down == 2:
            xb = upfirdn2d_direct(xb, blur, (1, 1), (1, 1), ((k + 1) // 2,) * 2 + ((k + 1) // 2,) * 2)
            out = F.conv2d(xb, w, stride=2)
        else:
            out = F.conv2d(xb, w, padding=k // 2)
        outputs.append(out)
    return torch.cat(outputs)


@pytest.mark.parametrize("kernel_size,demodulate", [(1, False), (1, True), (3, True), (3, False)])
def test_modulated_conv2d_matches_per_image_weights(kernel_size, demodulate):
    x, styles = randn(3, 5, 7, 6), randn(3, 5, seed=1)
    weight = randn(4, 5, kernel_size, kernel_size, seed=2)
    expected = modulated_conv2d_per_image(x, weight, styles, demodulate)
    torch.testing.assert_close(ops.modulated_conv2d(x, weight, styles, demodulate=demodulate), expected)


def test_modulated_conv2d_equals_modulating_the_activations():
    # conv(x * s, W) * d: the formulation the fused kernels use.
    x, styles, weight = randn(2, 6, 8, 8), randn(2, 6, seed=1), randn(5, 6, 3, 3, seed=2)
    demod = torch.rsqrt((weight[None] * styles[:, None, :, None, None]).square().sum((2, 3, 4)) + 1e-8)
    expected = F.conv2d(x * styles[:, :, None, None], weight, padding=1) * demod[:, :, None, None]
    torch.testing.assert_close(ops.modulated_conv2d(x, weight, styles), expected)


@pytest.mark.parametrize("up,down", [(2, 1), (1, 2)])
def test_modulated_conv2d_resampling_matches_per_image_weights(up, down):
    x, styles, weight = randn(2, 3, 6, 6), randn(2, 3, seed=1), randn(4, 3, 3, 3, seed=2)
    out = ops.modulated_conv2d(x, weight, styles, up=up, down=down)
    assert out.shape == ((2, 4, 12, 12) if up == 2 else (2, 4, 3, 3))
    torch.testing.assert_close(out, modulated_conv2d_per_image(x, weight, styles, True, up, down))


# ----------------------------------------------------------------------- styled_conv2d, to_rgb

def unfold_by_slices(x):
    c = x.shape[1] // 4
    out = x.new_zeros(x.shape[0], c, 2 * x.shape[2], 2 * x.shape[3])
    for dy, dx in itertools.product(range(2), range(2)):
        out[:, :, dy::2, dx::2] = x[:, (dy * 2 + dx) * c:(dy * 2 + dx + 1) * c]
    return out


@pytest.mark.parametrize("kernel_size,unfold_output,noise_batch", [(3, False, 3), (3, True, 1), (1, True, 3)])
def test_styled_conv2d_matches_its_parts(kernel_size, unfold_output, noise_batch):
    x, styles, weight = randn(3, 5, 6, 4), randn(3, 5, seed=1), randn(8, 5, kernel_size, kernel_size, seed=2)
    noise, strength, bias = randn(noise_batch, 1, 6, 4, seed=3), randn(1, seed=4), randn(8, seed=5)
    out = ops.styled_conv2d(x, weight, styles, noise, strength, bias, unfold_output=unfold_output)
    expected = modulated_conv2d_per_image(x, weight, styles, True) + strength * noise
    expected = F.leaky_relu(expected + bias.view(1, -1, 1, 1), 0.2) * math.sqrt(2)
    torch.testing.assert_close(out, unfold_by_slices(expected) if unfold_output else expected)


def test_styled_conv2d_upsampling_without_noise_or_bias():
    x, styles, weight = randn(2, 3, 4, 4), randn(2, 3, seed=1), randn(4, 3, 3, 3, seed=2)
    out = ops.styled_conv2d(x, weight, styles, up=2, negative_slope=0.1, gain=1.5)
    expected = F.leaky_relu(modulated_conv2d_per_image(x, weight, styles, True, up=2), 0.1) * 1.5
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("upsample_skip", [True, False])
def test_to_rgb_matches_its_parts(upsample_skip):
    x, styles, weight, bias = randn(2, 6, 8, 8), randn(2, 6, seed=1), randn(3, 6, 1, 1, seed=2), randn(3, seed=3)
    blur = torch.tensor([1.0, 3.0, 3.0, 1.0], dtype=torch.float64)
    kernel = torch.outer(blur, blur) / 64 * 4 if upsample_skip else None
    skip = randn(2, 3, 4, 4, seed=4) if upsample_skip else randn(2, 3, 8, 8, seed=4)
    expected = modulated_conv2d_per_image(x, weight, styles, False) + bias.view(1, 3, 1, 1)
    expected = expected + (upfirdn2d_direct(skip, kernel, (2, 2), (1, 1), (2, 1, 2, 1)) if upsample_skip else skip)
    torch.testing.assert_close(ops.to_rgb(x, weight, styles, bias, skip, kernel), expected)
    torch.testing.assert_close(ops.to_rgb(x, weight, styles, bias),
                               modulated_conv2d_per_image(x, weight, styles, False) + bias.view(1, 3, 1, 1))


# ---------------------------------------------------------------------------- fourier_embedding

def test_fourier_embedding_matches_its_formula():
    weight, bias = randn(6, 2), randn(6, seed=1)
    out = ops.fourier_embedding(weight, bias, 5, 7)
    assert out.shape == (1, 6, 5, 7)
    x = torch.linspace(-1, 1, 7, dtype=torch.float64)
    y = torch.linspace(-1, 1, 5, dtype=torch.float64)
    for c, i, j in itertools.product(range(6), range(5), range(7)):
        expected = math.sin(weight[c, 0] * x[j] + weight[c, 1] * y[i] + bias[c])
        assert abs(out[0, c, i, j].item() - expected) < 1e-12


# ------------------------------------------------------- the cases of pixelfolder_ops.correctness

def names(*tags, op=None):
    return correctness.case_names(*tags, op=op, leave_out=correctness.NOT_ON_A_CPU)


def first_of_each_op():
    return [names(correctness.SMALL, op=op)[0] for op in correctness.cases_by_op()]


@pytest.mark.parametrize("case", names(correctness.SMALL))
def test_gradcheck(case, gradchecks):
    gradchecks(case, "reference")


# The whole Jacobian, not a random projection of it: the smallest case of each op (the convs' take a while).
@pytest.mark.parametrize("case", [pytest.param(name, marks=pytest.mark.slow if "conv" in name else ())
                                  for name in first_of_each_op()])
def test_gradcheck_of_the_whole_jacobian(case, gradchecks):
    gradchecks(case, "reference", fast_mode=False)


@pytest.mark.parametrize("case", names(correctness.SECOND_ORDER))
def test_gradgradcheck_for_r1(case, gradchecks):
    # The discriminator's R1 penalty differentiates through these twice.
    gradchecks(case, "reference", second_order=True)


@pytest.mark.parametrize("case, dtype", [
    pytest.param(name, dtype, id=f"{name}-{str(dtype)[6:]}",
                 marks=pytest.mark.slow if correctness.LAYER in correctness.find(name).tags else ())
    for name in names() for dtype in (torch.float32, torch.bfloat16, torch.float16)])
def test_reduced_precision_matches_the_float64_oracle(case, dtype, assert_matches_reference):
    assert_matches_reference(case, "reference", dtype)


# ------------------------------------------------------------------------------------- errors

BAD_INPUTS = [
    (lambda: ops.fold(randn(2, 3, 5, 4)), "fold: argument 'input' must have even height and width"),
    (lambda: ops.fold(randn(3, 4, 4)), "fold: argument 'input' must be a 4-D tensor"),
    (lambda: ops.unfold(randn(1, 6, 2, 2)), "unfold: argument 'input' must have a channel count divisible by 4"),
    (lambda: ops.fold(torch.zeros(1, 1, 2, 2, dtype=torch.int64)), "fold: argument 'input' must be a floating"),
    (lambda: ops.fused_leaky_relu(randn(2, 3, 4), randn(4)), "fused_leaky_relu: argument 'bias' must be (3,)"),
    (lambda: ops.fused_leaky_relu(randn(2, 3), randn(3).float()),
     "fused_leaky_relu: argument 'bias' must be of input's dtype (torch.float64), got dtype torch.float32"),
    (lambda: ops.modulated_conv2d(randn(2, 3, 4, 4), randn(5, 4, 3, 3), randn(2, 3)),
     "modulated_conv2d: argument 'weight' must be of shape (C_out, 3, k, k)"),
    (lambda: ops.modulated_conv2d(randn(2, 3, 4, 4), randn(5, 3, 3, 3), randn(1, 3)),
     "modulated_conv2d: argument 'styles' must be (2, 3), got (1, 3)"),
    (lambda: ops.modulated_conv2d(randn(2, 3, 4, 4), randn(5, 3, 3, 3), randn(2, 3), up=2, down=2),
     "modulated_conv2d: argument 'up/down' must be 1 or 2, and not both 2"),
    (lambda: ops.modulated_conv2d(randn(2, 3, 4, 4), randn(5, 3, 2, 2), randn(2, 3)),
     "modulated_conv2d: argument 'weight' must be a square kernel of odd size"),
    (lambda: ops.modulated_conv2d(randn(2, 3, 4), randn(5, 3, 3, 3), randn(2, 3)),
     "modulated_conv2d: argument 'input' must be a 4-D tensor"),
    (lambda: ops.styled_conv2d(randn(2, 3, 4, 4), randn(4, 3, 3, 3), randn(2, 3), randn(2, 1, 8, 8), randn(1)),
     "styled_conv2d: argument 'noise' must be of shape (2 or 1, 1, 4, 4), got shape (2, 1, 8, 8)"),
    (lambda: ops.styled_conv2d(randn(2, 3, 4, 4), randn(4, 3, 3, 3), randn(2, 3), randn(2, 1, 4, 4)),
     "styled_conv2d: argument 'noise_strength' must be given exactly when 'noise' is"),
    (lambda: ops.styled_conv2d(randn(2, 3, 4, 4), randn(6, 3, 3, 3), randn(2, 3), unfold_output=True),
     "styled_conv2d: argument 'weight' must be a C_out divisible by 4 for unfold_output"),
    (lambda: ops.styled_conv2d(randn(2, 3, 4, 4), randn(4, 3, 3, 3), randn(2, 3), bias=randn(3)),
     "styled_conv2d: argument 'bias' must be (4,), got (3,)"),
    (lambda: ops.to_rgb(randn(2, 3, 4, 4), randn(3, 3, 3, 3), randn(2, 3), randn(3)),
     "to_rgb: argument 'weight' must be a 1x1 kernel"),
    (lambda: ops.to_rgb(randn(2, 3, 4, 4), randn(3, 3, 1, 1), randn(2, 3), randn(3), randn(2, 3, 4, 4), randn(4, 4)),
     "to_rgb: argument 'skip' must be (2, 3, 2, 2), got (2, 3, 4, 4)"),
    (lambda: ops.upfirdn2d(randn(1, 1, 4, 4), randn(4)), "upfirdn2d: argument 'kernel' must be a 2-D tensor"),
    (lambda: ops.upfirdn2d(randn(1, 1, 4, 4), randn(3, 3), up=0), "upfirdn2d: argument 'up' must be at least 1"),
    (lambda: ops.upfirdn2d(randn(1, 1, 4, 4), randn(3, 3), pad=(1, 2, 3)),
     "upfirdn2d: argument 'pad' must be a tuple of 2 or 4 ints"),
    (lambda: ops.upfirdn2d(randn(1, 1, 2, 2), randn(4, 4), pad=(-1, -1)), "upfirdn2d: arguments 'pad'"),
    (lambda: ops.fourier_embedding(randn(4, 3), randn(4), 2, 2),
     "fourier_embedding: argument 'weight' must be of shape (C, 2)"),
    (lambda: ops.fourier_embedding(randn(4, 2), randn(4), 0, 2),
     "fourier_embedding: argument 'height' must be a positive int"),
]


@pytest.mark.parametrize("call,message", BAD_INPUTS, ids=[m.split(":")[0] + str(i) for i, (_, m) in
                                                          enumerate(BAD_INPUTS)])
def test_bad_input_names_op_argument_and_expectation(call, message):
    with pytest.raises(ValueError) as error:
        call()
    assert message in str(error.value)


# ------------------------------------------------------------------------------------ backends

def test_backend_switch_per_call_context_and_environment(monkeypatch):
    x = randn(1, 2, 4, 4)
    assert "reference" in ops.available_backends()
    assert torch.equal(ops.fold(x, backend="reference"), ops.fold(x, backend="auto"))
    with ops.use_backend("reference"):
        assert ops.get_backend() == "reference"
    assert ops.get_backend() == "auto"
    monkeypatch.setenv("PIXELFOLDER_OPS_BACKEND", "reference")
    assert ops.get_backend() == "reference"
    monkeypatch.setenv("PIXELFOLDER_OPS_BACKEND", "nonsense")
    with pytest.raises(ValueError, match="unknown backend 'nonsense'"):
        ops.fold(x)


@pytest.mark.parametrize("name", ["cpu", "cuda", "triton"])
def test_unavailable_backend_by_name_is_an_error_not_a_fallback(name, monkeypatch):
    monkeypatch.setattr(backend, "_unavailable_reason", lambda n: None if n == "reference" else "not built")
    with pytest.raises(ops.BackendUnavailableError, match=f"backend '{name}' is unavailable: not built"):
        ops.fold(randn(1, 2, 4, 4), backend=name)
    with pytest.raises(ops.BackendUnavailableError):
        with ops.use_backend(name):
            pass
    assert ops.available_backends() == ("reference",)
    # auto falls back to what is available: it was not asked for by name.
    assert torch.equal(ops.fold(randn(1, 2, 4, 4), backend="auto"), ops.fold(randn(1, 2, 4, 4), backend="reference"))


def fake_backend(factor, seconds, calls):
    """A backend module whose fold scales by ``factor`` and takes at least ``seconds``."""
    def fold(args):
        calls.append(factor)
        time.sleep(seconds)
        return args.input * factor
    return types.SimpleNamespace(fold=fold, unavailable_reason=lambda name: None)


def test_auto_measures_each_signature_once_and_keeps_the_fastest(monkeypatch):
    calls = []
    monkeypatch.setitem(backend._modules, "cpu", fake_backend(2, 0.02, calls))
    monkeypatch.setitem(backend._modules, "reference", fake_backend(3, 0.0, calls))
    monkeypatch.setattr(backend, "_unavailable_reason", lambda name: None)
    monkeypatch.setenv("PIXELFOLDER_OPS_AUTO", "measure")
    x = torch.ones(1, 2, 4, 4)
    assert torch.equal(ops.fold(x), x * 3)  # the faster, although the preference order puts cpu first
    assert sorted(set(calls)) == [2, 3]
    assert list(ops.backend.auto_choices().values()) == ["reference"]
    calls.clear()
    assert torch.equal(ops.fold(x), x * 3) and calls == [3]  # chosen once per signature
    ops.fold(torch.ones(1, 2, 6, 4))
    assert len(ops.backend.auto_choices()) == 2  # a new shape is measured again
    monkeypatch.setenv("PIXELFOLDER_OPS_AUTO", "preference")
    assert torch.equal(ops.fold(x), x * 2)
    monkeypatch.setenv("PIXELFOLDER_OPS_AUTO", "fastest")
    with pytest.raises(ValueError, match="PIXELFOLDER_OPS_AUTO must be 'measure' or 'preference'"):
        ops.fold(x)


def test_auto_leaves_out_a_backend_that_cannot_run_the_arguments(monkeypatch):
    def fold(args):
        raise RuntimeError("fold: dtype Double is not supported")

    monkeypatch.setitem(backend._modules, "cpu", types.SimpleNamespace(fold=fold, unavailable_reason=lambda n: None))
    monkeypatch.setattr(backend, "_unavailable_reason", lambda name: None)
    monkeypatch.setenv("PIXELFOLDER_OPS_AUTO", "measure")
    x = randn(1, 2, 4, 4)
    assert torch.equal(ops.fold(x), ops.fold(x, backend="reference"))
    assert list(ops.backend.auto_choices().values()) == ["reference"]
    monkeypatch.setitem(backend._modules, "reference", types.SimpleNamespace(fold=fold))
    ops.backend.clear_auto_choices()
    with pytest.raises(RuntimeError, match="dtype Double is not supported"):  # none can: the preferred one's error
        ops.fold(x)


def test_unknown_backend_is_an_error():
    with pytest.raises(ValueError, match="unknown backend 'fast'"):
        ops.set_backend("fast")
