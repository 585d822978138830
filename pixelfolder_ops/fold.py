"""Pixel fold / unfold in PixelFolder's channel order.

fold:   (B, C, H, W) -> (B, 4C, H/2, W/2), output channel (dy * 2 + dx) * C + c holds x[c, 2i + dy, 2j + dx].
unfold: the exact inverse. This is not torch.pixel_unshuffle's order (c * 4 + dy * 2 + dx); official
PixelFolder checkpoints depend on this one.
"""
from typing import NamedTuple

from . import _checks
from ._protocol import Tensor, public_op


class FoldArguments(NamedTuple):
    input: Tensor


class UnfoldArguments(NamedTuple):
    input: Tensor


@public_op(FoldArguments)
def fold(args):
    """Fold 2x2 spatial blocks into channels: (B, C, H, W) -> (B, 4C, H/2, W/2)."""
    _checks.tensor("fold", "input", args.input, ndim=4)
    height, width = args.input.shape[-2:]
    if height % 2 or width % 2:
        raise ValueError(f"fold: argument 'input' must have even height and width, "
                         f"got shape {tuple(args.input.shape)}")
    return args


@public_op(UnfoldArguments)
def unfold(args):
    """Unfold channels into 2x2 spatial blocks: (B, 4C, H, W) -> (B, C, 2H, 2W)."""
    _checks.tensor("unfold", "input", args.input, ndim=4)
    if args.input.shape[1] % 4:
        raise ValueError(f"unfold: argument 'input' must have a channel count divisible by 4, "
                         f"got shape {tuple(args.input.shape)}")
    return args
