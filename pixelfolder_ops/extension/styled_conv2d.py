"""StyledConv on the compiled kernels: the modulated conv, then one epilogue kernel for the
demodulation, noise, bias, leaky ReLU, gain and optional unfold. First-order gradients: the epilogue's
backward kernel reduces the bias, noise and demodulation gradients in its one pass."""
import torch

from ._autograd import first_order_only, refuse_filter_gradient
from .._layout import empty
from .modulated_conv2d import compute_dtype, output_shape


def styled_conv2d(input, weight, styles, noise, noise_strength, bias, demodulate, up, kernel, negative_slope, gain,
                  unfold_output, eps):
    output, _ = torch.ops.pixelfolder_ops.styled_conv2d(input, weight, styles, noise, noise_strength, bias, demodulate,
                                                        up, kernel, negative_slope, gain, unfold_output, eps)
    return output


def _setup_context(ctx, inputs, output):
    (input, weight, styles, noise, noise_strength, bias, ctx.demodulate, ctx.up, kernel, ctx.negative_slope, ctx.gain,
     ctx.unfold_output, ctx.eps) = inputs
    _, conv_output = output
    ctx.mark_non_differentiable(conv_output)  # kept for the backward only
    ctx.save_for_backward(input, weight, styles, noise, noise_strength, bias, kernel, conv_output)


def _backward(ctx, grad_output, _grad_conv_output):
    refuse_filter_gradient(ctx, 8, "styled_conv2d", "kernel")
    input, weight, styles, noise, noise_strength, bias, kernel, conv_output = ctx.saved_tensors
    grad_input, grad_weight, grad_styles, grad_bias, grad_noise_map = torch.ops.pixelfolder_ops.styled_conv2d_backward(
        grad_output, input, weight, styles, noise, noise_strength, bias, conv_output, ctx.demodulate, ctx.up, kernel,
        ctx.negative_slope, ctx.gain, ctx.unfold_output, ctx.eps)
    grad_noise = grad_noise_strength = None
    if noise is not None:
        # preactivation = conv + noise_strength * noise (broadcast over channels, and over the batch
        # when noise has one image); grad_noise_map is the gradient's sum over channels, in float32
        # or float64.
        grad_noise_strength = (grad_noise_map * noise).sum().reshape(noise_strength.shape).to(noise_strength.dtype)
        grad_noise = grad_noise_map * noise_strength
        grad_noise = (grad_noise.sum(0, keepdim=True) if noise.shape[0] == 1 else grad_noise).to(noise.dtype)
    return (grad_input, grad_weight, grad_styles, grad_noise, grad_noise_strength,
            None if bias is None else grad_bias.to(bias.dtype)) + (None,) * 7


def _reductions(conv_output, has_noise):
    """The bias's (C,) and noise map's (B, 1, H, W) gradients, in the compute type; no noise: empty."""
    batch, channels, height, width = conv_output.shape
    dtype = compute_dtype(conv_output.dtype)
    return (conv_output.new_empty((channels,), dtype=dtype),
            conv_output.new_empty((batch, 1, height, width) if has_noise else (0,), dtype=dtype))


def register():
    @torch.library.register_fake("pixelfolder_ops::styled_conv2d_epilogue")
    def _epilogue_fake(conv_output, demod, noise, noise_strength, bias, negative_slope, gain, unfold_output):
        batch, channels, height, width = conv_output.shape
        shape = (batch, channels // 4, 2 * height, 2 * width) if unfold_output else conv_output.shape
        return empty(shape, conv_output)

    @torch.library.register_fake("pixelfolder_ops::styled_conv2d_epilogue_backward")
    def _(grad_output, conv_output, demod, noise, noise_strength, bias, negative_slope, gain, unfold_output):
        grad_bias, grad_noise_map = _reductions(conv_output, noise is not None)
        grad_demod = conv_output.new_empty(conv_output.shape[:2], dtype=grad_bias.dtype)
        return empty(conv_output.shape, conv_output), grad_demod, grad_bias, grad_noise_map

    @torch.library.register_fake("pixelfolder_ops::styled_conv2d")
    def _(input, weight, styles, noise, noise_strength, bias, demodulate, up, kernel, negative_slope, gain,
          unfold_output, eps):
        conv_output = empty(output_shape(input, weight, up, 1), input)
        return _epilogue_fake(conv_output, None, None, None, None, 0.0, 1.0, unfold_output), conv_output

    @torch.library.register_fake("pixelfolder_ops::styled_conv2d_backward")
    def _(grad_output, input, weight, styles, noise, noise_strength, bias, conv_output, demodulate, up, kernel,
          negative_slope, gain, unfold_output, eps):
        return (empty(input.shape, input), torch.empty_like(weight, memory_format=torch.contiguous_format),
                torch.empty_like(styles, memory_format=torch.contiguous_format),
                *_reductions(conv_output, noise is not None))

    torch.library.register_autograd("pixelfolder_ops::styled_conv2d", _backward, setup_context=_setup_context)
    first_order_only("pixelfolder_ops::styled_conv2d_backward", "styled_conv2d")
