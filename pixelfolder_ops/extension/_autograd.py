"""Autograd helpers shared by the op modules."""
import torch


def first_order_only(op_name, forward_name):
    """Registers an autograd formula for the backward op ``op_name`` that refuses to differentiate it."""

    def backward(ctx, *grads):
        raise RuntimeError(f"pixelfolder_ops: {forward_name} supports first-order gradients only; "
                           f"a second derivative (through {op_name}) is not implemented")

    torch.library.register_autograd(op_name, backward)


def refuse_filter_gradient(ctx, index, op, argument):
    """Resampling filters are fixed: a gradient asked for one is refused rather than silently dropped."""
    if ctx.needs_input_grad[index]:
        raise RuntimeError(f"pixelfolder_ops: {op} has no gradient for its '{argument}' (a fixed filter); "
                           f"detach it or use the reference backend")
