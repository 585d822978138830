"""The residual discriminator of StyleGAN2, as PixelFolder trains with it."""
import math

import torch
from torch import nn

from .layers import BLUR_KERNEL, ConvLayer, EqualLinear, channel_table, log2_size


class ResBlock(nn.Module):
    """3x3 ConvLayer, then a blurred stride-2 3x3 ConvLayer; a blurred stride-2 1x1 skip; sum / sqrt 2.

    ``clamp`` (NVlabs' conv_clamp) applies to the two 3x3 layers, as in NVlabs' resnet block (its skip
    has none). NVlabs scales the second one by sqrt 1/2 before the sum and clamps it there to
    +-conv_clamp * sqrt 1/2: the same as clamping it to +-conv_clamp before this block's division."""

    def __init__(self, in_channel, out_channel, blur_kernel=BLUR_KERNEL, clamp=None):
        super().__init__()
        self.conv1 = ConvLayer(in_channel, in_channel, 3, blur_kernel=blur_kernel, clamp=clamp)
        self.conv2 = ConvLayer(in_channel, out_channel, 3, downsample=True, blur_kernel=blur_kernel, clamp=clamp)
        self.skip = ConvLayer(in_channel, out_channel, 1, downsample=True, activate=False, blur_kernel=blur_kernel)

    def forward(self, input):
        return (self.conv2(self.conv1(input)) + self.skip(input)) / math.sqrt(2)


class Discriminator(nn.Module):
    """1x1 ConvLayer from RGB, a ResBlock per resolution from ``size`` down to 8, minibatch standard
    deviation, a 3x3 ConvLayer at 4x4 and two linear layers to one logit per image.

    ``stddev_group``: images per minibatch-stddev group (None: the whole batch); ``stddev_feat``: the
    feature maps it appends (0: none). ``channel_base`` / ``channel_max``: NVlabs' channel rule (see
    ``channel_table``). ``conv_clamp``: every conv layer's output clamped to +-conv_clamp (NVlabs')."""

    def __init__(self, size=256, channel_multiplier=2, width=1.0, stddev_group=4, blur_kernel=BLUR_KERNEL,
                 stddev_feat=1, channel_base=None, channel_max=512, conv_clamp=None):
        super().__init__()
        log_size = log2_size("Discriminator", size, 8)
        self.size = size
        channels = channel_table(channel_multiplier, width, channel_base, channel_max)
        in_channel = channels[size]
        convs = [ConvLayer(3, in_channel, 1, clamp=conv_clamp)]
        for resolution in (2 ** i for i in range(log_size, 2, -1)):
            out_channel = channels[resolution // 2]
            convs.append(ResBlock(in_channel, out_channel, blur_kernel, clamp=conv_clamp))
            in_channel = out_channel
        self.convs = nn.Sequential(*convs)
        self.stddev_group = stddev_group
        self.stddev_feat = stddev_feat
        self.final_conv = ConvLayer(in_channel + stddev_feat, channels[4], 3, clamp=conv_clamp)
        self.final_linear = nn.Sequential(EqualLinear(channels[4] * 4 * 4, channels[4], activation="fused_lrelu"),
                                          EqualLinear(channels[4], 1))

    def minibatch_stddev(self, out):
        """Append ``stddev_feat`` feature maps: the std over groups of images, averaged over channels
        (in ``stddev_feat`` groups) and pixels."""
        if not self.stddev_feat:
            return out
        batch, channel, height, width = out.shape
        group = batch if self.stddev_group is None else min(batch, self.stddev_group)
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
