"""Argument checks shared by every op. Each raises ValueError naming the op, the argument, what
was expected and what was given, before any backend runs."""
import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def fail(op, arg, expected, given):
    raise ValueError(f"{op}: argument '{arg}' must be {expected}, got {given}")


def tensor(op, arg, value, ndim=None):
    """A floating-point tensor, of rank ``ndim`` (an int or a tuple of allowed ranks) when given."""
    if not isinstance(value, torch.Tensor):
        fail(op, arg, "a torch.Tensor", type(value).__name__)
    if value.dtype not in FLOAT_DTYPES:
        fail(op, arg, "a floating-point tensor (float16, bfloat16, float32 or float64)", value.dtype)
    if ndim is not None:
        ranks = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if value.dim() not in ranks:
            expected = " or ".join(f"{r}-D" for r in ranks)
            fail(op, arg, f"a {expected} tensor", f"shape {tuple(value.shape)} ({value.dim()}-D)")
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


def positive_int(op, arg, value):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        fail(op, arg, "a positive int", repr(value))
    return value


def int_pair(op, arg, value, minimum=None):
    """An int, or a pair of ints (x, y), returned as a pair."""
    pair = (value, value) if isinstance(value, int) and not isinstance(value, bool) else tuple(value) \
        if isinstance(value, (tuple, list)) else None
    if pair is None or len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair):
        fail(op, arg, "an int or a pair of ints", repr(value))
    if minimum is not None and min(pair) < minimum:
        fail(op, arg, f"at least {minimum}", repr(value))
    return pair
