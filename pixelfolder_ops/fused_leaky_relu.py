"""Bias + leaky ReLU + gain (+ clamp), with the StyleGAN2-family signature."""
import math
from typing import NamedTuple, Optional

import torch

from . import _checks
from ._protocol import Tensor, public_op


class FusedLeakyReLUArguments(NamedTuple):
    input: Tensor
    bias: Optional[Tensor] = None
    negative_slope: float = 0.2
    scale: float = math.sqrt(2)
    clamp: Optional[float] = None


def check_clamp(op, clamp):
    """None (no clamp) or a positive finite number, as a float."""
    return None if clamp is None else _checks.number(op, "clamp", clamp, above=0)


@public_op(FusedLeakyReLUArguments)
def fused_leaky_relu(args):
    """leaky_relu(input + bias, negative_slope) * scale, with ``bias`` (C,) along dimension 1, then
    clamped to [-clamp, clamp] when ``clamp`` is given (NVlabs' ``conv_clamp``); ``negative_slope`` >= 0
    and ``scale`` > 0 (the backward tells the two sides apart by the output's sign)."""
    op = "fused_leaky_relu"
    input, bias = args.input, args.bias
    _checks.tensor(op, "input", input)
    if input.dim() < 2 and bias is not None:
        raise ValueError(f"fused_leaky_relu: argument 'input' must have a channel dimension (dim 1) "
                         f"to add a bias to, got shape {tuple(input.shape)}")
    if bias is not None:
        _checks.tensor(op, "bias", bias, ndim=1)
        _checks.size(op, "bias", tuple(bias.shape), (input.shape[1],))
        _checks.same_dtype_device(op, "input", input, bias=bias)
    return args._replace(negative_slope=_checks.number(op, "negative_slope", args.negative_slope, minimum=0),
                         scale=_checks.number(op, "scale", args.scale, above=0), clamp=check_clamp(op, args.clamp))


class FusedLeakyReLU(torch.nn.Module):
    """A learned per-channel bias (initialised 0) followed by ``fused_leaky_relu``."""

    def __init__(self, channel, bias=True, negative_slope=0.2, scale=2 ** 0.5, clamp=None):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(channel)) if bias else None
        self.negative_slope = negative_slope
        self.scale = scale
        self.clamp = clamp

    def forward(self, input):
        bias = None if self.bias is None else self.bias.to(input.dtype)  # autocast: follow the input
        return fused_leaky_relu(input, bias, self.negative_slope, self.scale, self.clamp)
