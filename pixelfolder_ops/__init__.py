"""pixelfolder_ops: the kernels PixelFolder and its StyleGAN2-family baselines run on.

Every op takes an optional keyword ``backend=``; see ``pixelfolder_ops.backend`` for the switch.
``fused_leaky_relu``, ``FusedLeakyReLU`` and ``upfirdn2d`` keep the StyleGAN2-family signatures, so
code written against that family's ``op`` module switches by changing its import.
"""
from ._layout import memory_format as output_memory_format
from .backend import (BackendUnavailableError, available_backends, get_backend, set_backend,
                      use_backend)
from .fold import fold, unfold
from .fourier_embedding import fourier_embedding
from .fused_leaky_relu import FusedLeakyReLU, fused_leaky_relu
from .modulated_conv2d import make_resample_kernel, modulated_conv2d
from .styled_conv2d import styled_conv2d
from .to_rgb import to_rgb
from .upfirdn2d import upfirdn2d

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailableError", "FusedLeakyReLU", "available_backends", "fold", "fourier_embedding",
    "fused_leaky_relu", "get_backend", "make_resample_kernel", "modulated_conv2d", "output_memory_format",
    "set_backend", "styled_conv2d", "to_rgb", "unfold", "upfirdn2d", "use_backend",
]
