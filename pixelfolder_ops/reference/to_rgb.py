"""Reference ToRGB: the official layer's ops, one after another."""
from .modulated_conv2d import modulated_conv2d
from .upfirdn2d import upfirdn2d


def to_rgb(input, weight, styles, bias, skip, skip_kernel):
    out = modulated_conv2d(input, weight, styles, False, 1, 1, None, 1e-8) + bias.view(1, -1, 1, 1)
    if skip is not None:
        if skip_kernel is not None:
            p = skip_kernel.shape[0] - 2  # x2 up-sampling pads: (2, 1) for a 4-tap kernel
            skip = upfirdn2d(skip, skip_kernel, (2, 2), (1, 1), ((p + 1) // 2 + 1, p // 2) * 2)
        out = out + skip
    return out
