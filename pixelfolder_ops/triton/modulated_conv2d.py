"""Modulated conv: the StyledConv kernel with its epilogue off (no noise, no bias, identity activation)
when there is no resampling; StyleGAN2's up / down variants run the reference."""
from ..reference.modulated_conv2d import modulated_conv2d as reference_modulated_conv2d
from .styled_conv2d import styled_conv2d_op


def modulated_conv2d(input, weight, styles, demodulate, up, down, kernel, eps):
    if up == 1 and down == 1:
        return styled_conv2d_op(input, weight, styles, None, None, None, demodulate, 1.0, 1.0, False, eps)
    return reference_modulated_conv2d(input, weight, styles, demodulate, up, down, kernel, eps)
