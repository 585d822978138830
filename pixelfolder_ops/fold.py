"""Pixel fold / unfold in PixelFolder's channel order.

fold:   (B, C, H, W) -> (B, 4C, H/2, W/2), output channel (dy * 2 + dx) * C + c holds x[c, 2i + dy, 2j + dx].
unfold: the exact inverse. This is not torch.pixel_unshuffle's order (c * 4 + dy * 2 + dx); official
PixelFolder checkpoints depend on this one.
"""
from . import _checks
from .backend import call


def fold(input, *, backend=None):
    """Fold 2x2 spatial blocks into channels: (B, C, H, W) -> (B, 4C, H/2, W/2)."""
    _checks.tensor("fold", "input", input, ndim=4)
    height, width = input.shape[-2:]
    if height % 2 or width % 2:
        raise ValueError(f"fold: argument 'input' must have even height and width, "
                         f"got shape {tuple(input.shape)}")
    return call(backend, "fold", input.device, input)


def unfold(input, *, backend=None):
    """Unfold channels into 2x2 spatial blocks: (B, 4C, H, W) -> (B, C, 2H, 2W)."""
    _checks.tensor("unfold", "input", input, ndim=4)
    if input.shape[1] % 4:
        raise ValueError(f"unfold: argument 'input' must have a channel count divisible by 4, "
                         f"got shape {tuple(input.shape)}")
    return call(backend, "unfold", input.device, input)
