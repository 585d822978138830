"""Fourier embedding on the compiled kernels: the grid is made in the kernel; first-order gradients."""
import torch

from ..fourier_embedding import FourierEmbeddingArguments
from .._protocol import fields
from ._library import LIBRARY


def fourier_embedding(args):
    return LIBRARY.call("fourier_embedding", args)


def _setup_context(ctx, args, output):
    ctx.save_for_backward(args.weight, args.bias)


def _backward(ctx, grad_output):
    weight, bias = ctx.saved_tensors
    grad_weight, grad_bias = LIBRARY.call("fourier_embedding_backward", grad_output=grad_output, weight=weight,
                                          bias=bias)
    return {"weight": grad_weight, "bias": grad_bias}


def register(library):
    library.define("fourier_embedding", FourierEmbeddingArguments)
    library.define("fourier_embedding_backward",
                   ["Tensor grad_output", *fields(FourierEmbeddingArguments, "weight", "bias")], "(Tensor, Tensor)")

    @library.register_fake("fourier_embedding")
    def _(args):
        return args.weight.new_empty((1, args.weight.shape[0], args.height, args.width))

    @library.register_fake("fourier_embedding_backward")
    def _(args):
        return (torch.empty_like(args.weight, memory_format=torch.contiguous_format),
                torch.empty_like(args.bias, memory_format=torch.contiguous_format))

    library.register_autograd("fourier_embedding", _backward, _setup_context)
    library.first_order_only("fourier_embedding_backward", "fourier_embedding")
