"""The residual discriminator of StyleGAN2, as PixelFolder trains with it."""
import math

import torch
from torch import nn

from .layers import BLUR_KERNEL, ConvLayer, EqualLinear, channel_table, log2_size


class ResBlock(nn.Module):
    """3x3 ConvLayer, then a blurred stride-2 3x3 ConvLayer; a blurred stride-2 1x1 skip; sum / sqrt 2."""

    def __init__(self, in_channel, out_channel, blur_kernel=BLUR_KERNEL):
        super().__init__()
        self.conv1 = ConvLayer(in_channel, in_channel, 3, blur_kernel=blur_kernel)
        self.conv2 = ConvLayer(in_channel, out_channel, 3, downsample=True, blur_kernel=blur_kernel)
        self.skip = ConvLayer(in_channel, out_channel, 1, downsample=True, activate=False, blur_kernel=blur_kernel)

    def forward(self, input):
        return (self.conv2(self.conv1(input)) + self.skip(input)) / math.sqrt(2)


class Discriminator(nn.Module):
    """1x1 ConvLayer from RGB, a ResBlock per resolution from ``size`` down to 8, minibatch standard
    deviation, a 3x3 ConvLayer at 4x4 and two linear layers to one logit per image."""

    def __init__(self, size=256, channel_multiplier=2, width=1.0, stddev_group=4, blur_kernel=BLUR_KERNEL):
        super().__init__()
        log_size = log2_size("Discriminator", size, 8)
        self.size = size
        channels = channel_table(channel_multiplier, width)
        in_channel = channels[size]
        convs = [ConvLayer(3, in_channel, 1)]
        for resolution in (2 ** i for i in range(log_size, 2, -1)):
            out_channel = channels[resolution // 2]
            convs.append(ResBlock(in_channel, out_channel, blur_kernel))
            in_channel = out_channel
        self.convs = nn.Sequential(*convs)
        self.stddev_group = stddev_group
        self.stddev_feat = 1
        self.final_conv = ConvLayer(in_channel + 1, channels[4], 3)
        self.final_linear = nn.Sequential(EqualLinear(channels[4] * 4 * 4, channels[4], activation="fused_lrelu"),
                                          EqualLinear(channels[4], 1))

    def minibatch_stddev(self, out):
        """Append one feature map: the std over groups of images, averaged over channels and pixels."""
        batch, channel, height, width = out.shape
        group = min(batch, self.stddev_group)
        if batch % group:
            raise ValueError(f"Discriminator: the batch ({batch}) must be divisible by the minibatch-stddev "
                             f"group ({group})")
        stddev = out.view(group, -1, self.stddev_feat, channel // self.stddev_feat, height, width)
        stddev = torch.sqrt(stddev.var(0, unbiased=False) + 1e-8)
        stddev = stddev.mean([2, 3, 4], keepdim=True).squeeze(2)
        return torch.cat([out, stddev.repeat(group, 1, height, width)], dim=1)

    def forward(self, input):
        if input.dim() != 4 or input.shape[1] != 3 or input.shape[-1] != self.size or input.shape[-2] != self.size:
            raise ValueError(f"Discriminator: argument 'input' must be of shape (B, 3, {self.size}, {self.size}), "
                             f"got {tuple(input.shape)}")
        out = self.final_conv(self.minibatch_stddev(self.convs(input)))
        return self.final_linear(out.flatten(1))
