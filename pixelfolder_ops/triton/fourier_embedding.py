"""Fourier embedding in one Triton kernel: the coordinate grid is made in registers, so the only memory
traffic is the (1, C, H, W) output. The backward is exact PyTorch (two reductions per channel)."""
import torch
import triton
import triton.language as tl

from ..fourier_embedding import FourierEmbeddingArguments
from ..reference.fourier_embedding import coordinate_grid
from ._library import LIBRARY
from ._indexing import fits_int32_offsets

_BLOCK_C, _BLOCK_P = 16, 256


@triton.jit
def _linspace(index, steps):
    """torch.linspace(-1, 1, steps)[index], by PyTorch's formula: each half is stepped from its own end."""
    step = 2.0 / tl.maximum(steps - 1, 1)
    value = tl.where(index < steps // 2, -1.0 + step * index, 1.0 - step * (steps - 1 - index))
    return tl.where(steps == 1, -1.0, value)


# A size of 1 would otherwise be specialised into a compile-time constant, and _linspace divides by size - 1.
@triton.jit(do_not_specialize=["height", "width"])
def _fourier_embedding_kernel(weight_ptr, bias_ptr, out_ptr, channels, height, width,
                              INDEX_64: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    pixels = tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)
    c_ok = c < channels
    pixel_ok = pixels < height * width
    x = _linspace(pixels % width, width)
    y = _linspace(pixels // width, height)
    frequency_x = tl.load(weight_ptr + 2 * c, mask=c_ok, other=0.0).to(tl.float32)
    frequency_y = tl.load(weight_ptr + 2 * c + 1, mask=c_ok, other=0.0).to(tl.float32)
    phase = tl.load(bias_ptr + c, mask=c_ok, other=0.0).to(tl.float32)
    angle = frequency_x[:, None] * x[None, :] + frequency_y[:, None] * y[None, :] + phase[:, None]
    plane = c[:, None]
    if INDEX_64:  # an output of 2^31 elements or more
        plane = plane.to(tl.int64)
    tl.store(out_ptr + plane * (height * width) + pixels[None, :],
             tl.sin(angle).to(out_ptr.dtype.element_ty), mask=c_ok[:, None] & pixel_ok[None, :])


def _fourier_embedding(args):
    weight, height, width = args.weight, args.height, args.width
    channels = weight.shape[0]
    out = weight.new_empty(1, channels, height, width)
    grid = (triton.cdiv(channels, _BLOCK_C), triton.cdiv(height * width, _BLOCK_P))
    _fourier_embedding_kernel[grid](weight.contiguous(), args.bias.contiguous(), out, channels, height, width,
                                    # the pixel index runs up to a block past height * width
                                    INDEX_64=not fits_int32_offsets(out, headroom=_BLOCK_P),
                                    BLOCK_C=_BLOCK_C, BLOCK_P=_BLOCK_P)
    return out


def _setup_context(ctx, args, output):
    ctx.save_for_backward(args.weight, args.bias)
    ctx.size = args.height, args.width


def _backward(ctx, grad):
    weight, bias = ctx.saved_tensors
    grid = coordinate_grid(*ctx.size, torch.float32, weight.device)[0]  # (2, H, W)
    angle = torch.einsum("ck,khw->chw", weight.float(), grid) + bias.float()[:, None, None]
    grad_angle = grad[0].float() * torch.cos(angle)
    grad_weight = torch.einsum("chw,khw->ck", grad_angle, grid)
    return {"weight": grad_weight.to(weight.dtype), "bias": grad_angle.sum(dim=(1, 2)).to(bias.dtype)}


LIBRARY.define("fourier_embedding", FourierEmbeddingArguments)
LIBRARY.impl("fourier_embedding", _fourier_embedding)
LIBRARY.register_fake("fourier_embedding",
                      lambda args: args.weight.new_empty(1, args.weight.shape[0], args.height, args.width))
LIBRARY.register_autograd("fourier_embedding", _backward, _setup_context)


def fourier_embedding(args):
    return LIBRARY.call("fourier_embedding", args)
