"""Sinusoidal (Fourier) coordinate embedding: sin(B [x, y] + b) on an H x W grid made by the op."""
from typing import NamedTuple

from . import _checks
from ._protocol import Tensor, public_op


class FourierEmbeddingArguments(NamedTuple):
    weight: Tensor
    bias: Tensor
    height: int
    width: int


@public_op(FourierEmbeddingArguments)
def fourier_embedding(args):
    """Embed the grid x = linspace(-1, 1, width) (along the width), y = linspace(-1, 1, height).

    ``weight`` (C, 2) holds the frequencies of x (column 0) and y (column 1); ``bias`` (C,) the
    phases. Returns (1, C, height, width): the embedding does not depend on the image, so the batch
    shares it.
    """
    op = "fourier_embedding"
    weight, bias = args.weight, args.bias
    _checks.tensor(op, "weight", weight, ndim=2)
    if weight.shape[1] != 2:
        _checks.fail(op, "weight", "of shape (C, 2)", f"shape {tuple(weight.shape)}")
    _checks.tensor(op, "bias", bias, ndim=1)
    _checks.size(op, "bias", tuple(bias.shape), (weight.shape[0],))
    _checks.same_dtype_device(op, "weight", weight, bias=bias)
    _checks.positive_int(op, "height", args.height)
    _checks.positive_int(op, "width", args.width)
    return args
