"""Output layouts and shapes for the fake kernels, stating csrc/common.h's rules in Python."""
import torch


def memory_format(tensor):
    """Channels-last exactly when ``tensor`` is 4-D, channels-last and not also NCHW-contiguous."""
    channels_last = (tensor.dim() == 4 and not tensor.is_contiguous()
                     and tensor.is_contiguous(memory_format=torch.channels_last))
    return torch.channels_last if channels_last else torch.contiguous_format


def empty(shape, like, layout_of=None):
    """A new tensor of ``shape`` with ``like``'s dtype and device, laid out as the kernels lay out
    outputs computed from ``layout_of`` (default ``like``)."""
    layout_of = like if layout_of is None else layout_of
    return torch.empty(shape, dtype=like.dtype, device=like.device, memory_format=memory_format(layout_of))

