"""StyledConv in Triton: one implicit-GEMM kernel forward, two backward, none with float atomics.

Forward: the k x k conv (padding k // 2) with each image's style applied as a K-vector to the weight tile
(a pixel tile never spans two images, so one style vector scales the whole tile), then an epilogue that
applies the demodulation, the noise, the bias, leaky ReLU and gain, and stores the result unfolded when
asked. The input is read in place through its strides (NCHW, channels-last or a strided view); the output
follows the layout rule (pixelfolder_ops/_layout.py).

Backward, from the saved input, style, demodulation and output: the pre-activation gradient is
computed as the output gradient is loaded (the leaky ReLU's slope from the saved output's sign, the
gain, the unfold addressing) and never written to memory.
- ``_input_backward_kernel`` (dgrad): grad x = s * conv_transpose(grad_pre * d, W), the demodulation
  d applied to the gradient tile as it is loaded (a K-vector there); its epilogue reduces the style
  gradient sum_p grad x * x per pixel tile.
- ``_weight_backward_kernel`` (wgrad): grad W = sum over pixels of (s x) (grad_pre d), the pixels split
  into chunks of whole pixel tiles of one image at a time (so s scales the x tile's rows, d the gradient
  tile's columns), each chunk's sum in a workspace; it also reduces the bias, demodulation and noise
  gradients per chunk and per tile.
Each per-tile partial sum goes to its own workspace slot and a fixed-order torch sum reduces the tile
axis, so two runs give the same bits. The demodulation's own gradient is two small matmuls
(pixelfolder_ops/_gradients.py, shared with the compiled backend). First order only: a double backward
raises.

The slope-0 activation needs no recomputed conv: where the output is positive it is gain * the
pre-activation, which gives the conv back; elsewhere the pre-activation gradient is zero and the conv
is not needed.

StyleGAN2's up-sampling StyledConv (up=2, a transposed conv) stays on the reference path.
"""
import functools
import math

import torch
import triton
import triton.language as tl

from .. import _layout
from .._gradients import demodulation_backward, noise_gradients, stored_clamp
from .._protocol import fields, option_arguments, options
from ..reference.styled_conv2d import styled_conv2d as reference_styled_conv2d
from ..styled_conv2d import StyledConv2dArguments
from ._config import INTERPRET, accumulator_dtype, autotune_configs, dot_precision, smallest_block
from ._library import LIBRARY
from ._implicit_gemm import (activation_gradient, noise_and_bias, output_channel_tile, output_pixel_offsets,
                             pixel_tile, scaled_rows)

