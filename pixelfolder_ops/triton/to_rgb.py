"""ToRGB in one Triton kernel: the modulated 1x1 conv to RGB (the style scale applied to the weight tile
as it is loaded), the bias, and the previous RGB skip, x2-upsampled by upfirdn2d in the same pass.

The backward is exact PyTorch (a few einsums and the upfirdn2d adjoint), so it is differentiable again.
"""
import math

import triton
import triton.language as tl

from .. import _layout
from .._gradients import save_to_rgb_context, to_rgb_layer_gradients
from .._protocol import refuse_filter_gradient
from ..reference.upfirdn2d import resample
from ..to_rgb import ToRgbArguments, skip_pad
from ._library import LIBRARY
from ._config import autotune_configs, dot_precision
from ._implicit_gemm import pixel_tile, scaled_rows

# Each compiles for sm_90 without register spills and within its shared memory
# (benchmarks/kernel_resources.py). The last is for FMA (ieee) dots, which hold every product of the
# tile in registers and spill on the wider ones; tensor-core dots take the others.
_GPU_CONFIGS = [
    ({"BLOCK_P": 128, "BLOCK_C": 64}, 4, 3),
    ({"BLOCK_P": 256, "BLOCK_C": 64}, 8, 3),
    ({"BLOCK_P": 64, "BLOCK_C": 128}, 4, 4),
    ({"BLOCK_P": 128, "BLOCK_C": 128}, 8, 3),  # 4 stages need 264 KiB of shared memory in float32
    ({"BLOCK_P": 128, "BLOCK_C": 16}, 4, 3),
]
_INTERPRETER_CONFIG = {"BLOCK_P": 64, "BLOCK_C": 32}
_FMA_DOT_CHANNELS = 16


def _configs_for_the_dot(configs, named_args, **kwargs):
    """The narrow config for FMA (ieee) dots, the others for tensor-core dots; all of them when none
    qualifies (the interpreter's single config)."""
    fma = kwargs.get("DOT_PRECISION") == "ieee"
    chosen = [config for config in configs if (config.kwargs["BLOCK_C"] <= _FMA_DOT_CHANNELS) == fma]
    return chosen or configs


@triton.autotune(configs=autotune_configs(_GPU_CONFIGS, _INTERPRETER_CONFIG),
                 key=["pixels_per_image", "in_channels"],
                 prune_configs_by={"early_config_prune": _configs_for_the_dot})
