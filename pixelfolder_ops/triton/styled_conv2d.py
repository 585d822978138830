"""StyledConv in one Triton kernel: an implicit-GEMM convolution (k x k, padding k // 2) over NHWC
activations with each image's style scale applied as its input is loaded, and an epilogue that applies
the demodulation, the noise, the bias, leaky ReLU and gain, then stores the result unfolded when asked.

The backward: one Triton pass over the output gradient (read, with the saved output, through the same
unfold addresses) undoes the activation and gives the conv's gradient, and by atomic per-tile sums the
gradients of the bias, of the demodulation coefficients and of the noise; cuDNN's convolution_backward
gives the data and weight gradients of the modulated input; the demodulation's own gradient is two small
matmuls. First order only: a double backward raises.
"""
from typing import Optional

import torch
import triton
import triton.language as tl

from ..reference.styled_conv2d import styled_conv2d as reference_styled_conv2d
from ._config import autotune_configs, dot_precision

# (meta-parameters, num_warps, num_stages): tiles for Hopper; the autotuner keys on the layer shape. Each
# compiles for sm_90 without register spills and within its shared memory (benchmarks/kernel_resources.py):
# the modulated input tile passes through registers on its way to the tensor cores, so 128 x 256 and
# 256 x 128 tiles, and 128-row tiles on 4 warps, spill.
_GPU_CONFIGS = [
    ({"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 8}, 8, 3),
    ({"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 32, "GROUP_M": 8}, 8, 3),
    ({"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 64, "GROUP_M": 8}, 8, 3),
    ({"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 8}, 4, 4),
    ({"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 32, "GROUP_M": 8}, 4, 3),
]
_INTERPRETER_CONFIG = {"BLOCK_M": 64, "BLOCK_N": 32, "BLOCK_K": 32, "GROUP_M": 2}
# The bytes of one row of the input tile per K step that fit the registers: 64 16-bit or 32 32-bit channels.
_MAX_K_STEP_BYTES = 128


def _configs_that_fit_registers(configs, named_args, **kwargs):
    """The configs that compile without spills for this launch: a K step of at most _MAX_K_STEP_BYTES and,
    with FMA (ieee) dots, which hold every product in registers, tiles of at most 64 x 64; the last
    (smallest) config when none does (float64 under the interpreter)."""
    element_size = named_args["x_ptr"].element_size()
    fitting = [config for config in configs if config.kwargs["BLOCK_K"] * element_size <= _MAX_K_STEP_BYTES
               and (kwargs.get("DOT_PRECISION") != "ieee" or config.kwargs["BLOCK_M"] * config.kwargs["BLOCK_N"] <= 64 * 64)]
    return fitting or configs[-1:]


@triton.jit
def _output_offsets(image, h, w, channels, out_channels, stride_b, stride_c, stride_h, stride_w,
                    UNFOLD_OUTPUT: tl.constexpr):
    """Offsets of the conv output's (pixel rows x channel columns) tile in a tensor of the given strides;
    with UNFOLD_OUTPUT, channel (dy * 2 + dx) * C + c of pixel (h, w) is channel c of pixel (2h + dy, 2w + dx)."""
    if UNFOLD_OUTPUT:
        quarter = out_channels // 4
        quadrant = channels // quarter
        row_offset = image * stride_b + 2 * h * stride_h + 2 * w * stride_w
        col_offset = (channels % quarter) * stride_c + (quadrant // 2) * stride_h + (quadrant % 2) * stride_w
    else:
        row_offset = image * stride_b + h * stride_h + w * stride_w
        col_offset = channels * stride_c
    return row_offset[:, None] + col_offset[None, :]


@triton.jit
def _noise_and_bias(noise_ptr, strength_ptr, bias_ptr, image, h, w, cols, pixel_ok, col_ok,
                    noise_stride_b, noise_stride_h, noise_stride_w,
                    HAS_NOISE: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """The epilogue's additive terms for a (pixels, channels) tile in float32: noise_strength *
    noise[b, h, w] + bias[c], each zero when absent."""
    shift = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    if HAS_NOISE:
        noise = tl.load(noise_ptr + image * noise_stride_b + h * noise_stride_h + w * noise_stride_w,
                        mask=pixel_ok, other=0.0).to(tl.float32)
        shift += noise[:, None] * tl.load(strength_ptr).to(tl.float32)
    if HAS_BIAS:
        shift += tl.load(bias_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    return shift


@triton.autotune(configs=autotune_configs(_GPU_CONFIGS, _INTERPRETER_CONFIG),
                 key=["pixels", "in_channels", "out_channels", "KERNEL_SIZE"],
                 prune_configs_by={"early_config_prune": _configs_that_fit_registers})
@triton.jit
def _styled_conv2d_kernel(
        x_ptr, weight_ptr, styles_ptr, demod_ptr, noise_ptr, strength_ptr, bias_ptr, out_ptr,
        pixels, height, width, in_channels, out_channels,
        x_stride_b, x_stride_c, x_stride_h, x_stride_w,
        noise_stride_b, noise_stride_h, noise_stride_w,
        out_stride_b, out_stride_c, out_stride_h, out_stride_w,
        negative_slope, gain,
        KERNEL_SIZE: tl.constexpr, DEMODULATE: tl.constexpr, HAS_NOISE: tl.constexpr, HAS_BIAS: tl.constexpr,
        UNFOLD_OUTPUT: tl.constexpr, DOT_PRECISION: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr):
    """GEMM view: M = output pixels (b, h, w), N = output channels, K = (tap, input channel)."""
    # Grouped tile order: GROUP_M row tiles reuse each weight column tile while it is in L2.
    pid = tl.program_id(0)
    tiles_m = tl.cdiv(pixels, BLOCK_M)
    tiles_n = tl.cdiv(out_channels, BLOCK_N)
    tiles_per_group = GROUP_M * tiles_n
    first_m = (pid // tiles_per_group) * GROUP_M
    group_rows = min(tiles_m - first_m, GROUP_M)
    tile_m = first_m + (pid % tiles_per_group) % group_rows
    tile_n = (pid % tiles_per_group) // group_rows

    rows = tile_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tile_n * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < pixels
    col_ok = cols < out_channels
    image = (rows // (height * width)).to(tl.int64)
    h = (rows // width) % height
    w = rows % width

    PAD: tl.constexpr = KERNEL_SIZE // 2
    k_chunks = tl.cdiv(in_channels, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    # One flat loop over (tap, input-channel chunk), so the pipeliner buffers one A and one B tile per stage.
    for step in range(KERNEL_SIZE * KERNEL_SIZE * k_chunks):
        tap = step // k_chunks
        k = (step % k_chunks) * BLOCK_K + tl.arange(0, BLOCK_K)
        k_ok = k < in_channels
        ih = h + (tap // KERNEL_SIZE - PAD)
        iw = w + (tap % KERNEL_SIZE - PAD)
        inside = row_ok & (ih >= 0) & (ih < height) & (iw >= 0) & (iw < width)
        x = tl.load(x_ptr + (image * x_stride_b + ih * x_stride_h + iw * x_stride_w)[:, None]
                    + k[None, :] * x_stride_c, mask=inside[:, None] & k_ok[None, :], other=0.0)
        # Modulation on the activations: each row's image scales its input channels by its style.
        style = tl.load(styles_ptr + image[:, None] * in_channels + k[None, :],
                        mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        x = (x.to(tl.float32) * style.to(tl.float32)).to(x_ptr.dtype.element_ty)
        weight = tl.load(weight_ptr + (tap * in_channels + k)[:, None] * out_channels + cols[None, :],
                         mask=k_ok[:, None] & col_ok[None, :], other=0.0)
        acc = tl.dot(x, weight, acc, input_precision=DOT_PRECISION)

    tile_ok = row_ok[:, None] & col_ok[None, :]
    if DEMODULATE:
        acc *= tl.load(demod_ptr + image[:, None] * out_channels + cols[None, :], mask=tile_ok, other=0.0)
    acc += _noise_and_bias(noise_ptr, strength_ptr, bias_ptr, image, h, w, cols, row_ok, col_ok,
                           noise_stride_b, noise_stride_h, noise_stride_w, HAS_NOISE, HAS_BIAS, BLOCK_M, BLOCK_N)
    out = tl.where(acc > 0, acc, acc * negative_slope) * gain

    # The unfold costs no pass of its own: it is in the store addresses.
    offsets = _output_offsets(image, h, w, cols, out_channels, out_stride_b, out_stride_c, out_stride_h, out_stride_w,
                              UNFOLD_OUTPUT)
    tl.store(out_ptr + offsets, out.to(out_ptr.dtype.element_ty), mask=tile_ok)


# 32 elements of the tile per thread: at 64 a thread holds the gradient, the saved output and the epilogue's
# terms for each in its 255 registers only just, and spills in some layouts; a 128 x 128 tile would need
# 16 warps, whose threads get at most 128 registers each, and spills too.
_BACKWARD_CONFIGS = [({"BLOCK_M": 64, "BLOCK_N": 64}, 4, 3), ({"BLOCK_M": 128, "BLOCK_N": 64}, 8, 3),
                     ({"BLOCK_M": 64, "BLOCK_N": 128}, 8, 3)]
_BACKWARD_INTERPRETER_CONFIG = {"BLOCK_M": 64, "BLOCK_N": 32}


@triton.autotune(configs=autotune_configs(_BACKWARD_CONFIGS, _BACKWARD_INTERPRETER_CONFIG),
                 key=["pixels_per_image", "out_channels"], reset_to_zero=["grad_bias_ptr", "grad_demod_ptr",
                                                                          "grad_noise_ptr"])
@triton.jit
def _epilogue_backward_kernel(
        grad_out_ptr, saved_ptr, demod_ptr, noise_ptr, strength_ptr, bias_ptr,
        grad_conv_ptr, grad_bias_ptr, grad_demod_ptr, grad_noise_ptr,
        pixels_per_image, width, out_channels,
        grad_out_stride_b, grad_out_stride_c, grad_out_stride_h, grad_out_stride_w,
        saved_stride_b, saved_stride_c, saved_stride_h, saved_stride_w,
        noise_stride_b, noise_stride_h, noise_stride_w, negative_slope, gain,
        RECOMPUTED: tl.constexpr, DEMODULATE: tl.constexpr, HAS_NOISE: tl.constexpr, HAS_BIAS: tl.constexpr,
        UNFOLD_OUTPUT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """One pass over the output gradient: the gradient of the demodulated conv (conv layout, channels-last),
    and, by atomic adds of per-tile sums, those of the bias, of d[b, o] and of the noise term. ``saved`` is
    the output, or (RECOMPUTED) the conv recomputed without epilogue, in the conv's own layout."""
    image = tl.program_id(2).to(tl.int64)
    pixels = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    pixel_ok = pixels < pixels_per_image
    col_ok = cols < out_channels
    tile_ok = pixel_ok[:, None] & col_ok[None, :]
    h = pixels // width
    w = pixels % width
    image_rows = tl.zeros((BLOCK_M,), dtype=tl.int64) + image

    grad_out = tl.load(grad_out_ptr + _output_offsets(
        image_rows, h, w, cols, out_channels, grad_out_stride_b, grad_out_stride_c, grad_out_stride_h,
        grad_out_stride_w, UNFOLD_OUTPUT), mask=tile_ok, other=0.0).to(tl.float32)
    demod = tl.full((BLOCK_N,), 1.0, tl.float32)
    if DEMODULATE:
        demod = tl.load(demod_ptr + image * out_channels + cols, mask=col_ok, other=1.0)
    shift = _noise_and_bias(noise_ptr, strength_ptr, bias_ptr, image, h, w, cols, pixel_ok, col_ok,
                            noise_stride_b, noise_stride_h, noise_stride_w, HAS_NOISE, HAS_BIAS, BLOCK_M, BLOCK_N)
    saved = tl.load(saved_ptr + _output_offsets(image_rows, h, w, cols, out_channels, saved_stride_b, saved_stride_c,
                                                saved_stride_h, saved_stride_w, UNFOLD_OUTPUT and not RECOMPUTED),
                    mask=tile_ok, other=0.0).to(tl.float32)
    if RECOMPUTED:
        conv = saved
        pre_activation = conv * demod[None, :] + shift
    else:
        # The activation is invertible (slope > 0, gain != 0): undo it on the saved output.
        pre_activation = saved / tl.where(saved * gain > 0, gain, gain * negative_slope)
        conv = (pre_activation - shift) / demod[None, :]
    grad_pre = grad_out * tl.where(pre_activation > 0, gain, gain * negative_slope)

    tl.store(grad_conv_ptr + image * pixels_per_image * out_channels + pixels[:, None] * out_channels + cols[None, :],
             (grad_pre * demod[None, :]).to(grad_conv_ptr.dtype.element_ty), mask=tile_ok)
    if HAS_BIAS:
        tl.atomic_add(grad_bias_ptr + cols, tl.sum(grad_pre, axis=0), mask=col_ok)
    if DEMODULATE:
        tl.atomic_add(grad_demod_ptr + image * out_channels + cols, tl.sum(grad_pre * conv, axis=0), mask=col_ok)
    if HAS_NOISE:
        tl.atomic_add(grad_noise_ptr + image * pixels_per_image + pixels, tl.sum(grad_pre, axis=1), mask=pixel_ok)


def demodulation(weight, styles, eps):
    """d[b, o] = rsqrt(sum_i s[b, i]^2 sum_k W[o, i, k]^2 + eps), in float32: a (B, C_in) x (C_in, C_out)
    matmul instead of the reference's per-image weight tensor."""
    weight_square = weight.float().square().sum(dim=(2, 3))
    return torch.rsqrt(styles.float().square() @ weight_square.t() + eps)


def _noise_strides(noise):
    """(b, h, w) strides of the noise; a batch-1 noise is shared by every image: stride 0 along the batch."""
    if noise is None:
        return 0, 0, 0
    return noise.stride(0) if noise.shape[0] > 1 else 0, noise.stride(2), noise.stride(3)


def _empty_output(input, weight, unfold_output):
    """The output, channels-last so the next layer's kernel reads channels contiguously."""
    batch, _, height, width = input.shape
    channels = weight.shape[0]
    shape = (batch, channels // 4, 2 * height, 2 * width) if unfold_output else (batch, channels, height, width)
    return torch.empty(shape, dtype=input.dtype, device=input.device, memory_format=torch.channels_last)


@torch.library.custom_op("pixelfolder_triton::styled_conv2d", mutates_args=())
def styled_conv2d_op(input: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, noise: Optional[torch.Tensor],
                     noise_strength: Optional[torch.Tensor], bias: Optional[torch.Tensor], demodulate: bool,
                     negative_slope: float, gain: float, unfold_output: bool, eps: float) -> torch.Tensor:
    batch, in_channels, height, width = input.shape
    out_channels, kernel_size = weight.shape[0], weight.shape[-1]
    x = input.contiguous(memory_format=torch.channels_last)
    # Rows (tap, input channel), columns output channels: the GEMM's K x N operand.
    weight_matrix = weight.permute(2, 3, 1, 0).reshape(-1, out_channels).contiguous()
    demod = demodulation(weight, styles, eps) if demodulate else None
    out = _empty_output(input, weight, unfold_output)
    pixels = batch * height * width

    def grid(meta):
        return (triton.cdiv(pixels, meta["BLOCK_M"]) * triton.cdiv(out_channels, meta["BLOCK_N"]),)

    _styled_conv2d_kernel[grid](
        x, weight_matrix, styles.contiguous(), demod, noise, noise_strength,
        None if bias is None else bias.contiguous(), out,
        pixels, height, width, in_channels, out_channels, *x.stride(), *_noise_strides(noise), *out.stride(),
        negative_slope, gain, KERNEL_SIZE=kernel_size, DEMODULATE=demodulate, HAS_NOISE=noise is not None,
        HAS_BIAS=bias is not None, UNFOLD_OUTPUT=unfold_output, DOT_PRECISION=dot_precision(input.dtype))
    return out


@styled_conv2d_op.register_fake
def _(input, weight, styles, noise, noise_strength, bias, demodulate, negative_slope, gain, unfold_output, eps):
    return _empty_output(input, weight, unfold_output)


def _setup_context(ctx, inputs, output):
    input, weight, styles, noise, noise_strength, bias, demodulate, negative_slope, gain, unfold_output, eps = inputs
    ctx.save_for_backward(input, weight, styles, noise, noise_strength, bias, output)
    ctx.options = demodulate, negative_slope, gain, unfold_output, eps


def _epilogue_backward_outputs(saved, unfolded):
    """The conv's gradient (channels-last, conv layout) and the three float32 sums the kernel adds into."""
    batch, channels, height, width = saved.shape
    if unfolded:
        channels, height, width = 4 * channels, height // 2, width // 2
    grad_conv = torch.empty((batch, channels, height, width), dtype=saved.dtype, device=saved.device,
                            memory_format=torch.channels_last)
    return [grad_conv] + [torch.zeros(shape, dtype=torch.float32, device=saved.device)
                          for shape in ((channels,), (batch, channels), (batch, height, width))]


@torch.library.custom_op("pixelfolder_triton::styled_conv2d_epilogue_backward", mutates_args=())
def _epilogue_backward_op(grad_output: torch.Tensor, saved: torch.Tensor, demod: Optional[torch.Tensor],
                          noise: Optional[torch.Tensor], noise_strength: Optional[torch.Tensor],
                          bias: Optional[torch.Tensor], recomputed: bool, negative_slope: float, gain: float,
                          unfold_output: bool) -> list[torch.Tensor]:
    """[grad of the demodulated conv, of the bias, of d (B, C_out), of the noise term (B, H, W)]."""
    outputs = _epilogue_backward_outputs(saved, unfold_output and not recomputed)
    batch, channels, height, width = outputs[0].shape

    def grid(meta):
        return triton.cdiv(height * width, meta["BLOCK_M"]), triton.cdiv(channels, meta["BLOCK_N"]), batch

    _epilogue_backward_kernel[grid](
        grad_output, saved, demod, noise, noise_strength, bias, *outputs, height * width, width, channels,
        *grad_output.stride(), *saved.stride(), *_noise_strides(noise), negative_slope, gain, RECOMPUTED=recomputed,
        DEMODULATE=demod is not None, HAS_NOISE=noise is not None, HAS_BIAS=bias is not None,
        UNFOLD_OUTPUT=unfold_output)
    return outputs


@_epilogue_backward_op.register_fake
def _(grad_output, saved, demod, noise, noise_strength, bias, recomputed, negative_slope, gain, unfold_output):
    return _epilogue_backward_outputs(saved, unfold_output and not recomputed)


@torch.autograd.function.once_differentiable
def _backward(ctx, grad_output):
    input, weight, styles, noise, noise_strength, bias, output = ctx.saved_tensors
    demodulate, negative_slope, gain, unfold_output, eps = ctx.options
    dtype = input.dtype
    demod = demodulation(weight, styles, eps) if demodulate else None
    # A slope <= 0 makes the activation non-invertible: recompute the conv (same kernel, epilogue off).
    recompute = not (negative_slope > 0 and gain != 0)
    saved = styled_conv2d_op(input, weight, styles, None, None, None, False, 1.0, 1.0, False, eps) if recompute \
        else output
    grad_conv, grad_bias, grad_demod, grad_noise_term = _epilogue_backward_op(
        grad_output, saved, demod, noise, noise_strength, bias, recompute, negative_slope, gain, unfold_output)

    grad_noise = grad_strength = None
    if noise is not None:
        grad_noise_term = grad_noise_term[:, None]
        grad_strength = (grad_noise_term * noise.float()).sum().reshape(noise_strength.shape).to(dtype)
        grad_noise = grad_noise_term * noise_strength.float()
        if noise.shape[0] == 1:  # shared by the batch
            grad_noise = grad_noise.sum(dim=0, keepdim=True)
        grad_noise = grad_noise.to(dtype)

    styles_map = styles[:, :, None, None]
    padding = weight.shape[-1] // 2
    grad_modulated, grad_weight, _ = torch.ops.aten.convolution_backward(
        grad_conv, input * styles_map, weight, None, [1, 1], [padding, padding], [1, 1], False, [0, 0], 1,
        [True, True, False])
    grad_input = grad_modulated * styles_map
    grad_styles = (grad_modulated * input).sum(dim=(2, 3), dtype=torch.float32)
    grad_weight = grad_weight.float()
    if demodulate:
        # d = rsqrt(t + eps) with t[b, o] = sum_i s[b, i]^2 q[o, i], q[o, i] = sum_k W[o, i, k]^2.
        grad_t = grad_demod * -0.5 * demod ** 3
        styles32, weight32 = styles.float(), weight.float()
        grad_styles += 2 * styles32 * (grad_t @ weight32.square().sum(dim=(2, 3)))
        grad_weight += 2 * weight32 * (grad_t.t() @ styles32.square())[:, :, None, None]
    return (grad_input, grad_weight.to(weight.dtype), grad_styles.to(styles.dtype), grad_noise, grad_strength,
            None if bias is None else grad_bias.to(bias.dtype), None, None, None, None, None)


styled_conv2d_op.register_autograd(_backward, setup_context=_setup_context)


def styled_conv2d(input, weight, styles, noise, noise_strength, bias, demodulate, up, kernel, negative_slope, gain,
                  unfold_output, eps):
    if up == 2:  # StyleGAN2's transposed-conv variant is not fused: PixelFolder's unfold path never runs it
        return reference_styled_conv2d(input, weight, styles, noise, noise_strength, bias, demodulate, up, kernel,
                                       negative_slope, gain, unfold_output, eps)
    return styled_conv2d_op(input, weight, styles, noise, noise_strength, bias, demodulate, negative_slope, gain,
                            unfold_output, eps)
