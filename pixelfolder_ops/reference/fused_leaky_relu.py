"""Reference bias + leaky ReLU + gain (+ clamp)."""
import torch.nn.functional as F


def fused_leaky_relu(args):
    return leaky_relu(args.input, args.bias, args.negative_slope, args.scale, args.clamp)


def leaky_relu(input, bias, negative_slope, scale, clamp):
    """The activation on its own, for the reference's layers that end in it."""
    if bias is not None:
        input = input + bias.view(1, -1, *([1] * (input.dim() - 2)))
    out = F.leaky_relu(input, negative_slope) * scale
    return out if clamp is None else out.clamp(-clamp, clamp)