@triton.jit
def _to_rgb_kernel(
        x_ptr, weight_ptr, styles_ptr, bias_ptr, skip_ptr, skip_kernel_ptr, out_ptr, clamped_ptr,
        pixels_per_image, width, in_channels, rgb_channels, skip_height, skip_width, clamp,
        x_stride_b, x_stride_c, x_stride_h, x_stride_w,
        skip_stride_b, skip_stride_c, skip_stride_h, skip_stride_w,
        out_stride_b, out_stride_c, out_stride_h, out_stride_w,
        HAS_SKIP: tl.constexpr, UPSAMPLE_SKIP: tl.constexpr, SKIP_TAPS: tl.constexpr, SKIP_PAD: tl.constexpr,
        STORE_CLAMPED: tl.constexpr, DOT_PRECISION: tl.constexpr,
        BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_R: tl.constexpr):
    """One image per program row (so one style vector); BLOCK_P pixels by all RGB channels per program."""
    b = tl.program_id(1).to(tl.int64)
    pixels, pixel_ok, h, w = pixel_tile(tl.program_id(0), pixels_per_image, width, BLOCK_P)
    rgb = tl.arange(0, BLOCK_R)
    rgb_ok = rgb < rgb_channels
    ACC_DTYPE: tl.constexpr = tl.float64 if x_ptr.dtype.element_ty == tl.float64 else tl.float32

    acc = tl.zeros((BLOCK_P, BLOCK_R), dtype=ACC_DTYPE)
    for c0 in range(0, in_channels, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        c_ok = c < in_channels
        x = tl.load(x_ptr + b * x_stride_b + (h * x_stride_h + w * x_stride_w)[:, None] + c[None, :] * x_stride_c,
                    mask=pixel_ok[:, None] & c_ok[None, :], other=0.0)
        style = tl.load(styles_ptr + b * in_channels + c, mask=c_ok, other=0.0).to(ACC_DTYPE)
        # Three outputs per pixel: modulating the (C, RGB) weight tile is cheaper than the activations.
        weight = scaled_rows(weight_ptr + c[:, None] * rgb_channels + rgb[None, :], c_ok[:, None] & rgb_ok[None, :],
                             style, x_ptr.dtype.element_ty)
        acc = tl.dot(x, weight, acc, input_precision=DOT_PRECISION, out_dtype=ACC_DTYPE)
    acc += tl.load(bias_ptr + rgb, mask=rgb_ok, other=0.0).to(ACC_DTYPE)[None, :]
    acc = tl.minimum(tl.maximum(acc, -clamp), clamp)  # clamp is +inf without one
    if STORE_CLAMPED:  # where the clamp cut, for the backward: the layer's output before the skip is added
        tl.store(clamped_ptr + (b * rgb_channels + rgb[None, :]) * pixels_per_image + pixels[:, None],
                 acc.to(clamped_ptr.dtype.element_ty), mask=pixel_ok[:, None] & rgb_ok[None, :])

    skip_channel = rgb[None, :] * skip_stride_c
    if HAS_SKIP and not UPSAMPLE_SKIP:
        acc += tl.load(skip_ptr + b * skip_stride_b + (h * skip_stride_h + w * skip_stride_w)[:, None] + skip_channel,
                       mask=pixel_ok[:, None] & rgb_ok[None, :], other=0.0).to(ACC_DTYPE)
    if HAS_SKIP and UPSAMPLE_SKIP:
        # upfirdn2d(up=2): output (h, w) sums the skip pixels at the even positions (up_y, up_x) of the
        # zero-upsampled grid, up_y = h + ty - SKIP_PAD, times the flipped kernel's tap (ty, tx). Only taps
        # of one parity per axis land on even positions: ceil(SKIP_TAPS / 2) per axis, 4 of 16 for 4 taps.
        first_ty = (h - SKIP_PAD) & 1
        first_tx = (w - SKIP_PAD) & 1
        for j in tl.static_range((SKIP_TAPS + 1) // 2):
            ty = first_ty + 2 * j
            up_y = h + ty - SKIP_PAD
            y_ok = pixel_ok & (ty < SKIP_TAPS) & (up_y >= 0) & (up_y < 2 * skip_height)
            for i in tl.static_range((SKIP_TAPS + 1) // 2):
                tx = first_tx + 2 * i
                up_x = w + tx - SKIP_PAD
                tap_ok = y_ok & (tx < SKIP_TAPS) & (up_x >= 0) & (up_x < 2 * skip_width)
                coefficient = tl.load(skip_kernel_ptr + (SKIP_TAPS - 1 - ty) * SKIP_TAPS + (SKIP_TAPS - 1 - tx),
                                      mask=tap_ok, other=0.0)
                skip_pixel = (up_y // 2) * skip_stride_h + (up_x // 2) * skip_stride_w
                skip = tl.load(skip_ptr + b * skip_stride_b + skip_pixel[:, None] + skip_channel,
                               mask=tap_ok[:, None] & rgb_ok[None, :], other=0.0)
                acc += coefficient.to(ACC_DTYPE)[:, None] * skip.to(ACC_DTYPE)

    tl.store(out_ptr + b * out_stride_b + (h * out_stride_h + w * out_stride_w)[:, None] + rgb[None, :] * out_stride_c,
             acc.to(out_ptr.dtype.element_ty), mask=pixel_ok[:, None] & rgb_ok[None, :])


def _empty_outputs(args):
    """The output (in the input's layout), and with a clamp and a skip the clamped layer output the
    backward reads (NCHW; else empty)."""
    batch, _, height, width = args.input.shape
    shape = (batch, args.weight.shape[0], height, width)
    store_clamped = args.clamp is not None and args.skip is not None
    return _layout.empty(shape, args.input), args.input.new_empty(shape if store_clamped else (0,))


def _to_rgb(args):
    input, weight, skip, skip_kernel = args.input, args.weight, args.skip, args.skip_kernel
    batch, in_channels, height, width = input.shape
    rgb_channels = weight.shape[0]
    out, clamped = _empty_outputs(args)
    skip_strides, skip_size = ((0, 0, 0, 0), (0, 0)) if skip is None else (skip.stride(), skip.shape[-2:])
    upsample_skip = skip is not None and skip_kernel is not None
    taps, pad = (skip_kernel.shape[0], skip_pad(skip_kernel)[0]) if upsample_skip else (1, 0)
    pixels_per_image = height * width

    def grid(meta):
        return triton.cdiv(pixels_per_image, meta["BLOCK_P"]), batch

    _to_rgb_kernel[grid](
        input, weight.reshape(rgb_channels, in_channels).t().contiguous(), args.styles.contiguous(),
        args.bias.contiguous(), skip, skip_kernel.contiguous() if upsample_skip else None, out, clamped,
        pixels_per_image, width, in_channels, rgb_channels, *skip_size, math.inf if args.clamp is None else args.clamp,
        *input.stride(), *skip_strides, *out.stride(), HAS_SKIP=skip is not None, UPSAMPLE_SKIP=upsample_skip,
        SKIP_TAPS=taps, SKIP_PAD=pad, STORE_CLAMPED=clamped.numel() > 0, DOT_PRECISION=dot_precision(input.dtype),
        BLOCK_R=max(16, triton.next_power_of_2(rgb_channels)))
    return out, clamped


def _backward(ctx, grad, _grad_clamped):
    refuse_filter_gradient(ctx, "to_rgb", "skip_kernel")
    input, weight, styles, skip_kernel, clamped = ctx.saved_tensors
    grad_skip = None
    if ctx.skip_size is not None:
        grad_skip = grad
        if skip_kernel is not None:
            # The adjoint of the x2 upfirdn2d: correlate with the kernel (a flipped convolution) at stride 2.
            before = skip_kernel.shape[0] - 1 - skip_pad(skip_kernel)[0]
            after = skip_kernel.shape[0] - 2 - before
            grad_skip = resample(grad, skip_kernel.flip((0, 1)), (1, 1), (2, 2), (before, after) * 2)
    return {**to_rgb_layer_gradients(ctx, grad, input, weight, styles, clamped), "skip": grad_skip}


LIBRARY.define("to_rgb", ToRgbArguments, "(Tensor, Tensor)")
LIBRARY.impl("to_rgb", _to_rgb)
LIBRARY.register_fake("to_rgb", _empty_outputs)
LIBRARY.register_autograd("to_rgb", _backward, save_to_rgb_context)


def to_rgb(args):
    output, _ = LIBRARY.call("to_rgb", args)
    return output
