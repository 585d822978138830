"""A whole ToRGB layer: modulated 1x1 conv (not demodulated), bias, and the previous RGB skip
(x2-upsampled with upfirdn2d, or as it is) added. One op, so a backend can run it as one kernel."""
from . import _checks
from .backend import call
from .modulated_conv2d import check_modulated_conv2d


def to_rgb(input, weight, styles, bias, skip=None, skip_kernel=None, *, backend=None):
    """modulated_conv2d(input, weight, styles, demodulate=False) + bias + up(skip).

    weight (C_rgb, C_in, 1, 1); bias (C_rgb,). skip: (B, C_rgb, H/2, W/2) upsampled x2 by upfirdn2d with
    the 2-D ``skip_kernel`` (gain included, e.g. 4 * outer([1, 3, 3, 1]) / 64), or (B, C_rgb, H, W)
    added as it is when ``skip_kernel`` is None."""
    op = "to_rgb"
    check_modulated_conv2d(op, input, weight, styles, 1, 1, None)
    batch, rgb_channels = input.shape[0], weight.shape[0]
    if weight.shape[-1] != 1:
        _checks.fail(op, "weight", "a 1x1 kernel", f"shape {tuple(weight.shape)}")
    _checks.tensor(op, "bias", bias, ndim=1)
    _checks.size(op, "bias", tuple(bias.shape), (rgb_channels,))
    _checks.same_dtype_device(op, "input", input, bias=bias)
    if skip is not None:
        factor = 1 if skip_kernel is None else 2
        expected = (batch, rgb_channels, input.shape[-2] // factor, input.shape[-1] // factor)
        _checks.tensor(op, "skip", skip, ndim=4)
        _checks.size(op, "skip", tuple(skip.shape), expected)
        _checks.same_dtype_device(op, "input", input, skip=skip)
        if skip_kernel is not None:
            _checks.tensor(op, "skip_kernel", skip_kernel, ndim=2)
            _checks.same_dtype_device(op, "input", input, skip_kernel=skip_kernel)
    return call(backend, "to_rgb", input.device, input, weight, styles, bias, skip, skip_kernel)
