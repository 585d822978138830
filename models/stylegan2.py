"""The StyleGAN2 generator (config-f channels), the paper's main convolutional baseline."""
from torch import nn

from .generator import ConstantNoise, StyleGenerator
from .layers import BLUR_KERNEL, ConstantInput, StyledConv, ToRGB, channel_table, log2_size


class StyleGAN2Generator(StyleGenerator):
    """A learned 4x4 constant, a StyledConv and a ToRGB at 4x4, then per resolution an up-sampling
    StyledConv (transposed conv + blur), a StyledConv and a ToRGB whose skip is upsampled x2.

    ``channel_base`` / ``channel_max``: NVlabs' channel rule instead of ``channel_multiplier``'s table
    (see ``channel_table``). ``conv_clamp``: every StyledConv's and ToRGB's output clamped to
    +-conv_clamp (NVlabs')."""

    def __init__(self, size=256, style_dim=512, n_mlp=8, channel_multiplier=2, lr_mlp=0.01, width=1.0,
                 blur_kernel=BLUR_KERNEL, channel_base=None, channel_max=512, conv_clamp=None):
        super().__init__(style_dim, n_mlp, lr_mlp)
        log_size = log2_size("StyleGAN2Generator", size, 8)
        self.size = size
        self.channels = channel_table(channel_multiplier, width, channel_base, channel_max)
        self.resolutions = [2 ** i for i in range(3, log_size + 1)]
        self.n_latent = 2 * log_size - 2
        layer = dict(blur_kernel=blur_kernel, clamp=conv_clamp)
        self.input = ConstantInput(self.channels[4], size=4)
        self.conv1 = StyledConv(self.channels[4], self.channels[4], 3, style_dim, **layer)
        self.to_rgb1 = ToRGB(self.channels[4], style_dim, upsample=False, clamp=conv_clamp)
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        in_channel = self.channels[4]
        for resolution in self.resolutions:
            out_channel = self.channels[resolution]
            self.convs.append(StyledConv(in_channel, out_channel, 3, style_dim, upsample=True, **layer))
            self.convs.append(StyledConv(out_channel, out_channel, 3, style_dim, **layer))
            self.to_rgbs.append(ToRGB(out_channel, style_dim, **layer))
            in_channel = out_channel
        self.noises = ConstantNoise(self.noise_shapes(1))

    def noise_shapes(self, batch):
        return [(batch, 1, 4, 4)] + [(batch, 1, r, r) for r in self.resolutions for _ in range(2)]

    def synthesis(self, latent, noise):
        out = self.conv1(self.input(latent.shape[0]), latent[:, 0], noise[0])
        skip = self.to_rgb1(out, latent[:, 1])
        stage_images = [skip]
        for j, to_rgb in enumerate(self.to_rgbs):
            out = self.convs[2 * j](out, latent[:, 2 * j + 1], noise[2 * j + 1])
            out = self.convs[2 * j + 1](out, latent[:, 2 * j + 2], noise[2 * j + 2])
            skip = to_rgb(out, latent[:, 2 * j + 3], skip)
            stage_images.append(skip)
        return skip, stage_images
