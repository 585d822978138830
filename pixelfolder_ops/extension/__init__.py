"""The "cpu" and "cuda" backends: the compiled kernels of csrc/, registered as torch.ops.pixelfolder_ops
with fake kernels and autograd formulas (one module per op, as in pixelfolder_ops/reference/).

Nothing is built or loaded at import: the extension is loaded (built first if needed) by the first
``unavailable_reason``, which the backend switch asks before it runs either backend, and the op schemas
are defined then. ``unavailable_reason`` says what is missing when it cannot load.
"""
from . import _loader
from . import fold as _fold
from . import fourier_embedding as _fourier_embedding
from . import fused_leaky_relu as _fused_leaky_relu
from . import modulated_conv2d as _modulated_conv2d
from . import styled_conv2d as _styled_conv2d
from . import to_rgb as _to_rgb
from . import upfirdn2d as _upfirdn2d
from ._library import LIBRARY
from ._loader import load
from .fold import fold, unfold
from .fourier_embedding import fourier_embedding
from .fused_leaky_relu import fused_leaky_relu
from .modulated_conv2d import modulated_conv2d
from .styled_conv2d import styled_conv2d
from .to_rgb import to_rgb
from .upfirdn2d import upfirdn2d

_OP_MODULES = (_fold, _fourier_embedding, _fused_leaky_relu, _modulated_conv2d, _styled_conv2d, _to_rgb, _upfirdn2d)


def unavailable_reason(name):
    """None when backend ``name`` ("cpu" or "cuda") can run here, else why not. Loads the extension
    (building it if needed) and defines its ops, once per process."""
    reason = _loader.unavailable_reason(name)
    if load().module is not None and not LIBRARY.defined:
        for op in _OP_MODULES:
            op.register(LIBRARY)
    return reason


def build_info():
    """What the loaded extension was built with (backends, CUDA archs, versions), or None."""
    module = load().module
    return None if module is None else module.build_info()


__all__ = ["build_info", "fold", "fourier_embedding", "fused_leaky_relu", "load", "modulated_conv2d",
           "styled_conv2d", "to_rgb", "unavailable_reason", "unfold", "upfirdn2d"]
