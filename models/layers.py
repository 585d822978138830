"""Building blocks of the StyleGAN2 family, on pixelfolder_ops. Module and parameter names follow
the official implementations, so their state dicts load with no key mapping.

Equalized learning rate everywhere: weights are stored N(0, 1) (divided by lr_mul for linear
layers) and scaled at run time by lr_mul / sqrt(fan_in); biases are scaled by lr_mul.
"""
import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn

import pixelfolder_ops as ops

BLUR_KERNEL = (1, 3, 3, 1)


class PixelNorm(nn.Module):
    def forward(self, input):
        return input * torch.rsqrt(torch.mean(input ** 2, dim=1, keepdim=True) + 1e-8)


class EqualLinear(nn.Module):
    def __init__(self, in_dim, out_dim, bias_init=0.0, lr_mul=1.0, activation=None):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim).div_(lr_mul))
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.activation = activation
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul

    def forward(self, input):
        bias = self.bias * self.lr_mul
        if self.activation:
            out = F.linear(input, self.weight * self.scale)
            # Under autocast the product is in half precision and the bias is not.
            return ops.fused_leaky_relu(out, bias.to(out.dtype))
        return F.linear(input, self.weight * self.scale, bias)

    def extra_repr(self):
        return f"{self.weight.shape[1]}, {self.weight.shape[0]}, lr_mul={self.lr_mul}, activation={self.activation}"


class EqualConv2d(nn.Module):
    """A conv without a bias (ConvLayer's activation holds it, as in StyleGAN2)."""

    def __init__(self, in_channel, out_channel, kernel_size, stride, padding):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channel, in_channel, kernel_size, kernel_size))
        self.scale = 1 / math.sqrt(in_channel * kernel_size ** 2)
        self.stride = stride
        self.padding = padding

    def forward(self, input):
        return F.conv2d(input, self.weight * self.scale, stride=self.stride, padding=self.padding)

    def extra_repr(self):
        w = self.weight.shape
        return f"{w[1]}, {w[0]}, {w[2]}, stride={self.stride}, padding={self.padding}"


class Blur(nn.Module):
    """upfirdn2d with a fixed FIR kernel (a buffer, as in official checkpoints), then ``down``-sampling."""

    def __init__(self, kernel, pad, down=1):
        super().__init__()
        self.register_buffer("kernel", ops.make_resample_kernel(kernel))
        self.pad, self.down = tuple(pad), down

    def forward(self, input):
        return ops.upfirdn2d(input, self.kernel.to(input.dtype), down=self.down, pad=self.pad)


class UpsampleKernel(nn.Module):
    """The x2 up-sampling FIR kernel of ToRGB's skip, times 4 (the up-sampling's zeros take 3 of every 4
    pixels), a buffer where official checkpoints hold it (``upsample.kernel``); ``to_rgb`` applies it."""

    def __init__(self, kernel):
        super().__init__()
        self.register_buffer("kernel", ops.make_resample_kernel(kernel) * 4)


def downsample_blur_pad(kernel_size, kernel=BLUR_KERNEL, factor=2):
    """The blur pads that precede a stride-2 conv of ``kernel_size``."""
    p = len(kernel) - factor + kernel_size - 1
    return (p + 1) // 2, p // 2


class ConvLayer(nn.Sequential):
    """[Blur] -> EqualConv2d (no bias) -> FusedLeakyReLU (with the bias, and the clamp to +-``clamp``,
    NVlabs' conv_clamp, when given), or the bias-free linear version (``activate=False``, the
    discriminator's skip)."""

    def __init__(self, in_channel, out_channel, kernel_size, downsample=False, activate=True,
                 blur_kernel=BLUR_KERNEL, clamp=None):
        layers = []
        if downsample:
            layers.append(Blur(blur_kernel, downsample_blur_pad(kernel_size, blur_kernel)))
            stride, padding = 2, 0
        else:
            stride, padding = 1, kernel_size // 2
        layers.append(EqualConv2d(in_channel, out_channel, kernel_size, stride=stride, padding=padding))
        if activate:
            layers.append(ops.FusedLeakyReLU(out_channel, clamp=clamp))
        super().__init__(*layers)


class ModulatedConv2d(nn.Module):
    """The parameters of a modulated (and optionally demodulated) conv under their official names:
    the weight, and the affine ``modulation`` (style s = affine(w), its bias initialised to 1).
    StyledConv and ToRGB run them, with the rest of their layer, through one fused op."""

    def __init__(self, in_channel, out_channel, kernel_size, style_dim, demodulate, upsample=False,
                 blur_kernel=BLUR_KERNEL):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, out_channel, in_channel, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_channel, bias_init=1)
        self.scale = 1 / math.sqrt(in_channel * kernel_size ** 2)
        self.demodulate = demodulate
        self.up = 2 if upsample else 1
        self.blur_kernel = tuple(blur_kernel)

    def modulated_weight(self, dtype):
        """The (C_out, C_in, k, k) weight with its equalised-lr scale, in the activations' dtype."""
        return (self.weight[0] * self.scale).to(dtype)

    def extra_repr(self):
        _, out_c, in_c, k, _ = self.weight.shape
        return f"{in_c}, {out_c}, {k}, demodulate={self.demodulate}, up={self.up}"


