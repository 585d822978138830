"""Reference modulated conv: the official data flow, a grouped convolution with one group per
image whose weights are modulated (and demodulated) per image."""
import torch
import torch.nn.functional as F

from .upfirdn2d import resample


def modulated_conv2d(args):
    return modulated_conv(args.input, args.weight, args.styles, args.demodulate, args.up, args.down,
                          args.resample_kernel, args.eps)


def modulated_conv(input, weight, styles, demodulate, up, down, kernel, eps):
    """The modulated conv on its own, for the reference's layers built on it."""
    batch, in_channels, height, width = input.shape
    out_channels, _, kernel_size, _ = weight.shape
    w = weight[None] * styles[:, None, :, None, None]  # (B, C_out, C_in, k, k)
    if demodulate:
        w = w * torch.rsqrt(w.square().sum(dim=(2, 3, 4)) + eps)[:, :, None, None, None]
    x = input.reshape(1, batch * in_channels, height, width)
    if up == 2:
        # conv_transpose2d takes (C_in, C_out / groups, k, k) per group.
        w = w.transpose(1, 2).reshape(batch * in_channels, out_channels, kernel_size, kernel_size)
        out = F.conv_transpose2d(x, w, stride=2, groups=batch)
        out = out.reshape(batch, out_channels, out.shape[-2], out.shape[-1])
        p = kernel.shape[0] - 2 - (kernel_size - 1)
        return resample(out, kernel * 4, (1, 1), (1, 1), ((p + 1) // 2 + 1, p // 2 + 1) * 2)
    w = w.reshape(batch * out_channels, in_channels, kernel_size, kernel_size)
    if down == 2:
        p = kernel.shape[0] - 2 + (kernel_size - 1)
        x = resample(x, kernel, (1, 1), (1, 1), ((p + 1) // 2, p // 2) * 2)
        out = F.conv2d(x, w, stride=2, groups=batch)
    else:
        out = F.conv2d(x, w, padding=kernel_size // 2, groups=batch)
    return out.reshape(batch, out_channels, out.shape[-2], out.shape[-1])
