"""ToRGB on the compiled kernels: the modulated 1x1 conv as one batched GEMM with the bias, plus the
skip (x2 upfirdn2d) added. Its gradients are ATen ops (the conv's two batched GEMMs), so they
differentiate again: double backward works; only the skip kernel's gradient is refused."""
import torch

from .._gradients import modulated_1x1_conv_backward
from ._autograd import refuse_filter_gradient
from .._layout import empty

_NO_PAD = [0, 0, 0, 0]


def skip_pad(skip_kernel):
    """The reference ToRGB's x2 up-sampling pads, (x0, x1, y0, y1): (2, 1) per axis for a 4-tap kernel."""
    p = skip_kernel.shape[0] - 2
    return [(p + 1) // 2 + 1, p // 2] * 2


def to_rgb(input, weight, styles, bias, skip, skip_kernel):
    pad = _NO_PAD if skip_kernel is None else skip_pad(skip_kernel)
    return torch.ops.pixelfolder_ops.to_rgb(input, weight, styles, bias, skip, skip_kernel, pad)


def _setup_context(ctx, inputs, output):
    input, weight, styles, _, skip, skip_kernel, ctx.skip_pad = inputs
    ctx.skip_size = None if skip is None else skip.shape[-2:]
    ctx.save_for_backward(input, weight, styles, skip_kernel)


def _backward(ctx, grad_output):
    refuse_filter_gradient(ctx, 5, "to_rgb", "skip_kernel")
    input, weight, styles, skip_kernel = ctx.saved_tensors
    grad_input, grad_weight, grad_styles = modulated_1x1_conv_backward(grad_output, input, weight, styles)
    grad_bias = grad_output.sum((0, 2, 3))
    grad_skip = None
    if ctx.skip_size is not None:
        grad_skip = grad_output if skip_kernel is None else torch.ops.pixelfolder_ops.upfirdn2d_backward(
            grad_output, skip_kernel, [2, 2], [1, 1], ctx.skip_pad, *ctx.skip_size)
    return grad_input, grad_weight, grad_styles, grad_bias, grad_skip, None, None


def register():
    @torch.library.register_fake("pixelfolder_ops::to_rgb")
    def _(input, weight, styles, bias, skip, skip_kernel, skip_pad):
        batch, _, height, width = input.shape
        return empty((batch, weight.shape[0], height, width), input)

    torch.library.register_autograd("pixelfolder_ops::to_rgb", _backward, setup_context=_setup_context)
