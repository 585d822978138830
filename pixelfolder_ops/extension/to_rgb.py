"""ToRGB on the compiled kernels: the modulated 1x1 conv as one batched GEMM with the bias (clamped when
asked), plus the skip (x2 upfirdn2d) added. Its gradients are ATen ops (the conv's two batched GEMMs),
so they differentiate again: double backward works; only the skip kernel's gradient is refused."""
from .._gradients import save_to_rgb_context, to_rgb_layer_gradients
from .._layout import empty
from .._protocol import needs_grad, refuse_filter_gradient
from ..to_rgb import ToRgbArguments, skip_pad
from ._library import LIBRARY


def to_rgb(args):
    output, _ = LIBRARY.call("to_rgb", args)
    return output


def _backward(ctx, grad_output, _grad_clamped):
    refuse_filter_gradient(ctx, "to_rgb", "skip_kernel")
    input, weight, styles, skip_kernel, clamped = ctx.saved_tensors
    grad_skip = None
    if ctx.skip_size is not None and needs_grad(ctx, "skip"):
        grad_skip = grad_output if skip_kernel is None else LIBRARY.call(
            "upfirdn2d_backward", grad_output=grad_output, kernel=skip_kernel, up=[2, 2], down=[1, 1],
            pad=skip_pad(skip_kernel), input_height=ctx.skip_size[0], input_width=ctx.skip_size[1])
    return {**to_rgb_layer_gradients(ctx, grad_output, input, weight, styles, clamped), "skip": grad_skip}


def register(library):
    # The layer's output and, with a clamp and a skip, its clamped output before the skip is added (else
    # empty).
    library.define("to_rgb", ToRgbArguments, "(Tensor, Tensor)")

    @library.register_fake("to_rgb")
    def _(args):
        batch, _, height, width = args.input.shape
        output_shape = (batch, args.weight.shape[0], height, width)
        clamped = output_shape if args.clamp is not None and args.skip is not None else (0,)
        return empty(output_shape, args.input), args.input.new_empty(clamped)

    library.register_autograd("to_rgb", _backward, save_to_rgb_context)
