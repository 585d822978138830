"""A whole StyledConv layer: modulated conv, noise injection, bias + leaky ReLU + gain (+ clamp), and an
optional pixel unfold of the result. One op, so a backend can run it as one kernel."""
import math
from typing import NamedTuple, Optional

from . import _checks
from ._protocol import Tensor, public_op
from .fused_leaky_relu import check_clamp
from .modulated_conv2d import check_modulated_conv2d


class StyledConv2dArguments(NamedTuple):
    input: Tensor
    weight: Tensor
    styles: Tensor
    noise: Optional[Tensor] = None
    noise_strength: Optional[Tensor] = None
    bias: Optional[Tensor] = None
    demodulate: bool = True
    up: int = 1
    # Taps (1-D or 2-D) or a tensor; checked into the normalised 2-D filter, None without up-sampling.
    resample_kernel: Optional[Tensor] = (1, 3, 3, 1)
    negative_slope: float = 0.2
    gain: float = math.sqrt(2)
    unfold_output: bool = False
    eps: float = 1e-8
    clamp: Optional[float] = None


def check_noise(op, noise, batch, height, width):
    """``noise`` (B or 1, 1, H, W): one map per image, or one for the whole batch."""
    _checks.tensor(op, "noise", noise, ndim=4)
    if noise.shape[1:] != (1, height, width) or noise.shape[0] not in (1, batch):
        _checks.fail(op, "noise", f"of shape ({batch} or 1, 1, {height}, {width})", f"shape {tuple(noise.shape)}")


@public_op(StyledConv2dArguments)
def styled_conv2d(args):
    """clamp?(unfold?(fused_leaky_relu(modulated_conv2d(input, weight, styles) + noise_strength * noise, bias))).

    noise: (B or 1, 1, H_out, W_out), scaled by ``noise_strength`` (a 1-element tensor); None adds
    none. bias: (C_out,) or None. ``unfold_output`` unfolds the result (C_out must divide by 4).
    ``clamp``: the result is clamped to [-clamp, clamp] after the gain (NVlabs' ``conv_clamp``)."""
    op = "styled_conv2d"
    input, weight, noise, noise_strength, bias = args.input, args.weight, args.noise, args.noise_strength, args.bias
    kernel = check_modulated_conv2d(op, input, weight, args.styles, args.up, 1, args.resample_kernel)
    out_channels = weight.shape[0]
    if (noise is None) != (noise_strength is None):
        _checks.fail(op, "noise_strength", "given exactly when 'noise' is", "only one of the two")
    if noise is not None:
        check_noise(op, noise, input.shape[0], input.shape[-2] * args.up, input.shape[-1] * args.up)
        _checks.tensor(op, "noise_strength", noise_strength)
        _checks.size(op, "noise_strength", noise_strength.numel(), 1)
        _checks.same_dtype_device(op, "input", input, noise=noise, noise_strength=noise_strength)
    if bias is not None:
        _checks.tensor(op, "bias", bias, ndim=1)
        _checks.size(op, "bias", tuple(bias.shape), (out_channels,))
        _checks.same_dtype_device(op, "input", input, bias=bias)
    if args.unfold_output and out_channels % 4:
        _checks.fail(op, "weight", "a C_out divisible by 4 for unfold_output", f"shape {tuple(weight.shape)}")
    return args._replace(
        demodulate=bool(args.demodulate), resample_kernel=kernel,
        negative_slope=_checks.number(op, "negative_slope", args.negative_slope, minimum=0),
        gain=_checks.number(op, "gain", args.gain, above=0), unfold_output=bool(args.unfold_output),
        eps=_checks.number(op, "eps", args.eps, minimum=0), clamp=check_clamp(op, args.clamp))
