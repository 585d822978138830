"""Bias + leaky ReLU + gain on the compiled kernels. The backward reads the slope from the output's
sign (no input kept); it is itself differentiable, for the discriminator's R1 penalty."""
import torch

from .._layout import empty


def fused_leaky_relu(input, bias, negative_slope, scale):
    return torch.ops.pixelfolder_ops.fused_leaky_relu(input, bias, negative_slope, scale)


def _setup_context(ctx, inputs, output):
    _, bias, ctx.negative_slope, ctx.scale, ctx.clamp = inputs
    ctx.has_bias = bias is not None
    ctx.save_for_backward(output)


def _backward(ctx, grad_output):
    (output,) = ctx.saved_tensors
    grad_input = torch.ops.pixelfolder_ops.fused_leaky_relu_backward(
        grad_output, output, ctx.negative_slope, ctx.scale, ctx.clamp)
    grad_bias = None
    if ctx.has_bias and ctx.needs_input_grad[1]:
        grad_bias = grad_input.sum([d for d in range(grad_input.dim()) if d != 1])
    return grad_input, grad_bias, None, None, None


def _backward_setup_context(ctx, inputs, output):
    _, output_of_forward, ctx.negative_slope, ctx.scale, ctx.clamp = inputs
    ctx.save_for_backward(output_of_forward)


def _double_backward(ctx, grad_grad_input):
    # grad_input = grad_output * slope(output) is linear in grad_output, and the slope is piecewise
    # constant in output (no gradient).
    (output,) = ctx.saved_tensors
    grad_grad_output = torch.ops.pixelfolder_ops.fused_leaky_relu_backward(
        grad_grad_input, output, ctx.negative_slope, ctx.scale, ctx.clamp)
    return grad_grad_output, None, None, None, None


def register():
    @torch.library.register_fake("pixelfolder_ops::fused_leaky_relu")
    def _(input, bias, negative_slope, scale, clamp=None):
        return empty(input.shape, input)

    @torch.library.register_fake("pixelfolder_ops::fused_leaky_relu_backward")
    def _(grad_output, output, negative_slope, scale, clamp=None):
        return empty(output.shape, output)

    torch.library.register_autograd("pixelfolder_ops::fused_leaky_relu", _backward, setup_context=_setup_context)
    torch.library.register_autograd("pixelfolder_ops::fused_leaky_relu_backward", _double_backward,
                                    setup_context=_backward_setup_context)
