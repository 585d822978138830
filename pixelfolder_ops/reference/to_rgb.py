"""Reference ToRGB: the official layer's ops, one after another."""
from .modulated_conv2d import modulated_conv
from ..to_rgb import skip_pad
from .upfirdn2d import resample


def to_rgb(args):
    out = modulated_conv(args.input, args.weight, args.styles, False, 1, 1, None, 1e-8) + args.bias.view(1, -1, 1, 1)
    if args.clamp is not None:
        out = out.clamp(-args.clamp, args.clamp)
    skip = args.skip
    if skip is not None:
        if args.skip_kernel is not None:
            skip = resample(skip, args.skip_kernel, (2, 2), (1, 1), skip_pad(args.skip_kernel))
        out = out + skip
    return out
