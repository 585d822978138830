"""INR-GAN (Skorokhodov, Ignatyev, Elhoseiny, "Adversarial Generation of Continuous Images", CVPR
2021): the multi-scale INR generator of the authors' release (universome/inr-gan, built on
StyleGAN2-ADA: ``src/training/networks.py``, ``src/training/layers.py``, ``configs/inr-gan.yml``).

Every layer is per-pixel: a fully-connected layer applied to each pixel's features (a 1x1 conv),
whose weight is modulated per image by factorized multiplicative modulation (FMM): an affine head of
w predicts A (c_out x r) and B (r x c_in), the layer uses W * (1 + A B / sqrt(r)), demodulated row by
row, then bias + leaky ReLU. Pixels never mix: between scales the features and the running RGB are
upsampled by nearest neighbour.

Configuration (``configs/inr-gan.yml``: ``fmaps: 1``, so c(r) = min(32768 / r, 512), the channel
table with multiplier 2; FMM rank 10, ``activation: demod``; ``use_noise: false``; ToRGB skips):

- the input block works at 32 x 32 (``input.resolution: 32``): StyleGAN2-ADA's blocks 4, 8, 16 and
  32 all run there. Block 4: the coordinate embedding at 32 (168 channels) -> FMM (168 -> 512) ->
  ToRGB. Blocks 8, 16, 32: FMM (512 -> 512), FMM (512 -> 512), ToRGB; no coordinates
  (``per_resolution``: they join only where the resolution grows).
- blocks 64, 128, 256: nearest x2 upsampling, concat of the block's coordinate embedding e(r),
  FMM (c(r/2) + e(r) -> c(r)), FMM (c(r) -> c(r)), one more FMM (c(r) -> c(r)) at 128 and 256
  (``num_extra_convs``), ToRGB added to the upsampled running RGB.
- coordinate embeddings: [sin, cos] of fixed frequencies, then a learned constant C x r x r.
  r <= 64 (``low_res_cfg``): the logarithmic basis, ceil(log2 r) octaves along each of 4 directions
  (the axes and both diagonals), and a 128-channel constant: 168 channels at 32, 176 at 64.
  r >= 128 (``medium_res_cfg``): ceil(log2 r) octaves along the 2 axes, 32 random frequencies
  of std sqrt 10 (fixed buffers), and a 64-channel constant: 156 channels at 128, 160 at 256.
- each FMM layer: its own affine head w -> (c_in + c_out) r (bias initialised 0), a weight
  c_out x c_in and a bias c_out. Each ToRGB: a modulated 1x1 conv (not demodulated) and a bias.
- 15 FMM layers; n_latent = 16 (one style per FMM layer and one for the last ToRGB).
- the mapping network is this repository's, 8 layers of 512 at lr_mul 0.01. (The authors' launcher
  builds 2 layers at 256 with ``--cfg=auto``: 1,575,936 fewer parameters.) The fixed grid is
  ``fourier_embedding``'s, linspace(-1, 1); the authors' starts at -1 and stops a pixel short of 1.

Parameters at 256, width 1: 74,012,509 =
    2,101,248  mapping network
  61,826,760  FMM affine heads (the "hypernetwork"): 513 x 10 x 12,052 (the sum of c_in + c_out)
   2,667,136  FMM per-pixel weights 2,661,376 and biases 5,760
   5,898,240  coordinate constants: 128 x 32^2 + 128 x 64^2 + 64 x 128^2 + 64 x 256^2
   1,519,125  ToRGBs: affines 1,510,272, weights 8,832, biases 21

This is 33.02 M (31 %) below the 107.03 M of PixelFolder's Table 1, and no configuration in the
authors' repository gives 107.03 M: the released config counts 72,436,573 with its 2-layer mapping
network; the archived submission-time models count 37,620,533
(``archive/pl-implementation``, ``stylegan2_inrgan``) and 114,344,968
(``archive/original-implementation``: a 3-layer, 1024-wide hypernetwork MLP whose linear output
predicts every INR factor, at 128 and 256).

GMACs (fvcore, batch 1, 256 x 256): 14.99, against the paper's 38.76. The per-pixel products
dominate, so the paper's figure pins the widths: with ``channel_multiplier=4`` (c(128) = 512,
c(256) = 256, i.e. ``fmaps: 2``) this model gives 38.53 GMACs (38.67 with the bilinear upsampling
of INR-GAN-bil, whose FIDs the paper quotes) but 86,155,997 parameters, still 20.87 M short.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

import pixelfolder_ops as ops

from .generator import ConstantNoise, StyleGenerator
from .layers import EqualLinear, ToRGB, channel_table, log2_size

RANDOM_FOURIER_SCALE = math.sqrt(10)


def logarithmic_frequencies(size, diagonals):
    """The (F, 2) basis of (x, y) frequencies 2 pi / 4 * 2^k, k < ceil(log2 size), along the two
    axes and, with ``diagonals``, along both diagonals, whose period is sqrt 2 longer."""
    octaves = 2.0 ** torch.arange(math.ceil(math.log2(size)))
    directions = [(0.0, 1.0), (1.0, 0.0)]
    if diagonals:
        directions += [(-0.5, 0.5), (0.5, 0.5)]  # the unit diagonals divided by sqrt 2
    return torch.cat([(math.pi / 2) * octaves[:, None] * torch.tensor([d]) for d in directions])


class CoordinateEmbedding(nn.Module):
    """[sin, cos] of fixed Fourier frequencies over the size x size grid, then a learned constant."""

    memory_format = torch.contiguous_format  # of the features; see layers.to_channels_last

    def __init__(self, size, constant_channels, diagonals, random_frequencies):
        super().__init__()
        frequencies = logarithmic_frequencies(size, diagonals)
        if random_frequencies:
            frequencies = torch.cat([frequencies, torch.randn(random_frequencies, 2) * RANDOM_FOURIER_SCALE])
        # cos(t) = sin(t + pi/2): one sine op makes both halves.
        self.register_buffer("frequencies", torch.cat([frequencies, frequencies]))
        self.register_buffer("phases", torch.cat([torch.zeros(len(frequencies)),
                                                  torch.full((len(frequencies),), math.pi / 2)]))
        self.constant = nn.Parameter(torch.randn(1, constant_channels, size, size))
        self.size = size
        self.channels = len(self.phases) + constant_channels

    def forward(self, batch):
        fourier = ops.fourier_embedding(self.frequencies, self.phases, self.size, self.size)
        features = torch.cat([fourier, self.constant], dim=1).contiguous(memory_format=self.memory_format)
        return features.expand(batch, -1, -1, -1)


class FMMLinear(nn.Module):
    """Per-pixel linear layer (a 1x1 conv) with factorized multiplicative modulation, demodulation,
    then fused bias + leaky ReLU."""

    def __init__(self, in_channel, out_channel, style_dim, rank):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channel, in_channel))
        # Bias 0, not AdaIN's 1: the factors are centred on 0 and the weight is scaled by 1 + A B.
        self.affine = EqualLinear(style_dim, (in_channel + out_channel) * rank, bias_init=0)
        self.activate = ops.FusedLeakyReLU(out_channel)
        self.rank = rank

    def forward(self, input, style):
        batch, in_channel, height, width = input.shape
        out_channel = self.weight.shape[0]
        factors = self.affine(style)
        left = factors[:, :out_channel * self.rank].view(batch, out_channel, self.rank)
        right = factors[:, out_channel * self.rank:].view(batch, self.rank, in_channel)
        # With N(0, 1) factors the product has std sqrt(rank): rescale it to unit std.
        modulation = torch.bmm(left, right) / math.sqrt(self.rank)
        weight = self.weight * (1 + modulation)
        weight = weight / (weight.norm(dim=2, keepdim=True) + 1e-8)
        if ops.output_memory_format(input) == torch.channels_last:
            # (B, H*W, C_in) pixels by (C_in, C_out): the output comes out channels-last too.
            pixels = input.permute(0, 2, 3, 1).reshape(batch, height * width, in_channel)
            out = torch.bmm(pixels, weight.transpose(1, 2)).view(batch, height, width, out_channel).permute(0, 3, 1, 2)
        else:
            out = torch.bmm(weight, input.flatten(2)).view(batch, out_channel, height, width)
        return self.activate(out)

    def extra_repr(self):
        return f"{self.weight.shape[1]}, {self.weight.shape[0]}, rank={self.rank}"


class INRGAN(StyleGenerator):
    """The INR-GAN generator (see the module docstring for the configuration).

    size: a power of two >= 8. input_size: the resolution of the input block (32; the blocks of
    smaller StyleGAN2 resolutions all run at it). rank: the FMM rank. extra_layer_resolutions: the
    blocks with one more FMM layer. width: scales every channel count and constant embedding (small
    models for tests). channel_multiplier: as StyleGAN2's, with channels capped at 512.
    """

    LOW_RES_CONSTANT = 128
    HIGH_RES_CONSTANT = 64
    HIGH_RES_RANDOM_FREQUENCIES = 32
    HIGH_RES = 128  # from here on the high-resolution coordinate configuration applies

    def __init__(self, size=256, style_dim=512, n_mlp=8, lr_mlp=0.01, rank=10, input_size=32,
                 extra_layer_resolutions=(128, 256), channel_multiplier=2, width=1.0):
        super().__init__(style_dim, n_mlp, lr_mlp)
        log_size = log2_size("INRGAN", size, 8)
        self.size = size
        self.input_size = min(input_size, size)
        table = channel_table(channel_multiplier, width)
        # StyleGAN2-ADA caps the channels at 512 (channel_max); no effect with multiplier 2.
        self.channels = {r: min(c, table[4]) for r, c in table.items()}
        scaled = lambda c: max(8, int(round(c * width / 8)) * 8)  # noqa: E731

        def embedding(resolution):
            if resolution < self.HIGH_RES:
                return CoordinateEmbedding(resolution, scaled(self.LOW_RES_CONSTANT), True, 0)
            return CoordinateEmbedding(resolution, scaled(self.HIGH_RES_CONSTANT), False,
                                       scaled(self.HIGH_RES_RANDOM_FREQUENCIES))

        # One block per StyleGAN2 resolution 4 ... size, working at block_resolutions[i]; the blocks
        # below input_size work at input_size, and only the first of them takes the coordinates.
        self.input = embedding(self.input_size)
        self.embeddings = nn.ModuleDict()
        self.blocks = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        self.block_resolutions = []
        in_channel = 0
        for resolution in (2 ** i for i in range(2, log_size + 1)):
            working = max(resolution, self.input_size)
            out_channel = self.channels[resolution]
            if in_channel == 0:
                layers = [FMMLinear(self.input.channels, out_channel, style_dim, rank)]
            else:
                if working > self.input_size:  # upsampled: concat this resolution's coordinates
                    self.embeddings[str(working)] = embedding(working)
                    in_channel += self.embeddings[str(working)].channels
                layers = [FMMLinear(in_channel, out_channel, style_dim, rank),
                          FMMLinear(out_channel, out_channel, style_dim, rank)]
                if working in extra_layer_resolutions:
                    layers.append(FMMLinear(out_channel, out_channel, style_dim, rank))
            self.blocks.append(nn.ModuleList(layers))
            self.to_rgbs.append(ToRGB(out_channel, style_dim, upsample=False))
            self.block_resolutions.append(working)
            in_channel = out_channel
        # As StyleGAN2-ADA: one style per FMM layer, and the last ToRGB's; every other ToRGB shares
        # the style of the layer that follows it.
        self.n_latent = sum(len(block) for block in self.blocks) + 1
        self.noises = ConstantNoise(self.noise_shapes(1))  # none: INR-GAN has no noise inputs

    def noise_shapes(self, batch):
        return []

    def synthesis(self, latent, noise):
        batch = latent.shape[0]
        x, rgb, stage_images = self.input(batch), None, []
        style_index = 0
        for working, block, to_rgb in zip(self.block_resolutions, self.blocks, self.to_rgbs):
            if x.shape[-1] < working:
                x = F.interpolate(x, scale_factor=2, mode="nearest")
                rgb = F.interpolate(rgb, scale_factor=2, mode="nearest")
                x = torch.cat([x, self.embeddings[str(working)](batch)], dim=1)
            for layer in block:
                x = layer(x, latent[:, style_index])
                style_index += 1
            rgb = to_rgb(x, latent[:, style_index], rgb)
            stage_images.append(rgb)
        return rgb, stage_images
