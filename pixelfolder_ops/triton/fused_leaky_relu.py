"""Bias + leaky ReLU + gain: the reference's two PyTorch ops. Standalone, it is one memory-bound pass
that torch.compile fuses into its neighbours; inside a StyledConv it is fused into the conv's epilogue."""
from ..reference.fused_leaky_relu import fused_leaky_relu

__all__ = ["fused_leaky_relu"]
