"""The torch.ops.pixelfolder_triton namespace: the Triton backend's ops, whose schemas come from the ops'
records (pixelfolder_ops/_protocol.py) and whose kernels are the Python launchers of this package."""
from .._protocol import Library

LIBRARY = Library("pixelfolder_triton")
