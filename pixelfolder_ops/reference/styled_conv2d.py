"""Reference StyledConv: the official layer's ops, one after another."""
from .fold import unfold
from .fused_leaky_relu import fused_leaky_relu
from .modulated_conv2d import modulated_conv2d


def styled_conv2d(input, weight, styles, noise, noise_strength, bias, demodulate, up, kernel, negative_slope, gain,
                  unfold_output, eps):
    out = modulated_conv2d(input, weight, styles, demodulate, up, 1, kernel, eps)
    if noise is not None:
        out = out + noise_strength * noise
    out = fused_leaky_relu(out, bias, negative_slope, gain)
    return unfold(out) if unfold_output else out
