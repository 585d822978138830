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


@pytest.mark.parametrize("backend", ops.available_backends())
@pytest.mark.parametrize("case, call, argument", BAD_CALLS, ids=[f"{i}-{case}" for i, (case, *_) in
                                                                   enumerate(BAD_CALLS)])
def test_bad_arguments_are_the_same_value_error_on_every_backend(backend, case, call, argument):
    with pytest.raises(ValueError, match=f"argument '{argument}' must be") as error:
        call(backend)
    # The same words whatever the backend: the public function raised it.
    with pytest.raises(ValueError) as reference_error:
        call("reference")
    assert str(error.value) == str(reference_error.value)


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
