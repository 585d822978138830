"""Reference StyledConv: the official layer's ops, one after another."""
from .fold import unfold_channels
from .fused_leaky_relu import leaky_relu
from .modulated_conv2d import modulated_conv


def styled_conv2d(args):
    out = modulated_conv(args.input, args.weight, args.styles, args.demodulate, args.up, 1, args.resample_kernel,
                         args.eps)
    if args.noise is not None:
        out = out + args.noise_strength * args.noise
    out = leaky_relu(out, args.bias, args.negative_slope, args.gain, args.clamp)
    return unfold_channels(out) if args.unfold_output else out
