"""Bad arguments to the public ops raise the same ValueError, naming the op and the argument, on every
backend that can run here (reference, cpu, and triton under its interpreter): the public functions check
them before any backend runs. Tensors with a zero-sized dimension are refused everywhere."""
import pytest
import torch

import pixelfolder_ops as ops


def randn(*shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(len(shape)))


BLUR = ops.make_resample_kernel([1, 3, 3, 1])

# (what is wrong, the call, the argument the error must name)
BAD_CALLS = [
    ("negative slope", lambda b: ops.fused_leaky_relu(randn(2, 3, 4, 4), randn(3), -1, backend=b), "negative_slope"),
    ("NaN slope", lambda b: ops.fused_leaky_relu(randn(2, 3, 4, 4), randn(3), float("nan"), backend=b),
     "negative_slope"),
    ("zero gain", lambda b: ops.fused_leaky_relu(randn(2, 3, 4, 4), randn(3), 0.2, 0.0, backend=b), "scale"),
    ("empty batch", lambda b: ops.fused_leaky_relu(randn(0, 3, 4, 4), randn(3), backend=b), "input"),
    ("zero channels", lambda b: ops.fused_leaky_relu(randn(2, 0, 4, 4), randn(0), backend=b), "input"),
    ("zero height", lambda b: ops.fold(randn(1, 3, 0, 4), backend=b), "input"),
    ("empty batch", lambda b: ops.unfold(randn(0, 4, 2, 2), backend=b), "input"),
    ("empty batch", lambda b: ops.upfirdn2d(randn(0, 3, 4, 4), BLUR, up=2, pad=(2, 1), backend=b), "input"),
    ("pad given as bools", lambda b: ops.upfirdn2d(randn(1, 3, 4, 4), BLUR, pad=(True, False), backend=b), "pad"),
    ("up given as a bool", lambda b: ops.upfirdn2d(randn(1, 3, 4, 4), BLUR, up=True, backend=b), "up"),
    ("empty kernel", lambda b: ops.upfirdn2d(randn(1, 3, 4, 4), randn(0, 0), backend=b), "kernel"),
    ("empty batch", lambda b: ops.modulated_conv2d(randn(0, 4, 8, 8), randn(5, 4, 3, 3), randn(0, 4), backend=b),
     "input"),
    ("zero output channels",
     lambda b: ops.modulated_conv2d(randn(2, 4, 8, 8), randn(0, 4, 3, 3), randn(2, 4), backend=b), "weight"),
    ("zero width", lambda b: ops.modulated_conv2d(randn(2, 4, 8, 0), randn(5, 4, 3, 3), randn(2, 4), backend=b),
     "input"),
    ("all-zero resample kernel", lambda b: ops.modulated_conv2d(randn(2, 4, 8, 8), randn(5, 4, 3, 3), randn(2, 4),
                                                               up=2, resample_kernel=(0, 0, 0, 0), backend=b),
     "resample_kernel"),
    ("zero-sum resample kernel", lambda b: ops.modulated_conv2d(randn(2, 4, 8, 8), randn(5, 4, 3, 3), randn(2, 4),
                                                               down=2, resample_kernel=(1, -1), backend=b),
     "resample_kernel"),
    ("up given as a bool", lambda b: ops.modulated_conv2d(randn(2, 4, 8, 8), randn(5, 4, 3, 3), randn(2, 4), up=True,
                                                          backend=b), "up/down"),
    ("negative eps", lambda b: ops.modulated_conv2d(randn(2, 4, 8, 8), randn(5, 4, 3, 3), randn(2, 4), eps=-1,
                                                    backend=b), "eps"),
    ("negative slope", lambda b: ops.styled_conv2d(randn(2, 4, 8, 8), randn(8, 4, 3, 3), randn(2, 4), bias=randn(8),
                                                   negative_slope=-1, backend=b), "negative_slope"),
    ("infinite gain", lambda b: ops.styled_conv2d(randn(2, 4, 8, 8), randn(8, 4, 3, 3), randn(2, 4), bias=randn(8),
                                                  gain=float("inf"), backend=b), "gain"),
    ("empty batch", lambda b: ops.styled_conv2d(randn(0, 4, 8, 8), randn(8, 4, 3, 3), randn(0, 4), backend=b),
     "input"),
    ("zero-sum resample kernel", lambda b: ops.styled_conv2d(randn(2, 4, 8, 8), randn(8, 4, 3, 3), randn(2, 4), up=2,
                                                            resample_kernel=torch.tensor([1.0, -1.0]), backend=b),
     "resample_kernel"),
    ("empty batch", lambda b: ops.to_rgb(randn(0, 4, 8, 8), randn(3, 4, 1, 1), randn(0, 4), randn(3), backend=b),
     "input"),
    ("zero height", lambda b: ops.to_rgb(randn(2, 4, 0, 8), randn(3, 4, 1, 1), randn(2, 4), randn(3), backend=b),
     "input"),
    ("zero channels", lambda b: ops.fourier_embedding(randn(0, 2), randn(0), 4, 4, backend=b), "weight"),
    ("height given as a bool", lambda b: ops.fourier_embedding(randn(3, 2), randn(3), True, 4, backend=b), "height"),
]


