"""PixelFolder (He et al., ECCV 2022), exactly as the official implementation computes it, with the
ablation variants of the paper's Tables 3 and 4 as options."""
import torch
import torch.nn.functional as F
from torch import nn

import pixelfolder_ops as ops

from .generator import ConstantNoise, StyleGenerator
from .layers import (BLUR_KERNEL, Blur, ConstantInput, ConvLayer, FourierCoordinateLayer, StyledConv, ToRGB,
                     channel_table, downsample_blur_pad, log2_size)

FOLDS_PER_STAGE = 2

# The paper's ablation models (Tables 3 and 4) as constructor options.
VARIANTS = {
    "PixelFolder": {},
    "Fold+DeConv": {"upsampler": "deconv"},
    "Down-Sampling+DeConv": {"upsampler": "deconv", "positional_downsampler": "blur"},
    "w/o coordinate embeddings": {"coordinate_embedding": False},
    "w/o multi-stage connection": {"multistage_connection": False},
}


class PositionalFolding(nn.Module):
    """The positional branch of one stage: Fourier features (merged with the learned constant in
    stage 0), projected by a 1x1 ConvLayer, folded twice down to the stage's input resolution, then
    merged with the previous stage's output by ``conv_merge`` (stages > 0)."""

    def __init__(self, embedding_channels, folded_channels, folds, use_constant, downsampler):
        super().__init__()
        if use_constant:
            self.conv0 = ConvLayer(2 * embedding_channels, embedding_channels, 1)
        self.downsampler = downsampler
        # Folding multiplies channels by 4 per fold; blur down-sampling keeps them.
        projected = folded_channels // 4 ** folds if downsampler == "fold" else folded_channels
        self.conv1 = ConvLayer(embedding_channels, projected, 1)
        self.folds = folds
        if downsampler == "blur":
            self.blur = Blur(BLUR_KERNEL, downsample_blur_pad(1), down=2)
        # Stage 0 owns a conv_merge its forward never uses: it is in official checkpoints and counts.
        self.conv_merge = ConvLayer(2 * folded_channels, folded_channels, 1)

    def forward(self, embedding, constant=None, previous=None):
        """``embedding`` and ``constant`` may hold one image for the whole batch of ``previous``."""
        if constant is not None:
            embedding = self.conv0(torch.cat([embedding, constant], dim=1))
        out = self.conv1(embedding)
        for _ in range(self.folds):
            out = ops.fold(out) if self.downsampler == "fold" else self.blur(out)
        if previous is None:
            return out
        if out.shape[0] == previous.shape[0]:
            return self.conv_merge(torch.cat([out, previous], dim=1))
        # conv_merge(concat[pos, h]) = W_pos * pos + W_h * h: the W_pos half is computed once.
        conv, activate = self.conv_merge
        weight = conv.weight * conv.scale
        positional = F.conv2d(out, weight[:, :out.shape[1]])
        return activate(F.conv2d(previous, weight[:, out.shape[1]:]) + positional)


