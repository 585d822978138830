"""Bias + leaky ReLU + gain, with the StyleGAN2-family signature."""
import torch

from . import _checks
from .backend import call


def fused_leaky_relu(input, bias=None, negative_slope=0.2, scale=2 ** 0.5, *, backend=None):
    """leaky_relu(input + bias, negative_slope) * scale, with ``bias`` (C,) along dimension 1;
    ``negative_slope`` >= 0 and ``scale`` > 0 (the backward tells the two sides apart by the output's sign)."""
    _checks.tensor("fused_leaky_relu", "input", input)
    if input.dim() < 2 and bias is not None:
        raise ValueError(f"fused_leaky_relu: argument 'input' must have a channel dimension (dim 1) "
                         f"to add a bias to, got shape {tuple(input.shape)}")
    if bias is not None:
        _checks.tensor("fused_leaky_relu", "bias", bias, ndim=1)
        _checks.size("fused_leaky_relu", "bias", tuple(bias.shape), (input.shape[1],))
        _checks.same_dtype_device("fused_leaky_relu", "input", input, bias=bias)
    negative_slope = _checks.number("fused_leaky_relu", "negative_slope", negative_slope, minimum=0)
    scale = _checks.number("fused_leaky_relu", "scale", scale, above=0)
    return call(backend, "fused_leaky_relu", input.device, input, bias, negative_slope, scale)


class FusedLeakyReLU(torch.nn.Module):
    """A learned per-channel bias (initialised 0) followed by ``fused_leaky_relu``."""

    def __init__(self, channel, bias=True, negative_slope=0.2, scale=2 ** 0.5):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(channel)) if bias else None
        self.negative_slope = negative_slope
        self.scale = scale

    def forward(self, input):
        bias = None if self.bias is None else self.bias.to(input.dtype)  # autocast: follow the input
        return fused_leaky_relu(input, bias, self.negative_slope, self.scale)
