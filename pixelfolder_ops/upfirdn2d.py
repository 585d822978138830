"""upfirdn2d: upsample by zero insertion, pad (or crop, for negative pads), FIR filter, downsample.
The StyleGAN2-family signature: ``upfirdn2d(input, kernel, up=1, down=1, pad=(0, 0))``."""
from typing import NamedTuple

from . import _checks
from ._protocol import IntPair, IntQuad, Tensor, public_op


class Upfirdn2dArguments(NamedTuple):
    input: Tensor
    kernel: Tensor
    up: IntPair = 1  # an int or a pair (x, y); checked into a pair
    down: IntPair = 1
    pad: IntQuad = (0, 0)  # (p0, p1) for both axes or (x0, x1, y0, y1); checked into the four


@public_op(Upfirdn2dArguments)
def upfirdn2d(args):
    """Filter every channel of ``input`` (B, C, H, W) with the 2-D FIR ``kernel`` (kh, kw).

    ``up`` and ``down`` are an int or a pair (x, y); ``pad`` is (p0, p1) for both axes or
    (x0, x1, y0, y1). The kernel is applied as a true convolution (flipped), as StyleGAN2 does.
    Output size along x: (W * up_x + x0 + x1 - kw) // down_x + 1.
    """
    op = "upfirdn2d"
    input, kernel, pad = args.input, args.kernel, args.pad
    _checks.tensor(op, "input", input, ndim=4)
    _checks.tensor(op, "kernel", kernel, ndim=2)
    _checks.same_dtype_device(op, "input", input, kernel=kernel)
    up_x, up_y = _checks.int_pair(op, "up", args.up, minimum=1)
    down_x, down_y = _checks.int_pair(op, "down", args.down, minimum=1)
    if not isinstance(pad, (tuple, list)) or len(pad) not in (2, 4) or not all(_checks.is_int(p) for p in pad):
        _checks.fail(op, "pad", "a tuple of 2 or 4 ints", repr(pad))
    pad = tuple(pad)
    if len(pad) == 2:
        pad = (pad[0], pad[1], pad[0], pad[1])
    kernel_h, kernel_w = kernel.shape
    height, width = input.shape[-2:]
    out_h = height * up_y + pad[2] + pad[3] - kernel_h
    out_w = width * up_x + pad[0] + pad[1] - kernel_w
    if out_h < 0 or out_w < 0:
        raise ValueError(f"upfirdn2d: arguments 'pad' {pad} and 'kernel' {tuple(kernel.shape)} leave "
                         f"no output for an input of shape {tuple(input.shape)} with up=({up_x}, {up_y})")
    return args._replace(up=(up_x, up_y), down=(down_x, down_y), pad=pad)
