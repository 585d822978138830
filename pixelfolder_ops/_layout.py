"""The output layout rule of every backend's 4-D ops (csrc/common.h states it for the C++ kernels), and
empty outputs that follow it (the fake kernels use them too)."""
import torch


def memory_format(tensor):
    """Channels-last exactly when one image of ``tensor`` (4-D) is channels-last and not also
    NCHW-contiguous: a batch broadcast from one image (batch stride 0) takes that image's layout. (An
    empty batch is NCHW-contiguous.)"""
    if tensor.dim() != 4:
        return torch.contiguous_format
    image = tensor[:1]
    channels_last = not image.is_contiguous() and image.is_contiguous(memory_format=torch.channels_last)
    return torch.channels_last if channels_last else torch.contiguous_format


def empty(shape, like, layout_of=None):
    """A new tensor of ``shape`` with ``like``'s dtype and device, laid out as the kernels lay out
    outputs computed from ``layout_of`` (default ``like``)."""
    layout_of = like if layout_of is None else layout_of
    return torch.empty(shape, dtype=like.dtype, device=like.device, memory_format=memory_format(layout_of))