@pytest.mark.needs_backend
@pytest.mark.parametrize("backend", ops.backend.KNOWN_BACKENDS)
@pytest.mark.parametrize("case, call, argument", BAD_CALLS, ids=[f"{i}-{case}" for i, (case, *_) in
                                                                   enumerate(BAD_CALLS)])
def test_bad_arguments_are_the_same_value_error_on_every_backend(backend, case, call, argument):
    op = next(name for name in call.__code__.co_names if name in ops.__all__)  # the op the call makes
    with pytest.raises(ValueError, match=f"^{op}: argument '{argument}' must be") as error:
        call(backend)
    # The same words whatever the backend: the public function raised it.
    with pytest.raises(ValueError) as reference_error:
        call("reference")
    assert str(error.value) == str(reference_error.value)


@pytest.mark.needs_backend
@pytest.mark.parametrize("backend", ["cpu", "triton"])
def test_a_gradient_asked_of_a_fixed_filter_is_refused(backend):
    # The compiled and Triton backends keep resampling filters fixed: a gradient asked of one is an
    # error, never a silent None.
    device = "cuda" if backend == "triton" and torch.cuda.is_available() else "cpu"
    skip_kernel = (4 * BLUR).to(device).requires_grad_()
    tensors = [randn(*shape).to(device) for shape in ((2, 4, 8, 8), (3, 4, 1, 1), (2, 4), (3,), (2, 3, 4, 4))]
    output = ops.to_rgb(*tensors, skip_kernel, backend=backend)
    with pytest.raises(RuntimeError, match="to_rgb has no gradient for its 'skip_kernel'"):
        output.sum().backward()


def test_make_resample_kernel_refuses_taps_it_cannot_normalise():
    with pytest.raises(ValueError, match="make_resample_kernel: argument 'kernel' must be a filter of finite taps"):
        ops.make_resample_kernel([1.0, float("inf")])
    with pytest.raises(ValueError, match="non-zero sum"):
        ops.make_resample_kernel(torch.zeros(3, 3))
    torch.testing.assert_close(ops.make_resample_kernel([1, 1]), torch.full((2, 2), 0.25))


def test_valid_edge_values_still_run():
    # Zero slope (ReLU), zero eps, and a kernel with negative taps but a positive sum are all valid.
    x = randn(1, 2, 4, 4)
    torch.testing.assert_close(ops.fused_leaky_relu(x, None, 0.0, 1.0, backend="reference"), x.clamp(min=0))
    out = ops.modulated_conv2d(randn(1, 2, 4, 4), randn(3, 2, 3, 3), randn(1, 2), eps=0, up=2,
                               resample_kernel=(-1, 3, 3, -1), backend="reference")
    assert out.shape == (1, 3, 8, 8) and torch.isfinite(out).all()


