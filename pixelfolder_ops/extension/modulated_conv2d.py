"""Modulated conv on the compiled kernels: conv(x * s, W) * d as one dense conv over the batch, with
the demodulation coefficients d from their own kernel. First-order gradients."""
import torch

from .._gradients import demodulation_backward
from .._layout import empty
from .._protocol import fields, options, refuse_filter_gradient
from ..modulated_conv2d import ModulatedConv2dArguments
from ._library import LIBRARY


def modulated_conv2d(args):
    return LIBRARY.call("modulated_conv2d", args)


def output_shape(input, weight, up, down):
    """(B, C_out, H, W) of a modulated conv, resampled by ``up`` or ``down``."""
    batch, _, height, width = input.shape
    return batch, weight.shape[0], height * up // down, width * up // down


def compute_dtype(dtype):
    """The dtype the kernels accumulate and keep reductions in: float32 for the 16-bit types."""
    return torch.promote_types(dtype, torch.float32)


def _setup_context(ctx, args, output):
    ctx.options = options(args)
    ctx.save_for_backward(args.input, args.weight, args.styles, output if args.demodulate else None,
                          args.resample_kernel)


def _backward(ctx, grad_output):
    refuse_filter_gradient(ctx, "modulated_conv2d", "resample_kernel")
    input, weight, styles, output, kernel = ctx.saved_tensors
    grad_input, grad_weight, grad_styles, grad_t = LIBRARY.call(
        "modulated_conv2d_backward", grad_output=grad_output, output=output, input=input, weight=weight,
        styles=styles, resample_kernel=kernel, **ctx.options)
    grad_weight, grad_styles = demodulation_backward(grad_weight, grad_styles,
                                                     grad_t if ctx.options["demodulate"] else None, weight, styles)
    return {"input": grad_input, "weight": grad_weight, "styles": grad_styles}


def register(library):
    library.define("modulated_conv2d", ModulatedConv2dArguments)
    # d[b, o] = rsqrt(sum_i styles[b, i]^2 * sum_k weight[o, i, k]^2 + eps), shape (B, C_out), in the
    # compute type (float32 for 16-bit weights).
    library.define("modulated_conv2d_demod", fields(ModulatedConv2dArguments, "weight", "styles", "eps"))
    # sum over (h, w) of a * b per (image, channel), (B, C) in the compute type, in a fixed order.
    library.define("spatial_dot", ["Tensor a", "Tensor b"])
    # The gradients of input, weight and styles (the latter two without the demodulation's share), and
    # that of t = 1 / demod^2 - eps (B, C_out) in the compute type, empty without demodulation; `output`
    # is the forward's result (needed to demodulate).
    library.define("modulated_conv2d_backward", ["Tensor grad_output", "Tensor? output",
                                                 *fields(ModulatedConv2dArguments)],
                   "(Tensor, Tensor, Tensor, Tensor)")

    @library.register_fake("modulated_conv2d_demod")
    def _(args):
        # float32 for 16-bit weights, as the kernels keep the factor (csrc/op_arguments.h).
        return args.weight.new_empty((args.styles.shape[0], args.weight.shape[0]),
                                     dtype=compute_dtype(args.weight.dtype))

    @library.register_fake("spatial_dot")
    def _(args):
        return args.a.new_empty(args.a.shape[:2], dtype=compute_dtype(args.a.dtype))

    @library.register_fake("modulated_conv2d")
    def _(args):
        return empty(output_shape(args.input, args.weight, args.up, args.down), args.input)

    @library.register_fake("modulated_conv2d_backward")
    def _(args):
        return backward_fakes(args, compute_dtype(args.input.dtype))

    library.register_autograd("modulated_conv2d", _backward, _setup_context)
    library.first_order_only("modulated_conv2d_backward", "modulated_conv2d")


def backward_fakes(args, sums_dtype):
    """The fake outputs of a modulated conv's backward op: the input's gradient in its layout, the weight's
    in its dtype, the styles' and t's in the compute type (t's empty without demodulation)."""
    input, weight, styles = args.input, args.weight, args.styles
    t_shape = (styles.shape[0], weight.shape[0]) if args.demodulate else (0,)
    return (empty(input.shape, input), torch.empty_like(weight, memory_format=torch.contiguous_format),
            styles.new_empty(styles.shape, dtype=sums_dtype), styles.new_empty(t_shape, dtype=sums_dtype))
