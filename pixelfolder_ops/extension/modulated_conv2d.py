"""Modulated conv on the compiled kernels: conv(x * s, W) * d as one dense conv over the batch, with
the demodulation coefficients d from their own kernel. First-order gradients."""
import torch

from ._autograd import first_order_only, refuse_filter_gradient
from .._layout import empty


def modulated_conv2d(input, weight, styles, demodulate, up, down, kernel, eps):
    return torch.ops.pixelfolder_ops.modulated_conv2d(input, weight, styles, demodulate, up, down, kernel, eps)


def output_shape(input, weight, up, down):
    """(B, C_out, H, W) of a modulated conv, resampled by ``up`` or ``down``."""
    batch, _, height, width = input.shape
    return batch, weight.shape[0], height * up // down, width * up // down


def compute_dtype(dtype):
    """The dtype the kernels accumulate and keep reductions in: float32 for the 16-bit types."""
    return torch.promote_types(dtype, torch.float32)


def _setup_context(ctx, inputs, output):
    input, weight, styles, ctx.demodulate, ctx.up, ctx.down, kernel, ctx.eps = inputs
    ctx.save_for_backward(input, weight, styles, output if ctx.demodulate else None, kernel)


def _backward(ctx, grad_output):
    refuse_filter_gradient(ctx, 6, "modulated_conv2d", "kernel")
    input, weight, styles, output, kernel = ctx.saved_tensors
    grad_input, grad_weight, grad_styles = torch.ops.pixelfolder_ops.modulated_conv2d_backward(
        grad_output, input, weight, styles, output, ctx.demodulate, ctx.up, ctx.down, kernel, ctx.eps)
    return grad_input, grad_weight, grad_styles, None, None, None, None, None


def register():
    @torch.library.register_fake("pixelfolder_ops::modulated_conv2d_demod")
    def _(weight, styles, eps):
        # float32 for 16-bit weights, as the kernels keep the factor (csrc/op_arguments.h).
        return weight.new_empty((styles.shape[0], weight.shape[0]), dtype=compute_dtype(weight.dtype))

    @torch.library.register_fake("pixelfolder_ops::spatial_dot")
    def _(a, b):
        return a.new_empty(a.shape[:2], dtype=compute_dtype(a.dtype))

    @torch.library.register_fake("pixelfolder_ops::modulated_conv2d")
    def _(input, weight, styles, demodulate, up, down, kernel, eps):
        return empty(output_shape(input, weight, up, down), input)

    @torch.library.register_fake("pixelfolder_ops::modulated_conv2d_backward")
    def _(grad_output, input, weight, styles, output, demodulate, up, down, kernel, eps):
        return (empty(input.shape, input), torch.empty_like(weight, memory_format=torch.contiguous_format),
                torch.empty_like(styles, memory_format=torch.contiguous_format))

    torch.library.register_autograd("pixelfolder_ops::modulated_conv2d", _backward, setup_context=_setup_context)
    first_order_only("pixelfolder_ops::modulated_conv2d_backward", "modulated_conv2d")
