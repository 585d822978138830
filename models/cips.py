"""CIPS-skip (Anokhin et al., CVPR 2021): every layer a per-pixel (1x1) modulated layer at full
resolution, one style vector for all of them."""
import torch
from torch import nn

from .generator import ConstantNoise, StyleGenerator
from .layers import ConstantInput, FourierCoordinateLayer, StyledConv, ToRGB, log2_size


class CIPS(StyleGenerator):
    """Fourier features and a learned coordinate embedding (hidden_size x size x size), merged by a
    1x1 StyledConv; then log2(size) - 1 blocks of two 1x1 StyledConvs and a ToRGB whose outputs are
    summed. ``width`` scales every channel count (small models for tests)."""

    n_latent = 1

    def __init__(self, size=256, hidden_size=512, style_dim=512, n_mlp=8, channel_multiplier=2, lr_mlp=0.01,
                 width=1.0):
        super().__init__(style_dim, n_mlp, lr_mlp)
        log_size = log2_size("CIPS", size, 4)
        self.size = size
        scaled = lambda c: max(4, int(round(c * width / 4)) * 4)  # noqa: E731
        hidden_size = scaled(hidden_size)
        block_channels = [512, 512, 512, 512, 256 * channel_multiplier, 128 * channel_multiplier,
                          64 * channel_multiplier, 32 * channel_multiplier, 16 * channel_multiplier]
        self.lff = FourierCoordinateLayer(hidden_size)
        self.emb = ConstantInput(hidden_size, size=size)
        in_channel = scaled(512)
        self.conv1 = StyledConv(2 * hidden_size, in_channel, 1, style_dim)
        self.linears = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        for block in range(log_size - 1):
            out_channel = scaled(block_channels[block])
            self.linears.append(StyledConv(in_channel, out_channel, 1, style_dim))
            self.linears.append(StyledConv(out_channel, out_channel, 1, style_dim))
            self.to_rgbs.append(ToRGB(out_channel, style_dim, upsample=False))
            in_channel = out_channel
        self.noises = ConstantNoise(self.noise_shapes(1))

    def noise_shapes(self, batch):
        return [(batch, 1, self.size, self.size)] * (1 + len(self.linears))

    def synthesis(self, latent, noise):
        batch, w = latent.shape[0], latent[:, 0]
        # The input does not depend on z: made for one image, then broadcast over the batch.
        features = torch.cat([self.lff(self.size, self.size), self.emb(1)], dim=1)
        x = self.conv1(features.expand(batch, -1, -1, -1), w, noise[0])
        rgb, stage_images = None, []
        for block, to_rgb in enumerate(self.to_rgbs):
            x = self.linears[2 * block](x, w, noise[1 + 2 * block])
            x = self.linears[2 * block + 1](x, w, noise[2 + 2 * block])
            rgb = to_rgb(x, w, rgb)
            stage_images.append(rgb)
        return rgb, stage_images
