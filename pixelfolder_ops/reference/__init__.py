"""The reference backend: plain PyTorch with the official data flow. It is the oracle every other
backend is tested against, and the baseline every benchmark compares with."""
from .fold import fold, unfold
from .fourier_embedding import fourier_embedding
from .fused_leaky_relu import fused_leaky_relu
from .modulated_conv2d import modulated_conv2d
from .styled_conv2d import styled_conv2d
from .to_rgb import to_rgb
from .upfirdn2d import upfirdn2d


def unavailable_reason(name):
    return None  # plain PyTorch runs wherever PyTorch does
