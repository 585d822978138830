"""A whole StyledConv layer: modulated conv, noise injection, bias + leaky ReLU + gain, and an
optional pixel unfold of the result. One op, so a backend can run it as one kernel."""
import math

from . import _checks
from .backend import call
from .modulated_conv2d import check_modulated_conv2d


def styled_conv2d(input, weight, styles, noise=None, noise_strength=None, bias=None, demodulate=True, up=1,
                  resample_kernel=(1, 3, 3, 1), negative_slope=0.2, gain=math.sqrt(2), unfold_output=False,
                  eps=1e-8, *, backend=None):
    """unfold?(fused_leaky_relu(modulated_conv2d(input, weight, styles) + noise_strength * noise, bias)).

    noise: (B or 1, 1, H_out, W_out), scaled by ``noise_strength`` (a 1-element tensor); None adds
    none. bias: (C_out,) or None. ``unfold_output`` unfolds the result (C_out must divide by 4)."""
    op = "styled_conv2d"
    kernel = check_modulated_conv2d(op, input, weight, styles, up, 1, resample_kernel)
    out_channels = weight.shape[0]
    out_h, out_w = input.shape[-2] * up, input.shape[-1] * up
    if (noise is None) != (noise_strength is None):
        _checks.fail(op, "noise_strength", "given exactly when 'noise' is", "only one of the two")
    if noise is not None:
        _checks.tensor(op, "noise", noise, ndim=4)
        if noise.shape[1:] != (1, out_h, out_w) or noise.shape[0] not in (1, input.shape[0]):
            _checks.fail(op, "noise", f"of shape ({input.shape[0]} or 1, 1, {out_h}, {out_w})",
                         f"shape {tuple(noise.shape)}")
        _checks.tensor(op, "noise_strength", noise_strength)
        _checks.size(op, "noise_strength", noise_strength.numel(), 1)
        _checks.same_dtype_device(op, "input", input, noise=noise, noise_strength=noise_strength)
    if bias is not None:
        _checks.tensor(op, "bias", bias, ndim=1)
        _checks.size(op, "bias", tuple(bias.shape), (out_channels,))
        _checks.same_dtype_device(op, "input", input, bias=bias)
    if unfold_output and out_channels % 4:
        _checks.fail(op, "weight", "a C_out divisible by 4 for unfold_output", f"shape {tuple(weight.shape)}")
    negative_slope = _checks.number(op, "negative_slope", negative_slope, minimum=0)
    gain = _checks.number(op, "gain", gain, above=0)
    eps = _checks.number(op, "eps", eps, minimum=0)
    return call(backend, "styled_conv2d", input.device, input, weight, styles, noise, noise_strength, bias,
                bool(demodulate), up, kernel, negative_slope, gain, bool(unfold_output), eps)
