"""upfirdn2d on the compiled kernels, differentiable to any order in its input and its kernel.

The input gradient is an upfirdn2d with the flipped kernel and up / down swapped (the op
upfirdn2d_backward), whose own input gradient is upfirdn2d again. The kernel gradient correlates the
upsampled, padded input with the output gradient (one dilated conv over every channel at once).
"""
import torch
import torch.nn.functional as F

from .._layout import empty
from .._protocol import fields, needs_grad, option_arguments, options
from ..upfirdn2d import Upfirdn2dArguments
from ._library import LIBRARY


def upfirdn2d(args):
    return LIBRARY.call("upfirdn2d", args)


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
    padded = LIBRARY.call("upfirdn2d", input=input, kernel=identity, up=up, down=[1, 1], pad=pad).to(accumulate)
    grad_output = grad_output.to(accumulate)
    batch, channels, padded_h, padded_w = padded.shape
    correlation = F.conv2d(padded.reshape(1, batch * channels, padded_h, padded_w),
                           grad_output.reshape(1, batch * channels, *grad_output.shape[-2:]),
                           dilation=(down[1], down[0]))
    kernel_h, kernel_w = kernel_shape
    return correlation[0, 0, :kernel_h, :kernel_w].flip((0, 1)).to(input.dtype)


def _setup_context(ctx, args, output):
    ctx.resampling = options(args)
    ctx.input_size = args.input.shape[-2:]
    ctx.save_for_backward(args.input if needs_grad(ctx, "kernel") else None, args.kernel)


def _backward(ctx, grad_output):
    input, kernel = ctx.saved_tensors
    grad_input = grad_kernel = None
    if needs_grad(ctx, "input"):
        input_height, input_width = ctx.input_size
        grad_input = LIBRARY.call("upfirdn2d_backward", grad_output=grad_output, kernel=kernel,
                                  input_height=input_height, input_width=input_width, **ctx.resampling)
    if needs_grad(ctx, "kernel"):
        grad_kernel = kernel_gradient(input, grad_output, kernel.shape, **ctx.resampling)
    return {"input": grad_input, "kernel": grad_kernel}


def _backward_setup_context(ctx, args, output):
    ctx.resampling = options(args, Upfirdn2dArguments)
    ctx.save_for_backward(args.grad_output if needs_grad(ctx, "kernel") else None, args.kernel)


def _double_backward(ctx, grad_grad_input):
    # upfirdn2d_backward(g, k) is the adjoint of v -> upfirdn2d(v, k): <upfirdn2d_backward(g, k), gg> =
    # <g, upfirdn2d(gg, k)>, which gives both of its gradients.
    grad_output, kernel = ctx.saved_tensors
    grad_grad_output = grad_kernel = None
    if needs_grad(ctx, "grad_output"):
        grad_grad_output = LIBRARY.call("upfirdn2d", input=grad_grad_input, kernel=kernel, **ctx.resampling)
    if needs_grad(ctx, "kernel"):
        grad_kernel = kernel_gradient(grad_grad_input, grad_output, kernel.shape, **ctx.resampling)
    return {"grad_output": grad_grad_output, "kernel": grad_kernel}


def register(library):
    library.define("upfirdn2d", Upfirdn2dArguments)
    # The input gradient: an upfirdn2d with the flipped kernel and up and down swapped.
    library.define("upfirdn2d_backward", ["Tensor grad_output", *fields(Upfirdn2dArguments, "kernel"),
                                          *option_arguments(Upfirdn2dArguments), "int input_height",
                                          "int input_width"])

    @library.register_fake("upfirdn2d")
    def _(args):
        (up_x, up_y), (down_x, down_y), (x0, x1, y0, y1) = args.up, args.down, args.pad
        kernel_h, kernel_w = args.kernel.shape
        batch, channels, height, width = args.input.shape
        return empty((batch, channels, _output_size(height, up_y, down_y, y0, y1, kernel_h),
                      _output_size(width, up_x, down_x, x0, x1, kernel_w)), args.input)

    @library.register_fake("upfirdn2d_backward")
    def _(args):
        batch, channels = args.grad_output.shape[:2]
        return empty((batch, channels, args.input_height, args.input_width), args.grad_output)

    library.register_autograd("upfirdn2d", _backward, _setup_context)
    library.register_autograd("upfirdn2d_backward", _double_backward, _backward_setup_context)
