"""A whole ToRGB layer: modulated 1x1 conv (not demodulated), bias (+ clamp), and the previous RGB skip
(x2-upsampled with upfirdn2d, or as it is) added. One op, so a backend can run it as one kernel."""
from typing import NamedTuple, Optional

from . import _checks
from ._protocol import Tensor, public_op
from .fused_leaky_relu import check_clamp
from .modulated_conv2d import check_modulated_conv2d


class ToRgbArguments(NamedTuple):
    input: Tensor
    weight: Tensor
    styles: Tensor
    bias: Tensor
    skip: Optional[Tensor] = None
    skip_kernel: Optional[Tensor] = None
    clamp: Optional[float] = None


def skip_pad(skip_kernel):
    """The pads (x0, x1, y0, y1) of the skip's x2 up-sampling: (2, 1) per axis for a 4-tap kernel
    (csrc/composite.cpp's to_rgb_skip_pad states the same for the compiled kernels)."""
    p = skip_kernel.shape[0] - 2
    return [(p + 1) // 2 + 1, p // 2] * 2


@public_op(ToRgbArguments)
def to_rgb(args):
    """clamp?(modulated_conv2d(input, weight, styles, demodulate=False) + bias) + up(skip).

    weight (C_rgb, C_in, 1, 1); bias (C_rgb,). skip: (B, C_rgb, H/2, W/2) upsampled x2 by upfirdn2d with
    the 2-D ``skip_kernel`` (gain included, e.g. 4 * outer([1, 3, 3, 1]) / 64), or (B, C_rgb, H, W)
    added as it is when ``skip_kernel`` is None. ``clamp``: the layer's own output (before the skip is
    added) is clamped to [-clamp, clamp], as NVlabs' ToRGB does with ``conv_clamp``."""
    op = "to_rgb"
    input, weight, bias, skip, skip_kernel = args.input, args.weight, args.bias, args.skip, args.skip_kernel
    check_modulated_conv2d(op, input, weight, args.styles, 1, 1, None)
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
    return args._replace(clamp=check_clamp(op, args.clamp))
