"""Reference bias + leaky ReLU + gain."""
import torch.nn.functional as F


def fused_leaky_relu(input, bias, negative_slope, scale):
    if bias is not None:
        input = input + bias.view(1, -1, *([1] * (input.dim() - 2)))
    return F.leaky_relu(input, negative_slope) * scale
