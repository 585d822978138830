"""upfirdn2d on the compiled kernels, differentiable to any order in its input and its kernel.

The input gradient is an upfirdn2d with the flipped kernel and up / down swapped (the op
upfirdn2d_backward), whose own input gradient is upfirdn2d again. The kernel gradient correlates the
upsampled, padded input with the output gradient (one dilated conv over every channel at once).
"""
import torch
import torch.nn.functional as F

from .._layout import empty


def upfirdn2d(input, kernel, up, down, pad):
    return torch.ops.pixelfolder_ops.upfirdn2d(input, kernel, list(up), list(down), list(pad))


def _output_size(size, up, down, pad0, pad1, taps):
    return (size * up + pad0 + pad1 - taps) // down + 1


def kernel_gradient(input, grad_output, kernel_shape, up, down, pad):
    """d(loss)/d(kernel) of upfirdn2d(input, kernel, up, down, pad) for the output gradient ``grad_output``."""
    # The forward correlates the flipped kernel with P, the zero-inserted and padded input, sampling
    # every `down`: the flipped kernel's gradient is P correlated with grad_output dilated by `down`.
    # The correlation sums over every output position of every image and channel: accumulate it in
    # float32, since a 16-bit conv on the CPU rounds its running sums (a bfloat16 gradient was off by
    # 100% at 1,536 terms).
    accumulate = torch.promote_types(input.dtype, torch.float32)
    identity = input.new_ones(1, 1)
    padded = torch.ops.pixelfolder_ops.upfirdn2d(input, identity, up, [1, 1], pad).to(accumulate)
    grad_output = grad_output.to(accumulate)
    batch, channels, padded_h, padded_w = padded.shape
    correlation = F.conv2d(padded.reshape(1, batch * channels, padded_h, padded_w),
                           grad_output.reshape(1, batch * channels, *grad_output.shape[-2:]),
                           dilation=(down[1], down[0]))
    kernel_h, kernel_w = kernel_shape
    return correlation[0, 0, :kernel_h, :kernel_w].flip((0, 1)).to(input.dtype)


def _setup_context(ctx, inputs, output):
    input, kernel, ctx.up, ctx.down, ctx.pad = inputs
    ctx.input_size = input.shape[-2:]
    ctx.save_for_backward(input if ctx.needs_input_grad[1] else None, kernel)


def _backward(ctx, grad_output):
    input, kernel = ctx.saved_tensors
    grad_input = grad_kernel = None
    if ctx.needs_input_grad[0]:
        grad_input = torch.ops.pixelfolder_ops.upfirdn2d_backward(grad_output, kernel, ctx.up, ctx.down, ctx.pad,
                                                                  *ctx.input_size)
    if ctx.needs_input_grad[1]:
        grad_kernel = kernel_gradient(input, grad_output, kernel.shape, ctx.up, ctx.down, ctx.pad)
    return grad_input, grad_kernel, None, None, None


def _backward_setup_context(ctx, inputs, output):
    grad_output, kernel, ctx.up, ctx.down, ctx.pad, _, _ = inputs
    ctx.save_for_backward(grad_output if ctx.needs_input_grad[1] else None, kernel)


def _double_backward(ctx, grad_grad_input):
    # upfirdn2d_backward(g, k) is the adjoint of v -> upfirdn2d(v, k): <upfirdn2d_backward(g, k), gg> =
    # <g, upfirdn2d(gg, k)>, which gives both of its gradients.
    grad_output, kernel = ctx.saved_tensors
    grad_grad_output = grad_kernel = None
    if ctx.needs_input_grad[0]:
        grad_grad_output = torch.ops.pixelfolder_ops.upfirdn2d(grad_grad_input, kernel, ctx.up, ctx.down, ctx.pad)
    if ctx.needs_input_grad[1]:
        grad_kernel = kernel_gradient(grad_grad_input, grad_output, kernel.shape, ctx.up, ctx.down, ctx.pad)
    return grad_grad_output, grad_kernel, None, None, None, None, None


def register():
    @torch.library.register_fake("pixelfolder_ops::upfirdn2d")
    def _(input, kernel, up, down, pad):
        kernel_h, kernel_w = kernel.shape
        out_h = _output_size(input.shape[2], up[1], down[1], pad[2], pad[3], kernel_h)
        out_w = _output_size(input.shape[3], up[0], down[0], pad[0], pad[1], kernel_w)
        return empty((input.shape[0], input.shape[1], out_h, out_w), input)

    @torch.library.register_fake("pixelfolder_ops::upfirdn2d_backward")
    def _(grad_output, kernel, up, down, pad, input_height, input_width):
        return empty((grad_output.shape[0], grad_output.shape[1], input_height, input_width), grad_output)

    torch.library.register_autograd("pixelfolder_ops::upfirdn2d", _backward, setup_context=_setup_context)
    torch.library.register_autograd("pixelfolder_ops::upfirdn2d_backward", _double_backward,
                                    setup_context=_backward_setup_context)