# (meta-parameters, num_warps, num_stages): tiles for Hopper; the autotuner keys on the layer shape. Each
# compiles for sm_90 without register spills and within its shared memory (benchmarks/kernel_resources.py)
# at every PixelFolder-256 launch: the tile that passes through registers on its way to the tensor cores
# (the styled weight forward, the pre-activation gradient backward, both operands in the weight gradient)
# costs registers per pipeline stage. The 128 x 128 tiles spilled in all three kernels, and so did 64-wide
# K steps of the weight gradient and 128-row ones of the input gradient.
def _configs(*tiles):
    return [({"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k}, warps, stages) for m, n, k, warps, stages in tiles]


# The last, 64 x 32, tile of each is the one FMA (ieee) dots get: at 64 x 64 the forward and the weight
# gradient spilled 40-772 B per thread in float32 with TF32 off, and the weight gradient's 64 x 32 tile
# still spilled on 4 warps.
_FORWARD_CONFIGS = _configs((128, 64, 64, 8, 3), (128, 64, 32, 8, 3), (64, 128, 64, 4, 3), (64, 128, 64, 4, 4),
                            (64, 64, 32, 4, 3), (64, 32, 32, 4, 3))
_INPUT_BACKWARD_CONFIGS = _configs((128, 64, 32, 8, 3), (64, 128, 64, 8, 3), (64, 64, 32, 4, 3), (64, 32, 32, 4, 3))
_WEIGHT_BACKWARD_CONFIGS = _configs((128, 64, 32, 8, 3), (64, 128, 32, 8, 3), (64, 64, 32, 8, 3),
                                    (64, 32, 32, 8, 3))
# Under the interpreter, whose time goes by the number of tile steps rather than their size; the tests
# choose shapes that span several tiles.
_INTERPRETER_CONFIG = {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 64}
# The bytes of one row of a K step's register-staged tile that fit the registers: 64 16-bit or 32 32-bit values.
_MAX_K_STEP_BYTES = 128
# The weight gradient's chunks under the interpreter: three, so the tests see a chunk boundary inside an
# image and a chunk that spans images.
_INTERPRETER_CHUNKS = 3
# On a GPU no chunk is shorter than this many pixels: each chunk writes and reads a weight-sized slot.
_MIN_CHUNK_PIXELS = 4096


def _configs_that_fit_registers(configs, named_args, largest_32_bit_tile=None, **kwargs):
    """The configs that compile without spills for this launch: a K step of at most _MAX_K_STEP_BYTES and,
    with FMA (ieee) dots, which hold every product in registers, tiles of at most 64 x 32; with 32-bit
    elements, tiles of at most ``largest_32_bit_tile`` elements when given. The last (smallest) config
    when none does (float64)."""
    element_size = named_args["x_ptr"].element_size()
    limits = [64 * 32] if kwargs.get("DOT_PRECISION") == "ieee" else []
    if element_size >= 4 and largest_32_bit_tile is not None:
        limits.append(largest_32_bit_tile)
    largest_tile = min(limits, default=float("inf"))
    fitting = [config for config in configs if config.kwargs["BLOCK_K"] * element_size <= _MAX_K_STEP_BYTES
               and config.kwargs["BLOCK_M"] * config.kwargs["BLOCK_N"] <= largest_tile]
    return fitting or configs[-1:]


def _autotune(gpu_configs, reset_to_zero=None, largest_32_bit_tile=None):
    prune = functools.partial(_configs_that_fit_registers, largest_32_bit_tile=largest_32_bit_tile)
    return triton.autotune(configs=autotune_configs(gpu_configs, _INTERPRETER_CONFIG),
                           key=["pixels_per_image", "in_channels", "out_channels", "KERNEL_SIZE"],
                           reset_to_zero=reset_to_zero, prune_configs_by={"early_config_prune": prune})


@_autotune(_FORWARD_CONFIGS)
@triton.jit
def _styled_conv2d_kernel(
        x_ptr, weight_ptr, styles_ptr, demod_ptr, noise_ptr, strength_ptr, bias_ptr, out_ptr,
        pixels_per_image, width, in_channels, out_channels,
        x_stride_b, x_stride_c, x_stride_h, x_stride_w,
        noise_stride_b, noise_stride_h, noise_stride_w,
        out_stride_b, out_stride_c, out_stride_h, out_stride_w,
        negative_slope, gain, clamp,
        KERNEL_SIZE: tl.constexpr, QUADRANTS: tl.constexpr, DEMODULATE: tl.constexpr, HAS_NOISE: tl.constexpr,
        HAS_BIAS: tl.constexpr, DOT_PRECISION: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """GEMM view per image (grid axis 2): M = pixels, N = output channels, K = (tap, input channel).
    ``weight`` is the (tap, input channel) x output channel matrix."""
    ACC_DTYPE: tl.constexpr = tl.float64 if x_ptr.dtype.element_ty == tl.float64 else tl.float32
    image = tl.program_id(2).to(tl.int64)
    quadrant, channels, cols, col_ok = output_channel_tile(tl.program_id(0), out_channels, QUADRANTS, BLOCK_N)
    pixels, pixel_ok, h, w = pixel_tile(tl.program_id(1), pixels_per_image, width, BLOCK_M)
    height = pixels_per_image // width
    x_image = x_ptr + image * x_stride_b
    styles_image = styles_ptr + image * in_channels

    PAD: tl.constexpr = KERNEL_SIZE // 2
    k_chunks = tl.cdiv(in_channels, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_DTYPE)
    # One flat loop over (tap, input-channel chunk), so the pipeliner buffers one A and one B tile per stage.
    for step in range(KERNEL_SIZE * KERNEL_SIZE * k_chunks):
        tap = step // k_chunks
        k = (step % k_chunks) * BLOCK_K + tl.arange(0, BLOCK_K)
        k_ok = k < in_channels
        ih = h + (tap // KERNEL_SIZE - PAD)
        iw = w + (tap % KERNEL_SIZE - PAD)
        inside = pixel_ok & (ih >= 0) & (ih < height) & (iw >= 0) & (iw < width)
        x = tl.load(x_image + (ih * x_stride_h + iw * x_stride_w)[:, None] + k[None, :] * x_stride_c,
                    mask=inside[:, None] & k_ok[None, :], other=0.0)
        style = tl.load(styles_image + k, mask=k_ok, other=0.0).to(ACC_DTYPE)
        weight = scaled_rows(weight_ptr + (tap * in_channels + k)[:, None] * out_channels + cols[None, :],
                             k_ok[:, None] & col_ok[None, :], style, x_ptr.dtype.element_ty)
        acc = tl.dot(x, weight, acc, input_precision=DOT_PRECISION, out_dtype=ACC_DTYPE)

    if DEMODULATE:
        acc *= tl.load(demod_ptr + image * out_channels + cols, mask=col_ok, other=0.0)[None, :]
    acc += noise_and_bias(noise_ptr, strength_ptr, bias_ptr, image, h, w, cols, pixel_ok, col_ok,
                          noise_stride_b, noise_stride_h, noise_stride_w, HAS_NOISE, HAS_BIAS, ACC_DTYPE)
    out = tl.where(acc > 0, acc, acc * negative_slope) * gain
    out = tl.minimum(tl.maximum(out, -clamp), clamp)  # clamp is +inf without one
    # The unfold costs no pass of its own: it is in the store addresses.
    offsets = output_pixel_offsets(h, w, quadrant, out_stride_h, out_stride_w, QUADRANTS)[:, None] \
        + channels[None, :] * out_stride_c
    tl.store(out_ptr + image * out_stride_b + offsets, out.to(out_ptr.dtype.element_ty),
             mask=pixel_ok[:, None] & col_ok[None, :])


@_autotune(_INPUT_BACKWARD_CONFIGS, reset_to_zero=["style_sums_ptr"])
@triton.jit
def _input_backward_kernel(
        grad_out_ptr, out_ptr, x_ptr, weight_ptr, styles_ptr, demod_ptr, grad_x_ptr, style_sums_ptr,
        pixels_per_image, width, in_channels, out_channels, style_sum_slots,
        grad_out_stride_b, grad_out_stride_c, grad_out_stride_h, grad_out_stride_w,
        out_stride_b, out_stride_c, out_stride_h, out_stride_w,
        x_stride_b, x_stride_c, x_stride_h, x_stride_w,
        grad_x_stride_b, grad_x_stride_c, grad_x_stride_h, grad_x_stride_w,
        gain, negative_gain, saturated,
        KERNEL_SIZE: tl.constexpr, QUADRANTS: tl.constexpr, DEMODULATE: tl.constexpr,
        DOT_PRECISION: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """dgrad per image (grid axis 2): M = input pixels, N = input channels, K = (tap, output channel), the
    output channels taken quadrant by quadrant when the output is unfolded. ``weight`` is the (tap, output
    channel) x input channel matrix. Also writes sum_p grad_x * x / s, this pixel tile's part of the
    style gradient, to slot (image, pixel tile) of ``style_sums``."""
    ACC_DTYPE: tl.constexpr = tl.float64 if x_ptr.dtype.element_ty == tl.float64 else tl.float32
    image = tl.program_id(2).to(tl.int64)
    tile_m = tl.program_id(1)
    cols = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = cols < in_channels
    pixels, pixel_ok, h, w = pixel_tile(tile_m, pixels_per_image, width, BLOCK_M)
    height = pixels_per_image // width
    grad_out_image = grad_out_ptr + image * grad_out_stride_b
    out_image = out_ptr + image * out_stride_b

    PAD: tl.constexpr = KERNEL_SIZE // 2
    quarter = out_channels // QUADRANTS
    k_chunks = tl.cdiv(quarter, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_DTYPE)
    for step in range(KERNEL_SIZE * KERNEL_SIZE * QUADRANTS * k_chunks):
        tap = step // (QUADRANTS * k_chunks)
        quadrant = (step // k_chunks) % QUADRANTS
        channels = (step % k_chunks) * BLOCK_K + tl.arange(0, BLOCK_K)
        channel_ok = channels < quarter
        # Input pixel p feeds output pixel p - (tap offset).
        oh = h - (tap // KERNEL_SIZE - PAD)
        ow = w - (tap % KERNEL_SIZE - PAD)
        mask = (pixel_ok & (oh >= 0) & (oh < height) & (ow >= 0) & (ow < width))[:, None] & channel_ok[None, :]
        grad_out = tl.load(grad_out_image + output_pixel_offsets(oh, ow, quadrant, grad_out_stride_h,
                                                                 grad_out_stride_w, QUADRANTS)[:, None]
                           + channels[None, :] * grad_out_stride_c, mask=mask, other=0.0)
        out = tl.load(out_image + output_pixel_offsets(oh, ow, quadrant, out_stride_h, out_stride_w, QUADRANTS)[:, None]
                      + channels[None, :] * out_stride_c, mask=mask, other=0.0)
        grad_conv = activation_gradient(grad_out.to(ACC_DTYPE), out, gain, negative_gain, saturated)
        conv_channels = quadrant * quarter + channels
        if DEMODULATE:
            # On the gradient tile, which passes through registers anyway: the weight tile goes to the
            # tensor cores as loaded, and the product is rounded once.
            grad_conv *= tl.load(demod_ptr + image * out_channels + conv_channels, mask=channel_ok, other=0.0)[None, :]
        weight = tl.load(weight_ptr + (tap * out_channels + conv_channels)[:, None] * in_channels + cols[None, :],
                         mask=channel_ok[:, None] & col_ok[None, :], other=0.0)
        acc = tl.dot(grad_conv.to(x_ptr.dtype.element_ty), weight, acc, input_precision=DOT_PRECISION,
                     out_dtype=ACC_DTYPE)

    tile_ok = pixel_ok[:, None] & col_ok[None, :]
    x = tl.load(x_ptr + image * x_stride_b + (h * x_stride_h + w * x_stride_w)[:, None] + cols[None, :] * x_stride_c,
                mask=tile_ok, other=0.0)
    tl.store(style_sums_ptr + (image * style_sum_slots + tile_m) * in_channels + cols,
             tl.sum(acc * x.to(ACC_DTYPE), axis=0), mask=col_ok)
    style = tl.load(styles_ptr + image * in_channels + cols, mask=col_ok, other=0.0).to(ACC_DTYPE)
    tl.store(grad_x_ptr + image * grad_x_stride_b + (h * grad_x_stride_h + w * grad_x_stride_w)[:, None]
             + cols[None, :] * grad_x_stride_c, (acc * style[None, :]).to(grad_x_ptr.dtype.element_ty), mask=tile_ok)


# Both operands pass through registers: in float32 the 128 x 64 and 64 x 128 tiles spilled.
@_autotune(_WEIGHT_BACKWARD_CONFIGS, reset_to_zero=["grad_sums_ptr", "demod_sums_ptr", "noise_sums_ptr"],
           largest_32_bit_tile=64 * 64)
@triton.jit
def _weight_backward_kernel(
        grad_out_ptr, out_ptr, x_ptr, styles_ptr, demod_ptr, noise_ptr, strength_ptr, bias_ptr,
        grad_weight_ptr, grad_sums_ptr, demod_sums_ptr, noise_sums_ptr,
        batch, pixels_per_image, width, in_channels, out_channels, chunks,
        grad_out_stride_b, grad_out_stride_c, grad_out_stride_h, grad_out_stride_w,
        out_stride_b, out_stride_c, out_stride_h, out_stride_w,
        x_stride_b, x_stride_c, x_stride_h, x_stride_w,
        noise_stride_b, noise_stride_h, noise_stride_w,
        gain, negative_gain, inverse_gain, inverse_negative_gain, saturated,
        KERNEL_SIZE: tl.constexpr, QUADRANTS: tl.constexpr, DEMODULATE: tl.constexpr, HAS_NOISE: tl.constexpr,
        HAS_BIAS: tl.constexpr, DOT_PRECISION: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """wgrad: M = (tap, input channel) rows of the weight matrix, N = output channels (quadrant by quadrant
    when unfolded), K = pixels of chunk ``program_id(2)`` of the batch's (image, pixel tile) steps.

    The programs of row tile 0 also reduce the pre-activation gradient of this chunk, per image and
    column: its sum (the bias gradient) into ``grad_sums``, its products with the pre-activation minus
    noise and bias (d times the demodulation's gradient) into ``demod_sums``, each at slot (chunk, image);
    and its sum over this column tile per pixel (the noise term's gradient) into ``noise_sums`` at slot
    (column tile, image)."""
    ACC_DTYPE: tl.constexpr = tl.float64 if x_ptr.dtype.element_ty == tl.float64 else tl.float32
    tile_m = tl.program_id(0)
    tile_n = tl.program_id(1)
    chunk = tl.program_id(2)
    rows = tile_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < KERNEL_SIZE * KERNEL_SIZE * in_channels
    tap = rows // in_channels
    in_channel = rows % in_channels
    PAD: tl.constexpr = KERNEL_SIZE // 2
    dy = tap // KERNEL_SIZE - PAD
    dx = tap % KERNEL_SIZE - PAD
    quadrant, channels, cols, col_ok = output_channel_tile(tile_n, out_channels, QUADRANTS, BLOCK_N)
    height = pixels_per_image // width

    pixel_tiles = tl.cdiv(pixels_per_image, BLOCK_K)
    first_step = chunk * (batch * pixel_tiles) // chunks
    end_step = (chunk + 1) * (batch * pixel_tiles) // chunks
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_DTYPE)
    for image in range(first_step // pixel_tiles, tl.cdiv(end_step, pixel_tiles)):
        image_start = image * pixel_tiles
        image64 = tl.cast(image, tl.int64)
        grad_out_image = grad_out_ptr + image64 * grad_out_stride_b
        out_image = out_ptr + image64 * out_stride_b
        x_image = x_ptr + image64 * x_stride_b
        # One image at a time, so its style scales the x tile's rows and its demodulation the gradient
        # tile's columns: vectors, and one accumulator for the chunk.
        style = tl.load(styles_ptr + image64 * in_channels + in_channel, mask=row_ok, other=0.0).to(ACC_DTYPE)
        if DEMODULATE:
            demod = tl.load(demod_ptr + image64 * out_channels + cols, mask=col_ok, other=0.0)
        else:
            demod = tl.full((BLOCK_N,), 1.0, ACC_DTYPE)
        grad_sum = tl.zeros((BLOCK_N,), dtype=ACC_DTYPE)
        demod_sum = tl.zeros((BLOCK_N,), dtype=ACC_DTYPE)
        for pixel_step in range(tl.maximum(first_step, image_start) - image_start,
                                tl.minimum(end_step, image_start + pixel_tiles) - image_start):
            pixels, pixel_ok, h, w = pixel_tile(pixel_step, pixels_per_image, width, BLOCK_K)
            mask = pixel_ok[:, None] & col_ok[None, :]
            grad_out = tl.load(grad_out_image + output_pixel_offsets(h, w, quadrant, grad_out_stride_h,
                                                                     grad_out_stride_w, QUADRANTS)[:, None]
                               + channels[None, :] * grad_out_stride_c, mask=mask, other=0.0)
            out = tl.load(out_image + output_pixel_offsets(h, w, quadrant, out_stride_h, out_stride_w,
                                                           QUADRANTS)[:, None]
                          + channels[None, :] * out_stride_c, mask=mask, other=0.0).to(ACC_DTYPE)
            grad_pre = activation_gradient(grad_out.to(ACC_DTYPE), out, gain, negative_gain, saturated)
            ih = h[None, :] + dy[:, None]
            iw = w[None, :] + dx[:, None]
            inside = row_ok[:, None] & pixel_ok[None, :] & (ih >= 0) & (ih < height) & (iw >= 0) & (iw < width)
            x = tl.load(x_image + in_channel[:, None] * x_stride_c + ih * x_stride_h + iw * x_stride_w, mask=inside,
                        other=0.0)
            acc = tl.dot((x.to(ACC_DTYPE) * style[:, None]).to(x_ptr.dtype.element_ty),
                         (grad_pre * demod[None, :]).to(x_ptr.dtype.element_ty), acc, input_precision=DOT_PRECISION,
                         out_dtype=ACC_DTYPE)
            if tile_m == 0:
                grad_sum += tl.sum(grad_pre, axis=0)
                if HAS_NOISE:
                    tl.store(noise_sums_ptr + (tile_n * batch + image64) * pixels_per_image + pixels,
                             tl.sum(grad_pre, axis=1), mask=pixel_ok)
                if DEMODULATE:
                    pre_activation = tl.where(out > 0, out * inverse_gain, out * inverse_negative_gain)
                    shift = noise_and_bias(noise_ptr, strength_ptr, bias_ptr, image64, h, w, cols, pixel_ok, col_ok,
                                           noise_stride_b, noise_stride_h, noise_stride_w, HAS_NOISE, HAS_BIAS,
                                           ACC_DTYPE)
                    demod_sum += tl.sum(grad_pre * (pre_activation - shift), axis=0)
        if tile_m == 0:
            sums_slot = (chunk * batch + image64) * out_channels + cols
            tl.store(grad_sums_ptr + sums_slot, grad_sum, mask=col_ok)
            if DEMODULATE:
                tl.store(demod_sums_ptr + sums_slot, demod_sum, mask=col_ok)

    tl.store(grad_weight_ptr + (chunk * KERNEL_SIZE * KERNEL_SIZE * in_channels + rows)[:, None] * out_channels
             + cols[None, :], acc, mask=row_ok[:, None] & col_ok[None, :])


def demodulation(weight, styles, eps):
    """d[b, o] = rsqrt(sum_i s[b, i]^2 sum_k W[o, i, k]^2 + eps), in the accumulator's type: a
    (B, C_in) x (C_in, C_out) matmul instead of the reference's per-image weight tensor."""
    dtype = accumulator_dtype(weight.dtype)
    weight_square = weight.to(dtype).square().sum(dim=(2, 3))
    return torch.rsqrt(styles.to(dtype).square() @ weight_square.t() + eps)


def _weight_matrix(weight, rows):
    """The weight as the GEMM's (tap, ``rows`` channel) x other-channel matrix: rows "in" for the forward,
    "out" for the input's gradient."""
    order = (2, 3, 1, 0) if rows == "in" else (2, 3, 0, 1)
    return weight.permute(order).reshape(-1, weight.shape[0 if rows == "in" else 1]).contiguous()


def _noise_strides(noise):
    """(b, h, w) strides of the noise; a batch-1 noise is shared by every image: stride 0 along the batch."""
    if noise is None:
        return 0, 0, 0
    return noise.stride(0) if noise.shape[0] > 1 else 0, noise.stride(2), noise.stride(3)


def _output_channel_tiles(out_channels, quadrants, block):
    return quadrants * triton.cdiv(out_channels // quadrants, block)


def _empty_output(input, weight, unfold_output):
    """The output in the layout rule's format: the input's."""
    batch, _, height, width = input.shape
    channels = weight.shape[0]
    shape = (batch, channels // 4, 2 * height, 2 * width) if unfold_output else (batch, channels, height, width)
    return _layout.empty(shape, input)


def _styled_conv2d(args):
    if args.up != 1:
        raise ValueError("pixelfolder_triton::styled_conv2d: up=2 has no Triton kernel (styled_conv2d runs the "
                         "reference for it)")
    # The backward reads the slope from the saved output's sign, which is the pre-activation's only then.
    if not (args.negative_slope >= 0 and args.gain > 0):
        raise ValueError(f"pixelfolder_triton::styled_conv2d: expected negative_slope >= 0 and gain > 0, "
                         f"got negative_slope={args.negative_slope}, gain={args.gain}")
    input, weight, noise, bias = args.input, args.weight, args.noise, args.bias
    batch, in_channels, height, width = input.shape
    out_channels, kernel_size = weight.shape[0], weight.shape[-1]
    demod = demodulation(weight, args.styles, args.eps) if args.demodulate else None
    out = _empty_output(input, weight, args.unfold_output)
    quadrants = 4 if args.unfold_output else 1

    def grid(meta):
        return (_output_channel_tiles(out_channels, quadrants, meta["BLOCK_N"]),
                triton.cdiv(height * width, meta["BLOCK_M"]), batch)

    _styled_conv2d_kernel[grid](
        input, _weight_matrix(weight, "in"), args.styles.contiguous(), demod, noise, args.noise_strength,
        None if bias is None else bias.contiguous(), out,
        height * width, width, in_channels, out_channels, *input.stride(), *_noise_strides(noise), *out.stride(),
        args.negative_slope, args.gain, math.inf if args.clamp is None else args.clamp, KERNEL_SIZE=kernel_size,
        QUADRANTS=quadrants, DEMODULATE=args.demodulate, HAS_NOISE=noise is not None, HAS_BIAS=bias is not None,
        DOT_PRECISION=dot_precision(input.dtype))
    return out


def _setup_context(ctx, args, output):
    ctx.save_for_backward(args.input, args.weight, args.styles, args.noise, args.noise_strength, args.bias, output)
    ctx.options = options(args)


def _input_backward_outputs(input):
    return [_layout.empty(input.shape, input),
            input.new_empty(input.shape[:2], dtype=accumulator_dtype(input.dtype))]


def _input_backward(args):
    """[grad of the input, sum_p grad_x * x / s (B, C_in): the conv's part of the style gradient]."""
    grad_output, output, input, weight = args.grad_output, args.output, args.input, args.weight
    grad_input, _ = _input_backward_outputs(input)
    batch, in_channels, height, width = input.shape
    out_channels, kernel_size = weight.shape[0], weight.shape[-1]
    # A slot per pixel tile of the smallest BLOCK_M; a larger tile leaves its extra slots zero.
    slots = triton.cdiv(height * width, smallest_block(_INPUT_BACKWARD_CONFIGS, _INTERPRETER_CONFIG, "BLOCK_M"))
    style_sums = torch.zeros((batch, slots, in_channels), dtype=accumulator_dtype(input.dtype),
                             device=input.device)

    def grid(meta):
        return triton.cdiv(in_channels, meta["BLOCK_N"]), triton.cdiv(height * width, meta["BLOCK_M"]), batch

    _input_backward_kernel[grid](
        grad_output, output, input, _weight_matrix(weight, "out"), args.styles.contiguous(), args.demod, grad_input,
        style_sums, height * width, width, in_channels, out_channels, slots, *grad_output.stride(), *output.stride(),
        *input.stride(), *grad_input.stride(), args.gain, args.gain * args.negative_slope,
        stored_clamp(args.clamp, output.dtype), KERNEL_SIZE=kernel_size,
        QUADRANTS=4 if args.unfold_output else 1, DEMODULATE=args.demod is not None,
        DOT_PRECISION=dot_precision(input.dtype))
    return [grad_input, style_sums.sum(dim=1)]


def _weight_backward_outputs(input, weight, has_noise):
    """[grad of the weight, of the bias, sum_p grad_pre * (pre-activation - noise - bias) (B, C_out), grad of
    the noise term (B, H, W), empty without noise], in the accumulator's type."""
    batch, _, height, width = input.shape
    dtype = accumulator_dtype(input.dtype)
    return [input.new_empty(shape, dtype=dtype) for shape in (weight.shape, weight.shape[:1], (batch, weight.shape[0]),
                                                               (batch if has_noise else 0, height, width))]


def _weight_gradient_chunks(input, rows, out_channels):
    """How many chunks the weight gradient's pixels are split into (each has its own workspace slot): on a
    GPU enough for two programs per multiprocessor, none shorter than _MIN_CHUNK_PIXELS; never more than
    the batch has pixel tiles."""
    batch, _, height, width = input.shape
    if INTERPRET:
        chunks = _INTERPRETER_CHUNKS
    else:
        multiprocessors = torch.cuda.get_device_properties(input.device).multi_processor_count \
            if input.device.type == "cuda" else 1
        tiles = triton.cdiv(rows, 128) * triton.cdiv(out_channels, 128)
        chunks = min(triton.cdiv(2 * multiprocessors, tiles), triton.cdiv(batch * height * width, _MIN_CHUNK_PIXELS))
    smallest_step = smallest_block(_WEIGHT_BACKWARD_CONFIGS, _INTERPRETER_CONFIG, "BLOCK_K")
    pixel_tiles = batch * triton.cdiv(height * width, smallest_step)
    return max(1, min(chunks, pixel_tiles))


def _weight_backward(args):
    """[grad of the weight, of the bias, sum_p grad_pre * (pre-activation - noise - bias) (B, C_out; zero
    without demodulation), grad of the noise term (B, H, W; empty without noise)]."""
    input, weight, noise, bias = args.input, args.weight, args.noise, args.bias
    gain, negative_slope = args.gain, args.negative_slope
    batch, in_channels, height, width = input.shape
    out_channels, kernel_size = weight.shape[0], weight.shape[-1]
    quadrants = 4 if args.unfold_output else 1
    dtype = accumulator_dtype(input.dtype)
    rows = kernel_size * kernel_size * in_channels
    chunks = _weight_gradient_chunks(input, rows, out_channels)
    weight_sums = input.new_empty((chunks, rows, out_channels), dtype=dtype)
    grad_sums, demod_sums = (input.new_zeros((chunks, batch, out_channels), dtype=dtype) for _ in range(2))
    column_slots = _output_channel_tiles(out_channels, quadrants,
                                         smallest_block(_WEIGHT_BACKWARD_CONFIGS, _INTERPRETER_CONFIG, "BLOCK_N"))
    noise_sums = input.new_zeros((column_slots, batch if noise is not None else 0, height * width), dtype=dtype)

    def grid(meta):
        return (triton.cdiv(rows, meta["BLOCK_M"]), _output_channel_tiles(out_channels, quadrants, meta["BLOCK_N"]),
                chunks)

    slope_inverse = 1 / (gain * negative_slope) if negative_slope > 0 else 0.0  # slope 0: no gradient there
    _weight_backward_kernel[grid](
        args.grad_output, args.output, input, args.styles.contiguous(), args.demod, noise, args.noise_strength,
        None if bias is None else bias.contiguous(), weight_sums, grad_sums,
        demod_sums, noise_sums, batch, height * width, width, in_channels, out_channels, chunks,
        *args.grad_output.stride(), *args.output.stride(), *input.stride(), *_noise_strides(noise), gain,
        gain * negative_slope, 1 / gain, slope_inverse, stored_clamp(args.clamp, args.output.dtype),
        KERNEL_SIZE=kernel_size, QUADRANTS=quadrants, DEMODULATE=args.demod is not None,
        HAS_NOISE=noise is not None, HAS_BIAS=bias is not None, DOT_PRECISION=dot_precision(input.dtype))
    grad_weight = weight_sums.sum(dim=0).view(kernel_size, kernel_size, in_channels, out_channels)
    return [grad_weight.permute(3, 2, 0, 1).contiguous(), grad_sums.sum(dim=(0, 1)), demod_sums.sum(dim=0),
            noise_sums.sum(dim=0).view(-1, height, width)]


def _backward(ctx, grad_output):
    input, weight, styles, noise, noise_strength, bias, output = ctx.saved_tensors
    demod = demodulation(weight, styles, ctx.options["eps"]) if ctx.options["demodulate"] else None
    saved = dict(grad_output=grad_output, output=output, input=input, weight=weight, styles=styles, demod=demod,
                 **ctx.options)
    grad_input, grad_styles = LIBRARY.call("styled_conv2d_input_backward", **saved)
    grad_weight, grad_bias, demod_sums, grad_noise_term = LIBRARY.call(
        "styled_conv2d_weight_backward", noise=noise, noise_strength=noise_strength, bias=bias, **saved)
    # The kernel's sums are d * grad d, and d = rsqrt(t + eps): grad t = -d^3 / 2 * grad d = -d^2 / 2 * sums.
    grad_t = demod_sums * -0.5 * demod.square() if demod is not None else None
    grad_weight, grad_styles = demodulation_backward(grad_weight, grad_styles, grad_t, weight, styles)
    grads = {"input": grad_input, "weight": grad_weight, "styles": grad_styles,
             "bias": None if bias is None else grad_bias.to(bias.dtype)}
    if noise is not None:
        grads["noise"], grads["noise_strength"] = noise_gradients(grad_noise_term[:, None], noise, noise_strength)
    return grads


# The backward ops take the saved output and the demodulation with the layer's tensors and options.
_BACKWARD_ARGUMENTS = ["Tensor grad_output", "Tensor output", *fields(StyledConv2dArguments, "input", "weight", "styles"),
                       "Tensor? demod"]
LIBRARY.define("styled_conv2d", StyledConv2dArguments)
LIBRARY.define("styled_conv2d_input_backward", [*_BACKWARD_ARGUMENTS, *option_arguments(StyledConv2dArguments)],
               "Tensor[]")
LIBRARY.define("styled_conv2d_weight_backward",
               [*_BACKWARD_ARGUMENTS, *fields(StyledConv2dArguments, "noise", "noise_strength", "bias"),
                *option_arguments(StyledConv2dArguments)], "Tensor[]")
LIBRARY.impl("styled_conv2d", _styled_conv2d)
LIBRARY.impl("styled_conv2d_input_backward", _input_backward)
LIBRARY.impl("styled_conv2d_weight_backward", _weight_backward)
LIBRARY.register_fake("styled_conv2d", lambda args: _empty_output(args.input, args.weight, args.unfold_output))
LIBRARY.register_fake("styled_conv2d_input_backward", lambda args: _input_backward_outputs(args.input))
LIBRARY.register_fake("styled_conv2d_weight_backward",
                      lambda args: _weight_backward_outputs(args.input, args.weight, args.noise is not None))
LIBRARY.register_autograd("styled_conv2d", _backward, _setup_context)
LIBRARY.first_order_only("styled_conv2d_input_backward", "styled_conv2d")
LIBRARY.first_order_only("styled_conv2d_weight_backward", "styled_conv2d")


def styled_conv2d(args):
    if args.up == 2:  # StyleGAN2's transposed-conv variant is not fused: PixelFolder's unfold path never runs it
        return reference_styled_conv2d(args)
    return LIBRARY.call("styled_conv2d", args)