# (the call, its whole message): the op, the argument, what was expected and what was given.
EXACT_MESSAGES = [
    (lambda: ops.fourier_embedding(randn(3, 2, 1), randn(3), 4, 4),
     "fourier_embedding: argument 'weight' must be a 2-D tensor, got shape (3, 2, 1) (3-D)"),
    (lambda: ops.fourier_embedding(randn(3, 3), randn(3), 4, 4),
     "fourier_embedding: argument 'weight' must be of shape (C, 2), got shape (3, 3)"),
    (lambda: ops.fourier_embedding(randn(3, 2), randn(3, 1), 4, 4),
     "fourier_embedding: argument 'bias' must be a 1-D tensor, got shape (3, 1) (2-D)"),
    (lambda: ops.fourier_embedding(randn(3, 2), randn(4), 4, 4),
     "fourier_embedding: argument 'bias' must be (3,), got (4,)"),
    (lambda: ops.fourier_embedding(randn(3, 2), randn(3).double(), 4, 4),
     "fourier_embedding: argument 'bias' must be of weight's dtype (torch.float32), got dtype torch.float64"),
    (lambda: ops.fourier_embedding(randn(3, 2), randn(3), 4, 0),
     "fourier_embedding: argument 'width' must be a positive int, got 0"),
    (lambda: ops.fourier_embedding(randn(3, 2), randn(3), 2.0, 4),
     "fourier_embedding: argument 'height' must be a positive int, got 2.0"),
    (lambda: ops.unfold(randn(4, 2, 2)), "unfold: argument 'input' must be a 4-D tensor, got shape (4, 2, 2) (3-D)"),
    (lambda: ops.fold(randn(1, 3, 0, 4)),
     "fold: argument 'input' must be a tensor with no zero-sized dimension, got shape (1, 3, 0, 4)"),
    (lambda: ops.unfold(randn(1, 6, 2, 2)),
     "unfold: argument 'input' must have a channel count divisible by 4, got shape (1, 6, 2, 2)"),
    (lambda: ops.fold(randn(1, 3, 5, 4)), "fold: argument 'input' must have even height and width, got shape (1, 3, 5, 4)"),
    (lambda: ops.fold(randn(1, 3, 4, 5)), "fold: argument 'input' must have even height and width, got shape (1, 3, 4, 5)"),
    (lambda: ops.fused_leaky_relu([1.0]), "fused_leaky_relu: argument 'input' must be a torch.Tensor, got list"),
    (lambda: ops.fused_leaky_relu(torch.ones(2, 3, dtype=torch.int64)), "fused_leaky_relu: argument 'input' must be "
     "a floating-point tensor (float16, bfloat16, float32 or float64), got torch.int64"),
    (lambda: ops.fused_leaky_relu(randn(4), randn(1)), "fused_leaky_relu: argument 'input' must have a channel "
     "dimension (dim 1) to add a bias to, got shape (4,)"),
    (lambda: ops.fused_leaky_relu(randn(2, 3), randn(3, 1)),
     "fused_leaky_relu: argument 'bias' must be a 1-D tensor, got shape (3, 1) (2-D)"),
    (lambda: ops.fused_leaky_relu(randn(2, 3), randn(4)), "fused_leaky_relu: argument 'bias' must be (3,), got (4,)"),
    (lambda: ops.fused_leaky_relu(randn(2, 3), randn(3).double()),
     "fused_leaky_relu: argument 'bias' must be of input's dtype (torch.float32), got dtype torch.float64"),
    (lambda: ops.fused_leaky_relu(randn(2, 3), None, -1),
     "fused_leaky_relu: argument 'negative_slope' must be a finite number >= 0, got -1"),
    (lambda: ops.fused_leaky_relu(randn(2, 3), None, 0.2, 0.0),
     "fused_leaky_relu: argument 'scale' must be a finite number > 0, got 0.0"),
    (lambda: ops.fused_leaky_relu(randn(2, 3), None, 0.2, True),
     "fused_leaky_relu: argument 'scale' must be a finite number > 0, got True"),
    (lambda: ops.upfirdn2d(randn(3, 4, 4), BLUR), "upfirdn2d: argument 'input' must be a 4-D tensor, got shape "
     "(3, 4, 4) (3-D)"),
    (lambda: ops.upfirdn2d(randn(1, 3, 4, 4), randn(4)),
     "upfirdn2d: argument 'kernel' must be a 2-D tensor, got shape (4,) (1-D)"),
    (lambda: ops.upfirdn2d(randn(1, 3, 4, 4), BLUR.double()),
     "upfirdn2d: argument 'kernel' must be of input's dtype (torch.float32), got dtype torch.float64"),
    (lambda: ops.upfirdn2d(randn(1, 3, 4, 4), BLUR, up=(1, 2, 3)),
     "upfirdn2d: argument 'up' must be an int or a pair of ints, got (1, 2, 3)"),
    (lambda: ops.upfirdn2d(randn(1, 3, 4, 4), BLUR, down=(1, 0)), "upfirdn2d: argument 'down' must be at least 1, "
     "got (1, 0)"),
    (lambda: ops.upfirdn2d(randn(1, 3, 4, 4), BLUR, pad=(1, 1, 1)),
     "upfirdn2d: argument 'pad' must be a tuple of 2 or 4 ints, got (1, 1, 1)"),
    (lambda: ops.upfirdn2d(randn(1, 3, 4, 4), BLUR, pad=2), "upfirdn2d: argument 'pad' must be a tuple of 2 or 4 ints, "
     "got 2"),
    (lambda: ops.upfirdn2d(randn(1, 3, 4, 4), BLUR, pad=(-1, 0, -1, -1)), "upfirdn2d: arguments 'pad' (-1, 0, -1, -1) "
     "and 'kernel' (4, 4) leave no output for an input of shape (1, 3, 4, 4) with up=(1, 1)"),
    (lambda: ops.upfirdn2d(randn(1, 3, 4, 4), BLUR, pad=(-1, 0, 0, 0)), "upfirdn2d: arguments 'pad' (-1, 0, 0, 0) "
     "and 'kernel' (4, 4) leave no output for an input of shape (1, 3, 4, 4) with up=(1, 1)"),
    (lambda: ops.upfirdn2d(randn(1, 3, 4, 4), BLUR, pad=(0, -1, 0, 0)), "upfirdn2d: arguments 'pad' (0, -1, 0, 0) "
     "and 'kernel' (4, 4) leave no output for an input of shape (1, 3, 4, 4) with up=(1, 1)"),
    (lambda: ops.upfirdn2d(randn(1, 3, 4, 4), BLUR, pad=(0, 0, 0, -1)), "upfirdn2d: arguments 'pad' (0, 0, 0, -1) "
     "and 'kernel' (4, 4) leave no output for an input of shape (1, 3, 4, 4) with up=(1, 1)"),
    (lambda: ops.modulated_conv2d(randn(2, 4, 8, 8), randn(5, 4, 3), randn(2, 4)),
     "modulated_conv2d: argument 'weight' must be a 4-D tensor, got shape (5, 4, 3) (3-D)"),
    (lambda: ops.modulated_conv2d(randn(2, 4, 8, 8), randn(5, 4, 3, 3), randn(2, 4, 1)),
     "modulated_conv2d: argument 'styles' must be a 2-D tensor, got shape (2, 4, 1) (3-D)"),
    (lambda: ops.modulated_conv2d(randn(2, 4, 8, 8), randn(5, 4, 3, 3).double(), randn(2, 4)),
     "modulated_conv2d: argument 'weight' must be of input's dtype (torch.float32), got dtype torch.float64"),
    (lambda: ops.fused_leaky_relu(randn(2, 3), randn(3).to("meta")),
     "fused_leaky_relu: argument 'bias' must be on input's device (cpu), got a tensor on meta"),
    (lambda: ops.make_resample_kernel(torch.ones(2, 2, 2)),
     "make_resample_kernel: argument 'kernel' must be a non-empty 1-D or 2-D filter, got shape (2, 2, 2)"),
    (lambda: ops.make_resample_kernel(torch.ones(0)),
     "make_resample_kernel: argument 'kernel' must be a non-empty 1-D or 2-D filter, got shape (0,)"),
    (lambda: ops.make_resample_kernel([]), "make_resample_kernel: argument 'kernel' must be a non-empty 1-D or 2-D "
     "filter, got []"),
    (lambda: ops.make_resample_kernel([1, "a"]), "make_resample_kernel: argument 'kernel' must be a 1-D or 2-D "
     "filter, as numbers or a tensor, got [1, 'a']"),
    (lambda: ops.modulated_conv2d(randn(2, 4, 8, 8), randn(5, 3, 3, 3), randn(2, 4)), "modulated_conv2d: argument "
     "'weight' must be of shape (C_out, 4, k, k) to match input's channels, got shape (5, 3, 3, 3)"),
    (lambda: ops.modulated_conv2d(randn(2, 4, 8, 8), randn(5, 4, 3, 3), randn(2, 3)),
     "modulated_conv2d: argument 'styles' must be (2, 4), got (2, 3)"),
    (lambda: ops.modulated_conv2d(randn(2, 4, 8, 8), randn(5, 4, 3, 3), randn(2, 4).double()),
     "modulated_conv2d: argument 'styles' must be of input's dtype (torch.float32), got dtype torch.float64"),
    (lambda: ops.modulated_conv2d(randn(2, 4, 8, 8), randn(5, 4, 3, 3), randn(2, 4), up=2, down=2),
     "modulated_conv2d: argument 'up/down' must be 1 or 2, and not both 2, got up=2, down=2"),
    (lambda: ops.modulated_conv2d(randn(2, 4, 8, 8), randn(5, 4, 3, 3), randn(2, 4), down=3),
     "modulated_conv2d: argument 'up/down' must be 1 or 2, and not both 2, got up=1, down=3"),
    (lambda: ops.modulated_conv2d(randn(2, 4, 8, 8), randn(5, 4, 2, 2), randn(2, 4)),
     "modulated_conv2d: argument 'weight' must be a square kernel of odd size, got shape (5, 4, 2, 2)"),
    (lambda: ops.modulated_conv2d(randn(2, 4, 8, 8), randn(5, 4, 1, 3), randn(2, 4)),
     "modulated_conv2d: argument 'weight' must be a square kernel of odd size, got shape (5, 4, 1, 3)"),
    (lambda: ops.modulated_conv2d(randn(2, 4, 7, 8), randn(5, 4, 3, 3), randn(2, 4), down=2),
     "modulated_conv2d: argument 'input' must be of even height and width for down=2, got shape (2, 4, 7, 8)"),
    (lambda: ops.modulated_conv2d(randn(2, 4, 8, 7), randn(5, 4, 3, 3), randn(2, 4), down=2),
     "modulated_conv2d: argument 'input' must be of even height and width for down=2, got shape (2, 4, 8, 7)"),
    (lambda: ops.modulated_conv2d(randn(2, 4, 8, 8), randn(5, 4, 3, 3), randn(2, 4), eps=float("nan")),
     "modulated_conv2d: argument 'eps' must be a finite number >= 0, got nan"),
    (lambda: ops.styled_conv2d(randn(2, 4, 8, 8), randn(8, 4, 3, 3), randn(2, 4), noise=randn(2, 1, 8, 8)),
     "styled_conv2d: argument 'noise_strength' must be given exactly when 'noise' is, got only one of the two"),
    (lambda: ops.styled_conv2d(randn(2, 4, 8, 8), randn(8, 4, 3, 3), randn(2, 4), randn(2, 1, 8, 8, 1), randn(1)),
     "styled_conv2d: argument 'noise' must be a 4-D tensor, got shape (2, 1, 8, 8, 1) (5-D)"),
    (lambda: ops.styled_conv2d(randn(2, 4, 8, 8), randn(8, 4, 3, 3), randn(2, 4), randn(2, 1, 8, 8), randn(1), up=2),
     "styled_conv2d: argument 'noise' must be of shape (2 or 1, 1, 16, 16), got shape (2, 1, 8, 8)"),
    (lambda: ops.styled_conv2d(randn(2, 4, 8, 6), randn(8, 4, 3, 3), randn(2, 4), randn(3, 1, 8, 6), randn(1)),
     "styled_conv2d: argument 'noise' must be of shape (2 or 1, 1, 8, 6), got shape (3, 1, 8, 6)"),
    (lambda: ops.styled_conv2d(randn(2, 4, 8, 8), randn(8, 4, 3, 3), randn(2, 4), randn(2, 1, 8, 8), randn(2)),
     "styled_conv2d: argument 'noise_strength' must be 1, got 2"),
    (lambda: ops.styled_conv2d(randn(2, 4, 8, 8), randn(8, 4, 3, 3), randn(2, 4), randn(2, 1, 8, 8), [0.1]),
     "styled_conv2d: argument 'noise_strength' must be a torch.Tensor, got list"),
    (lambda: ops.styled_conv2d(randn(2, 4, 8, 8), randn(8, 4, 3, 3), randn(2, 4), randn(2, 1, 8, 8).double(),
                               randn(1)),
     "styled_conv2d: argument 'noise' must be of input's dtype (torch.float32), got dtype torch.float64"),
    (lambda: ops.styled_conv2d(randn(2, 4, 8, 8), randn(8, 4, 3, 3), randn(2, 4), randn(2, 1, 8, 8),
                               randn(1).double()),
     "styled_conv2d: argument 'noise_strength' must be of input's dtype (torch.float32), got dtype torch.float64"),
    (lambda: ops.styled_conv2d(randn(2, 4, 8, 8), randn(8, 4, 3, 3), randn(2, 4), bias=randn(8, 1)),
     "styled_conv2d: argument 'bias' must be a 1-D tensor, got shape (8, 1) (2-D)"),
    (lambda: ops.styled_conv2d(randn(2, 4, 8, 8), randn(8, 4, 3, 3), randn(2, 4), bias=randn(4)),
     "styled_conv2d: argument 'bias' must be (8,), got (4,)"),
    (lambda: ops.styled_conv2d(randn(2, 4, 8, 8), randn(8, 4, 3, 3), randn(2, 4), bias=randn(8).double()),
     "styled_conv2d: argument 'bias' must be of input's dtype (torch.float32), got dtype torch.float64"),
    (lambda: ops.styled_conv2d(randn(2, 4, 8, 8), randn(6, 4, 3, 3), randn(2, 4), unfold_output=True),
     "styled_conv2d: argument 'weight' must be a C_out divisible by 4 for unfold_output, got shape (6, 4, 3, 3)"),
    (lambda: ops.styled_conv2d(randn(2, 4, 8, 8), randn(8, 4, 3, 3), randn(2, 4), negative_slope=-0.5),
     "styled_conv2d: argument 'negative_slope' must be a finite number >= 0, got -0.5"),
    (lambda: ops.styled_conv2d(randn(2, 4, 8, 8), randn(8, 4, 3, 3), randn(2, 4), gain=0),
     "styled_conv2d: argument 'gain' must be a finite number > 0, got 0"),
    (lambda: ops.styled_conv2d(randn(2, 4, 8, 8), randn(8, 4, 3, 3), randn(2, 4), eps=-1e-8),
     "styled_conv2d: argument 'eps' must be a finite number >= 0, got -1e-08"),
    (lambda: ops.styled_conv2d(randn(2, 4, 8, 8), randn(8, 4, 3, 3), randn(2, 4), up=2, resample_kernel=(1, -1)),
     "styled_conv2d: argument 'resample_kernel' must be a filter of finite taps with a non-zero sum (it is "
     "normalised to sum 1), got (1, -1)"),
    (lambda: ops.to_rgb(randn(2, 4, 8, 8), randn(3, 4, 3, 3), randn(2, 4), randn(3)),
     "to_rgb: argument 'weight' must be a 1x1 kernel, got shape (3, 4, 3, 3)"),
    (lambda: ops.to_rgb(randn(2, 4, 8, 8), randn(3, 4, 1, 1), randn(2, 4), randn(3, 1)),
     "to_rgb: argument 'bias' must be a 1-D tensor, got shape (3, 1) (2-D)"),
    (lambda: ops.to_rgb(randn(2, 4, 8, 8), randn(3, 4, 1, 1), randn(2, 4), randn(4)),
     "to_rgb: argument 'bias' must be (3,), got (4,)"),
    (lambda: ops.to_rgb(randn(2, 4, 8, 8), randn(3, 4, 1, 1), randn(2, 4), randn(3).double()),
     "to_rgb: argument 'bias' must be of input's dtype (torch.float32), got dtype torch.float64"),
    (lambda: ops.to_rgb(randn(2, 4, 8, 6), randn(3, 4, 1, 1), randn(2, 4), randn(3), randn(2, 3, 8, 6), BLUR),
     "to_rgb: argument 'skip' must be (2, 3, 4, 3), got (2, 3, 8, 6)"),
    (lambda: ops.to_rgb(randn(2, 4, 8, 6), randn(3, 4, 1, 1), randn(2, 4), randn(3), randn(2, 3, 4, 3)),
     "to_rgb: argument 'skip' must be (2, 3, 8, 6), got (2, 3, 4, 3)"),
    (lambda: ops.to_rgb(randn(2, 4, 8, 8), randn(3, 4, 1, 1), randn(2, 4), randn(3), randn(2, 3, 8, 8, 1)),
     "to_rgb: argument 'skip' must be a 4-D tensor, got shape (2, 3, 8, 8, 1) (5-D)"),
    (lambda: ops.to_rgb(randn(2, 4, 8, 8), randn(3, 4, 1, 1), randn(2, 4), randn(3), randn(2, 3, 8, 8).double()),
     "to_rgb: argument 'skip' must be of input's dtype (torch.float32), got dtype torch.float64"),
    (lambda: ops.to_rgb(randn(2, 4, 8, 8), randn(3, 4, 1, 1), randn(2, 4), randn(3), randn(2, 3, 4, 4), randn(4)),
     "to_rgb: argument 'skip_kernel' must be a 2-D tensor, got shape (4,) (1-D)"),
    (lambda: ops.to_rgb(randn(2, 4, 8, 8), randn(3, 4, 1, 1), randn(2, 4), randn(3), randn(2, 3, 4, 4),
                        BLUR.double()),
     "to_rgb: argument 'skip_kernel' must be of input's dtype (torch.float32), got dtype torch.float64"),
]


