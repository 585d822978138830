"""The Triton backend: one kernel per StyledConv and per ToRGB layer (docs/design.md, section 7),
and Triton fold / unfold and Fourier embedding. Each op is a torch.ops.pixelfolder_triton op, its schema
generated from the op's record (pixelfolder_ops/_protocol.py), with a fake kernel and autograd, so
torch.compile(fullgraph=True) traces through it. ``modulated_conv2d`` runs the
StyledConv kernel; ``fused_leaky_relu`` and ``upfirdn2d`` are the reference's (see their files).

The kernels run on CUDA GPUs, or on the CPU under Triton's interpreter (TRITON_INTERPRET=1, for tests).
"""
import torch

try:
    import triton
except ImportError:
    triton = None

if triton is not None:
    from ._config import INTERPRET
    from .fold import fold, unfold
    from .fourier_embedding import fourier_embedding
    from .fused_leaky_relu import fused_leaky_relu
    from .modulated_conv2d import modulated_conv2d
    from .styled_conv2d import styled_conv2d
    from .to_rgb import to_rgb
    from .upfirdn2d import upfirdn2d


def unavailable_reason(name):
    if triton is None:
        return "Triton is not installed (pip install triton)"
    if not INTERPRET and not torch.cuda.is_available():
        return "it needs a CUDA GPU (or TRITON_INTERPRET=1 to run its kernels on the CPU, slowly)"
    return None
