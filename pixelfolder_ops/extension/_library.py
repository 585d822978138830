"""The torch.ops.pixelfolder_ops namespace, whose schemas the op modules define from the ops' records
and the compiled kernels (csrc/) implement."""
from .._protocol import Library

LIBRARY = Library("pixelfolder_ops")