@pytest.mark.parametrize("call, message", EXACT_MESSAGES, ids=[message for _, message in EXACT_MESSAGES])
def test_bad_arguments_get_the_whole_message(call, message):
    with pytest.raises(ValueError) as error:
        call()
    assert str(error.value) == message


def test_a_one_pixel_grid_and_a_1d_activation_without_bias_are_valid():
    assert ops.fourier_embedding(randn(3, 2), randn(3), 1, 1).shape == (1, 3, 1, 1)
    x = randn(5)
    torch.testing.assert_close(ops.fused_leaky_relu(x), torch.nn.functional.leaky_relu(x, 0.2) * 2 ** 0.5)


# Every op with a backend that does not exist: the op passes its ``backend`` on.
OP_CALLS = {
    "fold": lambda **b: ops.fold(randn(1, 2, 4, 4), **b),
    "unfold": lambda **b: ops.unfold(randn(1, 4, 2, 2), **b),
    "fused_leaky_relu": lambda **b: ops.fused_leaky_relu(randn(1, 2, 4, 4), randn(2), **b),
    "upfirdn2d": lambda **b: ops.upfirdn2d(randn(1, 2, 4, 4), BLUR, up=2, pad=(2, 1), **b),
    "modulated_conv2d": lambda **b: ops.modulated_conv2d(randn(1, 2, 4, 4), randn(3, 2, 3, 3), randn(1, 2), **b),
    "styled_conv2d": lambda **b: ops.styled_conv2d(randn(1, 2, 4, 4), randn(4, 2, 3, 3), randn(1, 2), **b),
    "to_rgb": lambda **b: ops.to_rgb(randn(1, 2, 4, 4), randn(3, 2, 1, 1), randn(1, 2), randn(3), **b),
    "fourier_embedding": lambda **b: ops.fourier_embedding(randn(3, 2), randn(3), 4, 4, **b),
}


