"""Gradient formulas that more than one backend's autograd uses."""
import torch


def modulated_1x1_conv_backward(grad_output, input, weight, styles):
    """Gradients of out[b] = W'[b] x[b] for input, weight and styles, where W'[b] = weight[:, :, 0, 0] *
    styles[b] is (C_out, C_in) and x[b] is the image's (C_in, H*W) pixels (ToRGB's conv).

    One GEMM per image gives the input's gradient, one the modulated weight's, each reading or writing
    the C_in-channel tensor once; the weight's and styles' follow from W'[b]'s. ATen ops only, so the
    result differentiates again."""
    out_channels, in_channels = weight.shape[:2]
    grad = grad_output.flatten(2)
    flat_weight = weight.view(1, out_channels, in_channels)
    grad_input = torch.bmm((flat_weight * styles.unsqueeze(1)).transpose(1, 2), grad).view(input.shape)
    grad_modulated_weight = torch.bmm(grad, input.flatten(2).transpose(1, 2))
    grad_weight = (grad_modulated_weight * styles.unsqueeze(1)).sum(0).view(weight.shape)
    grad_styles = (grad_modulated_weight * flat_weight).sum(1)
    return grad_input, grad_weight, grad_styles
