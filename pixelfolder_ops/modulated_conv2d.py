"""Modulated convolution (StyleGAN2): per-image weights W * s[b], optionally demodulated, with the
StyleGAN2 up-sampling (transposed conv + blur) and down-sampling (blur + strided conv) variants."""
from typing import NamedTuple, Optional

import torch

from . import _checks
from ._protocol import Tensor, public_op


class ModulatedConv2dArguments(NamedTuple):
    input: Tensor
    weight: Tensor
    styles: Tensor
    demodulate: bool = True
    up: int = 1
    down: int = 1
    # Taps (1-D or 2-D) or a tensor; checked into the normalised 2-D filter, None when not resampling.
    resample_kernel: Optional[Tensor] = (1, 3, 3, 1)
    eps: float = 1e-8


def make_resample_kernel(kernel, dtype=torch.float32, device=None):
    """A 1-D FIR (e.g. [1, 3, 3, 1]) as the separable 2-D kernel outer(k, k), normalised to sum 1;
    a 2-D kernel is only normalised. ValueError for taps that cannot be normalised (a zero sum)."""
    return _normalised_kernel("make_resample_kernel", "kernel", kernel, dtype, device)


def _normalised_kernel(op, arg, kernel, dtype, device):
    _checks.resample_kernel(op, arg, kernel)
    kernel = torch.as_tensor(kernel, dtype=dtype, device=device)
    if kernel.dim() == 1:
        kernel = kernel[:, None] * kernel[None, :]
    return kernel / kernel.sum()


def check_modulated_conv2d(op, input, weight, styles, up, down, resample_kernel):
    """The checks every modulated-conv op shares; returns the 2-D resample kernel when resampling."""
    _checks.tensor(op, "input", input, ndim=4)
    _checks.tensor(op, "weight", weight, ndim=4)
    _checks.tensor(op, "styles", styles, ndim=2)
    _checks.same_dtype_device(op, "input", input, weight=weight, styles=styles)
    batch, in_channels = input.shape[:2]
    if weight.shape[1] != in_channels:
        _checks.fail(op, "weight", f"of shape (C_out, {in_channels}, k, k) to match input's channels",
                     f"shape {tuple(weight.shape)}")
    _checks.size(op, "styles", tuple(styles.shape), (batch, in_channels))
    if not (_checks.is_int(up) and _checks.is_int(down)) or up not in (1, 2) or down not in (1, 2) or up * down == 4:
        _checks.fail(op, "up/down", "1 or 2, and not both 2", f"up={up!r}, down={down!r}")
    kernel_size = weight.shape[-1]
    if weight.shape[-2] != kernel_size or kernel_size % 2 == 0:
        _checks.fail(op, "weight", "a square kernel of odd size", f"shape {tuple(weight.shape)}")
    if down == 2 and (input.shape[-1] % 2 or input.shape[-2] % 2):
        _checks.fail(op, "input", "of even height and width for down=2", f"shape {tuple(input.shape)}")
    if up == 2 or down == 2:
        return _normalised_kernel(op, "resample_kernel", resample_kernel, input.dtype, input.device)
    return None


@public_op(ModulatedConv2dArguments)
def modulated_conv2d(args):
    """conv(input[b], W'[b]) with W'[b, o, i] = weight[o, i] * styles[b, i], and when ``demodulate``
    W'[b, o] scaled by rsqrt(sum_{i, kh, kw} W'[b, o, i, kh, kw]^2 + eps).

    input (B, C_in, H, W); weight (C_out, C_in, k, k), already carrying any equalised-lr scale;
    styles (B, C_in). Padding k // 2. ``up=2``: a stride-2 transposed conv then a blur with
    ``resample_kernel`` (times 4); ``down=2``: a blur then a stride-2 conv. The output is
    (B, C_out, H, W), (B, C_out, 2H, 2W) or (B, C_out, H/2, W/2).
    """
    op = "modulated_conv2d"
    kernel = check_modulated_conv2d(op, args.input, args.weight, args.styles, args.up, args.down,
                                    args.resample_kernel)
    return args._replace(demodulate=bool(args.demodulate), resample_kernel=kernel,
                         eps=_checks.number(op, "eps", args.eps, minimum=0))
