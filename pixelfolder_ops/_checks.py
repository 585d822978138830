"""Argument checks shared by every op. Each raises ValueError naming the op, the argument, what
was expected and what was given, before any backend runs: every backend sees only valid arguments,
so every backend treats bad ones the same way. Tensors with a zero-sized dimension are refused (the
convolution backends cannot agree on an empty batch or image)."""
import math

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def fail(op, arg, expected, given):
    raise ValueError(f"{op}: argument '{arg}' must be {expected}, got {given}")


def tensor(op, arg, value, ndim=None):
    """A floating-point tensor, of rank ``ndim`` when given."""
    if not isinstance(value, torch.Tensor):
        fail(op, arg, "a torch.Tensor", type(value).__name__)
    if value.dtype not in FLOAT_DTYPES:
        fail(op, arg, "a floating-point tensor (float16, bfloat16, float32 or float64)", value.dtype)
    if ndim is not None and value.dim() != ndim:
        fail(op, arg, f"a {ndim}-D tensor", f"shape {tuple(value.shape)} ({value.dim()}-D)")
    if value.numel() == 0:
        fail(op, arg, "a tensor with no zero-sized dimension", f"shape {tuple(value.shape)}")
    return value


def same_dtype_device(op, reference_arg, reference, **others):
    """Every tensor in ``others`` has ``reference``'s dtype and device."""
    for arg, value in others.items():
        if value is None:
            continue
        if value.device != reference.device:
            fail(op, arg, f"on {reference_arg}'s device ({reference.device})", f"a tensor on {value.device}")
        if value.dtype != reference.dtype:
            fail(op, arg, f"of {reference_arg}'s dtype ({reference.dtype})", f"dtype {value.dtype}")


def size(op, arg, value, expected):
    if value != expected:
        fail(op, arg, expected, value)


def is_int(value):
    """An int, and not a bool (True == 1, but a flag given as a size is a mistake)."""
    return isinstance(value, int) and not isinstance(value, bool)


def positive_int(op, arg, value):
    if not is_int(value) or value < 1:
        fail(op, arg, "a positive int", repr(value))
    return value


def number(op, arg, value, minimum=None, above=None):
    """A finite real number (not a bool), >= ``minimum`` / > ``above`` when given; returned as a float."""
    bounds = [f"{relation} {bound}" for relation, bound in ((">=", minimum), (">", above)) if bound is not None]
    expected = " ".join(["a finite number"] + bounds)
    if (not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value)
            or (minimum is not None and value < minimum) or (above is not None and value <= above)):
        fail(op, arg, expected, repr(value))
    return float(value)


def int_pair(op, arg, value, minimum=None):
    """An int, or a pair of ints (x, y), returned as a pair."""
    pair = (value, value) if is_int(value) else tuple(value) if isinstance(value, (tuple, list)) else None
    if pair is None or len(pair) != 2 or not all(is_int(v) for v in pair):
        fail(op, arg, "an int or a pair of ints", repr(value))
    if minimum is not None and min(pair) < minimum:
        fail(op, arg, f"at least {minimum}", repr(value))
    return pair


def resample_kernel(op, arg, value):
    """A FIR filter, 1-D or 2-D, given as numbers or a tensor, whose taps are finite and sum to a
    non-zero value (it is normalised to sum 1). A tensor's taps are not read while torch.compile traces
    (it would break the graph) or on the meta device (it has none)."""
    if isinstance(value, torch.Tensor):
        if value.dim() not in (1, 2) or value.numel() == 0:
            fail(op, arg, "a non-empty 1-D or 2-D filter", f"shape {tuple(value.shape)}")
        if torch.compiler.is_compiling() or value.device.type == "meta":
            return
        taps = value.detach().double().flatten().tolist()
    else:
        try:
            taps = [float(tap) for row in value for tap in (row if isinstance(row, (list, tuple)) else (row,))]
        except (TypeError, ValueError):
            fail(op, arg, "a 1-D or 2-D filter, as numbers or a tensor", repr(value))
        if not taps:
            fail(op, arg, "a non-empty 1-D or 2-D filter", repr(value))
    if not all(math.isfinite(tap) for tap in taps) or sum(taps) == 0:
        fail(op, arg, "a filter of finite taps with a non-zero sum (it is normalised to sum 1)", repr(value))