@pytest.mark.parametrize("op", OP_CALLS)
def test_every_op_runs_on_the_backend_it_is_given(op):
    assert torch.isfinite(OP_CALLS[op](backend="reference")).all()
    with pytest.raises(ValueError, match="unknown backend 'nonsense'"):
        OP_CALLS[op](backend="nonsense")


def test_pairs_and_pads_are_given_x_first():
    x, one = randn(1, 1, 4, 6), torch.ones(1, 1)
    assert ops.upfirdn2d(x, one, up=(2, 1)).shape == (1, 1, 4, 12)
    assert ops.upfirdn2d(x, one, down=(1, 2)).shape == (1, 1, 2, 6)
    assert ops.upfirdn2d(x, one, pad=(1, 0, 0, 0)).shape == (1, 1, 4, 7)
    assert ops.upfirdn2d(x, one, pad=(0, 0, 0, 2)).shape == (1, 1, 6, 6)
    assert ops.upfirdn2d(x, torch.ones(1, 3) / 3, pad=(1, 1)).shape == (1, 1, 6, 6)  # (p0, p1) on both axes


def test_edge_values_that_are_valid():
    # An output of one pixel (the kernel as large as the padded input), and up-sampling that makes room.
    assert ops.upfirdn2d(randn(1, 1, 4, 4), BLUR).shape == (1, 1, 1, 1)
    assert ops.upfirdn2d(randn(1, 1, 4, 4), BLUR, up=2).shape == (1, 1, 5, 5)
    # Kernels as nested lists, one tap, or on the meta device (whose taps cannot be read).
    torch.testing.assert_close(ops.make_resample_kernel([[1, 2], [3, 4]]), torch.tensor([[1, 2], [3, 4]]) / 10)
    torch.testing.assert_close(ops.make_resample_kernel(torch.tensor([2.0])), torch.ones(1, 1))
    kernel = ops.make_resample_kernel(torch.ones(4, device="meta"), torch.float64, "meta")
    assert kernel.shape == (4, 4) and kernel.dtype == torch.float64 and kernel.device.type == "meta"
    assert ops.make_resample_kernel([1, 1], torch.float16, "meta").device.type == "meta"
    # The resampling kernel is made on the input's device.
    from pixelfolder_ops.modulated_conv2d import check_modulated_conv2d
    meta = torch.empty(2, 4, 8, 8, device="meta")
    assert check_modulated_conv2d("op", meta, torch.empty(5, 4, 3, 3, device="meta"), torch.empty(2, 4, device="meta"),
                                  2, 1, (1, 3, 3, 1)).device.type == "meta"


def test_a_missing_tensor_is_passed_over_and_the_next_one_still_checked():
    from pixelfolder_ops import _checks
    with pytest.raises(ValueError, match="^op: argument 'c' must be of a's dtype"):
        _checks.same_dtype_device("op", "a", randn(2), b=None, c=randn(2).double())
