"""Reference upfirdn2d: zero insertion by a strided view, F.pad (negative pads crop), and one
depthwise strided convolution with the flipped kernel."""
import torch.nn.functional as F


def upfirdn2d(args):
    return resample(args.input, args.kernel, args.up, args.down, args.pad)


def resample(input, kernel, up, down, pad):
    """upfirdn2d on its own, for the reference's layers that resample."""
    (up_x, up_y), (down_x, down_y), (pad_x0, pad_x1, pad_y0, pad_y1) = up, down, pad
    batch, channels, height, width = input.shape
    x = input.reshape(batch * channels, 1, height, 1, width, 1)
    # Each input pixel followed by up - 1 zeros, along each axis.
    x = F.pad(x, (0, up_x - 1, 0, 0, 0, up_y - 1))
    x = x.reshape(batch * channels, 1, height * up_y, width * up_x)
    x = F.pad(x, (pad_x0, pad_x1, pad_y0, pad_y1))
    weight = kernel.flip((0, 1))[None, None]
    out = F.conv2d(x, weight, stride=(down_y, down_x))
    return out.reshape(batch, channels, out.shape[-2], out.shape[-1])
