"""Bias + leaky ReLU + gain (+ clamp) on the compiled kernels. The backward reads the slope from the
output's sign, and the clamp from where the output saturated (no input kept); it is itself
differentiable, for the discriminator's R1 penalty."""
from .._layout import empty
from .._protocol import needs_grad, option_arguments, options
from ..fused_leaky_relu import FusedLeakyReLUArguments
from ._library import LIBRARY


def fused_leaky_relu(args):
    return LIBRARY.call("fused_leaky_relu", args)


def _input_gradient(grad, output, activation):
    return LIBRARY.call("fused_leaky_relu_backward", grad_output=grad, output=output, **activation)


def _setup_context(ctx, args, output):
    ctx.activation = options(args)
    ctx.has_bias = args.bias is not None
    ctx.save_for_backward(output)


def _backward(ctx, grad_output):
    (output,) = ctx.saved_tensors
    grad_input = _input_gradient(grad_output, output, ctx.activation)
    grad_bias = None
    if ctx.has_bias and needs_grad(ctx, "bias"):
        grad_bias = grad_input.sum([d for d in range(grad_input.dim()) if d != 1])
    return {"input": grad_input, "bias": grad_bias}


def _backward_setup_context(ctx, args, output):
    ctx.activation = options(args, FusedLeakyReLUArguments)
    ctx.save_for_backward(args.output)


def _double_backward(ctx, grad_grad_input):
    # grad_input = grad_output * slope(output) is linear in grad_output, and the slope is piecewise
    # constant in output (no gradient).
    (output,) = ctx.saved_tensors
    return {"grad_output": _input_gradient(grad_grad_input, output, ctx.activation)}


def register(library):
    library.define("fused_leaky_relu", FusedLeakyReLUArguments)
    library.define("fused_leaky_relu_backward",
                   ["Tensor grad_output", "Tensor output", *option_arguments(FusedLeakyReLUArguments)])

    @library.register_fake("fused_leaky_relu")
    def _(args):
        return empty(args.input.shape, args.input)

    @library.register_fake("fused_leaky_relu_backward")
    def _(args):
        return empty(args.output.shape, args.output)

    library.register_autograd("fused_leaky_relu", _backward, _setup_context)
    library.register_autograd("fused_leaky_relu_backward", _double_backward, _backward_setup_context)
