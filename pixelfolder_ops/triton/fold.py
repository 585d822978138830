"""Pixel fold / unfold in PixelFolder's channel order, as one Triton copy kernel run either way:
folded channel (dy * 2 + dx) * C + c of pixel (i, j) is unfolded channel c of pixel (2i + dy, 2j + dx)."""
import triton
import triton.language as tl

from .._layout import empty
from ..fold import FoldArguments, UnfoldArguments
from ._library import LIBRARY
from ._indexing import fits_int32_offsets

_BLOCK = 1024


@triton.jit
def _fold_copy_kernel(folded_ptr, unfolded_ptr, numel, channels, height, width,
                      folded_stride_b, folded_stride_c, folded_stride_h, folded_stride_w,
                      unfolded_stride_b, unfolded_stride_c, unfolded_stride_h, unfolded_stride_w,
                      FOLD: tl.constexpr, INDEX_64: tl.constexpr, BLOCK: tl.constexpr):
    """One element per lane over the folded shape (B, 4C, height, width), walked in (b, i, j, dy, dx, c)
    order so that channels-last tensors are read and written contiguously. ``channels`` is C. Indices
    in 64 bits only with INDEX_64 (tensors with offsets of 2^31 and more)."""
    block = tl.program_id(0)
    if INDEX_64:
        block = block.to(tl.int64)
    index = block * BLOCK + tl.arange(0, BLOCK)
    in_range = index < numel
    c = index % channels
    rest = index // channels
    quadrant = rest % 4
    rest = rest // 4
    j = rest % width
    rest = rest // width
    i = rest % height
    b = rest // height
    folded = (b * folded_stride_b + (quadrant * channels + c) * folded_stride_c + i * folded_stride_h
              + j * folded_stride_w)
    unfolded = (b * unfolded_stride_b + c * unfolded_stride_c + (2 * i + quadrant // 2) * unfolded_stride_h
                + (2 * j + quadrant % 2) * unfolded_stride_w)
    if FOLD:
        tl.store(folded_ptr + folded, tl.load(unfolded_ptr + unfolded, mask=in_range), mask=in_range)
    else:
        tl.store(unfolded_ptr + unfolded, tl.load(folded_ptr + folded, mask=in_range), mask=in_range)


def _folded_shape(input):
    batch, channels, height, width = input.shape
    return batch, 4 * channels, height // 2, width // 2


def _unfolded_shape(input):
    batch, channels, height, width = input.shape
    return batch, channels // 4, 2 * height, 2 * width


def _copy(folded, unfolded, fold_direction):
    batch, channels, height, width = unfolded.shape
    numel = unfolded.numel()
    _fold_copy_kernel[(triton.cdiv(numel, _BLOCK),)](
        folded, unfolded, numel, channels, height // 2, width // 2, *folded.stride(), *unfolded.stride(),
        FOLD=fold_direction, INDEX_64=not fits_int32_offsets(folded, unfolded, headroom=_BLOCK), BLOCK=_BLOCK)


def _fold(args):
    out = empty(_folded_shape(args.input), args.input)
    _copy(out, args.input, fold_direction=True)
    return out


def _unfold(args):
    out = empty(_unfolded_shape(args.input), args.input)
    _copy(args.input, out, fold_direction=False)
    return out


LIBRARY.define("fold", FoldArguments)
LIBRARY.define("unfold", UnfoldArguments)
LIBRARY.impl("fold", _fold)
LIBRARY.impl("unfold", _unfold)
LIBRARY.register_fake("fold", lambda args: empty(_folded_shape(args.input), args.input))
LIBRARY.register_fake("unfold", lambda args: empty(_unfolded_shape(args.input), args.input))
# Each is the other's exact inverse, hence its adjoint (a permutation): gradients of any order.
LIBRARY.register_autograd("fold", lambda ctx, grad: {"input": LIBRARY.call("unfold", input=grad)})
LIBRARY.register_autograd("unfold", lambda ctx, grad: {"input": LIBRARY.call("fold", input=grad)})


def fold(args):
    return LIBRARY.call("fold", args)


def unfold(args):
    return LIBRARY.call("unfold", args)
