"""Modulated conv: the StyledConv kernel with its epilogue off (no noise, no bias, identity activation)
when there is no resampling; StyleGAN2's up / down variants run the reference."""
from ..reference.modulated_conv2d import modulated_conv2d as reference_modulated_conv2d
from ..styled_conv2d import StyledConv2dArguments
from .styled_conv2d import styled_conv2d


def modulated_conv2d(args):
    if args.up == 1 and args.down == 1:
        return styled_conv2d(StyledConv2dArguments(args.input, args.weight, args.styles, demodulate=args.demodulate,
                                                   resample_kernel=None, negative_slope=1.0, gain=1.0, eps=args.eps))
    return reference_modulated_conv2d(args)