class NoiseInjection(nn.Module):
    """The learned strength (initialised 0) of a StyledConv's noise, which ``styled_conv2d`` adds."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))


class StyledConv(nn.Module):
    """Modulated conv -> noise injection -> fused bias + leaky ReLU [-> clamp to +-clamp, NVlabs'
    conv_clamp], run as one ``styled_conv2d``; the submodules hold the parameters under their official
    names."""

    def __init__(self, in_channel, out_channel, kernel_size, style_dim, upsample=False, blur_kernel=BLUR_KERNEL,
                 clamp=None):
        super().__init__()
        self.clamp = clamp
        self.conv = ModulatedConv2d(in_channel, out_channel, kernel_size, style_dim, demodulate=True,
                                    upsample=upsample, blur_kernel=blur_kernel)
        self.noise = NoiseInjection()
        self.activate = ops.FusedLeakyReLU(out_channel)

    def forward(self, input, style, noise=None, unfold_output=False):
        """``noise`` (B, 1, H_out, W_out), else fresh N(0, 1); ``unfold_output`` unfolds the result."""
        conv = self.conv
        if noise is None:
            batch, _, height, width = input.shape
            noise = input.new_empty(batch, 1, height * conv.up, width * conv.up).normal_()
        dtype = input.dtype  # parameters follow the activations' dtype (autocast, bf16 models)
        return ops.styled_conv2d(input, conv.modulated_weight(dtype), conv.modulation(style).to(dtype),
                                 noise.to(dtype), self.noise.weight.to(dtype), self.activate.bias.to(dtype),
                                 demodulate=conv.demodulate, up=conv.up,
                                 resample_kernel=conv.blur_kernel, negative_slope=self.activate.negative_slope,
                                 gain=self.activate.scale, unfold_output=unfold_output, clamp=self.clamp)


class ToRGB(nn.Module):
    """Modulated 1x1 conv to RGB (not demodulated) + bias [clamped to +-clamp, NVlabs' conv_clamp], plus
    the previous RGB (x2-upsampled when ``upsample``), run as one ``to_rgb``."""

    def __init__(self, in_channel, style_dim, upsample=True, blur_kernel=BLUR_KERNEL, clamp=None):
        super().__init__()
        self.clamp = clamp
        self.upsample = UpsampleKernel(blur_kernel) if upsample else None
        self.conv = ModulatedConv2d(in_channel, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, input, style, skip=None):
        dtype = input.dtype
        skip_kernel = None if self.upsample is None else self.upsample.kernel.to(dtype)
        return ops.to_rgb(input, self.conv.modulated_weight(dtype), self.conv.modulation(style).to(dtype),
                          self.bias.view(-1).to(dtype), None if skip is None else skip.to(dtype), skip_kernel,
                          clamp=self.clamp)


class ConstantInput(nn.Module):
    def __init__(self, channel, size):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channel, size, size))

    def forward(self, batch):
        return self.input.expand(batch, -1, -1, -1)


class FourierCoordinateLayer(nn.Module):
    """Fourier features of the coordinate grid, sin(B [x, y] + b). The frequencies B (C x 2) start
    uniform in +-sqrt(9 / 2); the phases b take PyTorch's conv-bias init. Stored as ``ffm.conv``, a
    1x1 conv of 2 inputs, as official checkpoints hold it."""

    memory_format = torch.contiguous_format  # of the features; see to_channels_last

    def __init__(self, channels):
        super().__init__()
        self.ffm = nn.Module()
        self.ffm.conv = nn.Conv2d(2, channels, 1)
        nn.init.uniform_(self.ffm.conv.weight, -math.sqrt(9 / 2), math.sqrt(9 / 2))

    def forward(self, height, width):
        conv = self.ffm.conv
        features = ops.fourier_embedding(conv.weight[:, :, 0, 0], conv.bias, height, width)
        return features.contiguous(memory_format=self.memory_format)


class MappingNetwork(nn.Sequential):
    """z -> pixel norm -> n_mlp x [EqualLinear, lr_mul 0.01, fused leaky ReLU] -> w."""

    def __init__(self, style_dim, n_mlp, lr_mlp):
        super().__init__(PixelNorm(), *[EqualLinear(style_dim, style_dim, lr_mul=lr_mlp, activation="fused_lrelu")
                                        for _ in range(n_mlp)])


def to_channels_last(module):
    """Channels-last layout for a module's 4-D parameters and buffers and for the activations its
    layers make from nothing (Fourier features: ``memory_format``), in place. Every later activation
    follows: the convs and every pixelfolder_ops op keep their input's layout. (Module.to refuses the
    5-D modulated-conv weights, so it cannot do this.)"""
    for tensor in itertools.chain(module.parameters(), module.buffers()):
        if tensor.dim() == 4:
            tensor.data = tensor.data.contiguous(memory_format=torch.channels_last)
    for layer in module.modules():
        if hasattr(layer, "memory_format"):
            layer.memory_format = torch.channels_last
    return module


def log2_size(model, size, minimum):
    """log2(size), after checking that ``size`` is a power of two >= ``minimum`` (model: for the error)."""
    log_size = int(math.log2(size)) if isinstance(size, int) and size > 0 else -1
    if 2 ** log_size != size or size < minimum:
        raise ValueError(f"{model}: argument 'size' must be a power of two >= {minimum}, got {size}")
    return log_size


RESOLUTIONS = tuple(2 ** i for i in range(2, 11))


def channel_table(channel_multiplier=2, width=1.0, channel_base=None, channel_max=512):
    """Channels per resolution, c(r): StyleGAN2's table (512 up to 32 px, then 16384 * multiplier / r),
    or with ``channel_base`` NVlabs' rule min(channel_base // r, channel_max). ``width`` scales every
    entry to a multiple of 16 (small models for tests); width 1 keeps the table as it is."""
    if channel_base is None:
        base = {r: 512 if r <= 32 else 16384 * channel_multiplier // r for r in RESOLUTIONS}
    else:
        base = {r: min(channel_base // r, channel_max) for r in RESOLUTIONS}
    if width == 1:
        return base
    return {r: max(16, int(round(c * width / 16)) * 16) for r, c in base.items()}
