"""upfirdn2d: the reference (one depthwise cuDNN conv). The one use on PixelFolder's path, the RGB
skip's x2 up-sampling, is fused into the ToRGB kernel."""
from ..reference.upfirdn2d import upfirdn2d

__all__ = ["upfirdn2d"]