class PixelFolder(StyleGenerator):
    """The PixelFolder generator.

    size: 256, 512 or 1024 (any power of two >= 16). width: scales every channel count (small models
    for tests). The ablation options: ``upsampler`` "unfold" (the paper's) or "deconv" (a StyleGAN2
    up-sampling StyledConv per fold step); ``positional_downsampler`` "fold" or "blur";
    ``coordinate_embedding`` (stage 0's learned constant and its merge conv); ``multistage_connection``
    (False feeds zeros instead of the previous stage's output to conv_merge).

    The positional branch does not depend on z: it is computed once per call and broadcast over the
    batch (the same images). ``official_data_flow=True`` computes it once per image, as the official
    code does (the baseline of the speed benchmarks).
    """

    def __init__(self, size=256, style_dim=512, n_mlp=8, channel_multiplier=2, lr_mlp=0.01, width=1.0,
                 upsampler="unfold", positional_downsampler="fold", coordinate_embedding=True,
                 multistage_connection=True, official_data_flow=False, blur_kernel=BLUR_KERNEL):
        super().__init__(style_dim, n_mlp, lr_mlp)
        log_size = log2_size("PixelFolder", size, 16)
        if upsampler not in ("unfold", "deconv") or positional_downsampler not in ("fold", "blur"):
            raise ValueError(f"PixelFolder: upsampler must be 'unfold' or 'deconv' and positional_downsampler "
                             f"'fold' or 'blur', got {upsampler!r}, {positional_downsampler!r}")
        self.size = size
        self.upsampler = upsampler
        self.coordinate_embedding = coordinate_embedding
        self.multistage_connection = multistage_connection
        self.official_data_flow = official_data_flow
        self.channels = channel_table(channel_multiplier, width)
        num_stages = log_size // FOLDS_PER_STAGE - 1
        self.stage_resolutions = [2 ** (log_size - FOLDS_PER_STAGE * (num_stages - 1 - i)) for i in range(num_stages)]
        self.n_latent = 2 * FOLDS_PER_STAGE * num_stages + 1

        first = self.stage_resolutions[0]
        if coordinate_embedding:
            self.input = ConstantInput(self.channels[first], size=first)
        self.lffs = nn.ModuleList()
        self.posfolders = nn.ModuleList()
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        folded = first // 2 ** FOLDS_PER_STAGE
        for stage, resolution in enumerate(self.stage_resolutions):
            self.lffs.append(FourierCoordinateLayer(self.channels[resolution]))
            self.posfolders.append(PositionalFolding(self.channels[resolution], self.channels[folded], FOLDS_PER_STAGE,
                                                     use_constant=stage == 0 and coordinate_embedding,
                                                     downsampler=positional_downsampler))
            in_channel = self.channels[folded]
            for fold in range(FOLDS_PER_STAGE):
                out_channel = self.channels[folded * 2 ** (fold + 1)]
                if upsampler == "unfold":
                    self.convs.append(StyledConv(in_channel, out_channel, 3, style_dim, blur_kernel=blur_kernel))
                    self.convs.append(StyledConv(out_channel // 4, out_channel, 3, style_dim, blur_kernel=blur_kernel))
                else:
                    self.convs.append(StyledConv(in_channel, out_channel, 3, style_dim, upsample=True,
                                                 blur_kernel=blur_kernel))
                    self.convs.append(StyledConv(out_channel, out_channel, 3, style_dim, blur_kernel=blur_kernel))
                self.to_rgbs.append(ToRGB(out_channel, style_dim, blur_kernel=blur_kernel))
                in_channel = out_channel
            folded = resolution
        self.noises = ConstantNoise(self.noise_shapes(1))

    def noise_shapes(self, batch):
        shapes = []
        for resolution in self.stage_resolutions:
            low = resolution // 2 ** FOLDS_PER_STAGE
            for fold in range(FOLDS_PER_STAGE):
                high = low * 2
                first_resolution = low if self.upsampler == "unfold" else high
                shapes += [(batch, 1, first_resolution, first_resolution), (batch, 1, high, high)]
                low = high
        return shapes

    def synthesis(self, latent, noise):
        batch = latent.shape[0]
        positional_batch = batch if self.official_data_flow else 1
        out, skip, stage_images = None, None, []
        for stage, resolution in enumerate(self.stage_resolutions):
            embedding = self.lffs[stage](resolution, resolution).expand(positional_batch, -1, -1, -1)
            if stage == 0:
                constant = self.input(positional_batch) if self.coordinate_embedding else None
                out = self.posfolders[0](embedding, constant=constant).expand(batch, -1, -1, -1)
            else:
                previous = out if self.multistage_connection else torch.zeros_like(out)
                out = self.posfolders[stage](embedding, previous=previous)
            for fold in range(FOLDS_PER_STAGE):
                k = 2 * (FOLDS_PER_STAGE * stage + fold)
                out = self.convs[k](out, latent[:, k], noise[k], unfold_output=self.upsampler == "unfold")
                out = self.convs[k + 1](out, latent[:, k + 1], noise[k + 1])
                skip = self.to_rgbs[FOLDS_PER_STAGE * stage + fold](out, latent[:, k + 2], skip)
            stage_images.append(skip)
        return skip, stage_images

    @classmethod
    def variant(cls, name, **kwargs):
        """One of the paper's ablation models by its table name (see ``VARIANTS``)."""
        if name not in VARIANTS:
            raise ValueError(f"PixelFolder.variant: unknown variant {name!r}; expected one of {', '.join(VARIANTS)}")
        return cls(**{**VARIANTS[name], **kwargs})
