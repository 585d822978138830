"""StyledConv on the compiled kernels: the modulated conv, then one epilogue kernel for the
demodulation, noise, bias, leaky ReLU, gain, clamp and optional unfold. First-order gradients: the
epilogue's backward kernel reduces the bias, noise and demodulation gradients in its one pass."""
from .._gradients import demodulation_backward, noise_gradients
from .._layout import empty
from .._protocol import fields, option_arguments, options, refuse_filter_gradient
from ..styled_conv2d import StyledConv2dArguments
from ._library import LIBRARY
from .modulated_conv2d import backward_fakes, compute_dtype, output_shape

# The epilogue's operands besides the conv output and the demodulation.
_EPILOGUE_OPERANDS = fields(StyledConv2dArguments, "noise", "noise_strength", "bias")


def styled_conv2d(args):
    output, _ = LIBRARY.call("styled_conv2d", args)
    return output


def _setup_context(ctx, args, output):
    _, conv_output = output
    ctx.mark_non_differentiable(conv_output)  # kept for the backward only
    ctx.options = options(args)
    ctx.save_for_backward(args.input, args.weight, args.styles, args.noise, args.noise_strength, args.bias,
                          args.resample_kernel, conv_output)


def _backward(ctx, grad_output, _grad_conv_output):
    refuse_filter_gradient(ctx, "styled_conv2d", "resample_kernel")
    input, weight, styles, noise, noise_strength, bias, kernel, conv_output = ctx.saved_tensors
    grad_input, grad_weight, grad_styles, grad_t, grad_bias, grad_noise_map = LIBRARY.call(
        "styled_conv2d_backward", grad_output=grad_output, conv_output=conv_output, input=input, weight=weight,
        styles=styles, noise=noise, noise_strength=noise_strength, bias=bias, resample_kernel=kernel, **ctx.options)
    grad_weight, grad_styles = demodulation_backward(grad_weight, grad_styles,
                                                     grad_t if ctx.options["demodulate"] else None, weight, styles)
    grads = {"input": grad_input, "weight": grad_weight, "styles": grad_styles,
             "bias": None if bias is None else grad_bias.to(bias.dtype)}
    if noise is not None:
        grads["noise"], grads["noise_strength"] = noise_gradients(grad_noise_map, noise, noise_strength)
    return grads


def _reductions(conv_output, has_noise):
    """The bias's (C,) and noise map's (B, 1, H, W) gradients, in the compute type; no noise: empty."""
    batch, channels, height, width = conv_output.shape
    dtype = compute_dtype(conv_output.dtype)
    return (conv_output.new_empty((channels,), dtype=dtype),
            conv_output.new_empty((batch, 1, height, width) if has_noise else (0,), dtype=dtype))


def _epilogue_output(conv_output, unfold_output):
    batch, channels, height, width = conv_output.shape
    return empty((batch, channels // 4, 2 * height, 2 * width) if unfold_output else conv_output.shape, conv_output)


def register(library):
    # Returns the layer's output and the raw (not demodulated) conv output the backward needs.
    library.define("styled_conv2d", StyledConv2dArguments, "(Tensor, Tensor)")
    # act(conv_output * demod + noise_strength * noise + bias) * gain, clamped, unfolded by the store.
    library.define("styled_conv2d_epilogue", ["Tensor conv_output", "Tensor? demod", *_EPILOGUE_OPERANDS,
                                              *option_arguments(StyledConv2dArguments)])
    # With g the gradient of the pre-activation: the conv's gradient g * demod (conv_output's shape),
    # and in the compute type sum_hw g * conv_output (demod's gradient, (B, C)), sum_bhw g (the bias's,
    # (C,)) and sum_c g (the noise map's, (B, 1, H, W); empty without noise).
    library.define("styled_conv2d_epilogue_backward",
                   ["Tensor grad_output", "Tensor conv_output", "Tensor? demod", *_EPILOGUE_OPERANDS,
                    *option_arguments(StyledConv2dArguments)], "(Tensor, Tensor, Tensor, Tensor)")
    # modulated_conv2d_backward's four gradients, then the bias's and the noise map's (compute type).
    library.define("styled_conv2d_backward", ["Tensor grad_output", "Tensor conv_output",
                                              *fields(StyledConv2dArguments)],
                   "(Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)")

    @library.register_fake("styled_conv2d_epilogue")
    def _(args):
        return _epilogue_output(args.conv_output, args.unfold_output)

    @library.register_fake("styled_conv2d_epilogue_backward")
    def _(args):
        grad_bias, grad_noise_map = _reductions(args.conv_output, args.noise is not None)
        grad_demod = args.conv_output.new_empty(args.conv_output.shape[:2], dtype=grad_bias.dtype)
        return empty(args.conv_output.shape, args.conv_output), grad_demod, grad_bias, grad_noise_map

    @library.register_fake("styled_conv2d")
    def _(args):
        conv_output = empty(output_shape(args.input, args.weight, args.up, 1), args.input)
        return _epilogue_output(conv_output, args.unfold_output), conv_output

    @library.register_fake("styled_conv2d_backward")
    def _(args):
        return (*backward_fakes(args, compute_dtype(args.input.dtype)),
                *_reductions(args.conv_output, args.noise is not None))

    library.register_autograd("styled_conv2d", _backward, _setup_context)
    library.first_order_only("styled_conv2d_backward", "styled_conv2d")
