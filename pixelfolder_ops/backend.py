"""Backend choice for every op: per call (``backend=``), per context (``use_backend``), or by the
environment variable ``PIXELFOLDER_OPS_BACKEND``; the default is ``auto``.

A backend is a module that defines one function per op, with the op's name. Asking by name for a
backend that is unknown or not available on this install is an error, never a silent fallback.

``auto`` on a GPU measures: the first call of an op with a new signature (shapes, dtypes, layouts and
arguments) times it on every available backend and keeps the fastest for that signature, as
``torch.backends.cudnn.benchmark`` does for convolutions; ``auto_choices()`` shows what it chose. A call
whose tensors require gradients is timed forward and backward together (training runs both), and keeps
a choice of its own, apart from the inference choice of the same signature. On
the CPU it takes the first available of (cpu, reference), so CPU runs stay bitwise reproducible.
``PIXELFOLDER_OPS_AUTO=measure`` or ``=preference`` sets this for every device. Under torch.compile
or CUDA graph capture nothing is measured: a signature chosen by an earlier eager call keeps its
backend, a new one gets the preference order, so run one eager call before compiling or capturing.
``adopt_auto_choices`` takes another process's choices (multi-GPU training: the same kernels everywhere).
"""
import contextlib
import importlib
import os
import threading
import time

import torch

ENV_VAR = "PIXELFOLDER_OPS_BACKEND"
AUTO_ENV_VAR = "PIXELFOLDER_OPS_AUTO"

# Every backend the package knows, and the module that implements it. A backend module defines one
# function per op, with the op's name, taking the op's checked argument record (pixelfolder_ops/_protocol.py),
# and ``unavailable_reason(name)``: None when the backend can run
# on this install, else a sentence saying what is missing. "cpu" and "cuda" share the compiled
# extension's module; each reports for its own device.
_MODULES = {"reference": "pixelfolder_ops.reference", "cpu": "pixelfolder_ops.extension",
            "cuda": "pixelfolder_ops.extension", "triton": "pixelfolder_ops.triton"}
KNOWN_BACKENDS = tuple(_MODULES)
# What "auto" considers, by device type, in the order it prefers when it does not measure.
_AUTO_PREFERENCE = {"cuda": ("cuda", "triton", "reference"), "cpu": ("cpu", "reference")}
_AUTO_MEASURES = {"cuda": True, "cpu": False}

_state = threading.local()


class BackendUnavailableError(RuntimeError):
    """A backend was asked for by name but cannot run on this install."""


# Filled on first use, outside any compiled region: later look-ups are plain dict reads, which
# torch.compile traces without a graph break (it cannot trace importlib or functools' caches).
_modules, _reasons = {}, {}


def _backend_module(name):
    if name not in _modules:
        try:
            _modules[name] = importlib.import_module(_MODULES[name])
        except ImportError as error:
            _modules[name] = error
    return _modules[name]


def _unavailable_reason(name):
    """None when backend ``name`` can run here, else why not (found once per process)."""
    if name not in _reasons:
        module = _backend_module(name)
        if isinstance(module, ImportError):
            _reasons[name] = f"its module {_MODULES[name]} cannot be imported ({module})"
        else:
            _reasons[name] = module.unavailable_reason(name)
    return _reasons[name]


def available_backends():
    """Names of the backends that can run here, 'auto' excluded."""
    return tuple(name for name in KNOWN_BACKENDS if _unavailable_reason(name) is None)


def _check_name(name):
    if not isinstance(name, str) or (name != "auto" and name not in KNOWN_BACKENDS):
        raise ValueError(f"pixelfolder_ops: unknown backend {name!r}; expected one of "
                         f"{', '.join(('auto',) + KNOWN_BACKENDS)}")
    if name != "auto":
        reason = _unavailable_reason(name)
        if reason is not None:
            raise BackendUnavailableError(f"pixelfolder_ops: backend '{name}' is unavailable: {reason}")
    return name


def get_backend():
    """The backend name in force in this thread: the innermost ``use_backend``, else
    ``set_backend``'s, else the environment variable, else 'auto'."""
    name = getattr(_state, "name", None)
    if name is None:
        name = os.environ.get(ENV_VAR, "auto")
    return name


def set_backend(name):
    """Choose the backend for this thread from now on (None: back to the environment default)."""
    _state.name = None if name is None else _check_name(name)


@contextlib.contextmanager
def use_backend(name):
    """Run the block with the named backend, then restore the previous choice."""
    previous = getattr(_state, "name", None)
    _state.name = _check_name(name)
    try:
        yield
    finally:
        _state.name = previous


def call(name, op, args):
    """Runs ``op`` on backend ``name`` (None: the one in force) with its checked argument record ``args``,
    for the device of the record's first tensor."""
    name = _check_name(get_backend() if name is None else name)
    if name == "auto":
        name = _auto_backend(op, args)
    return getattr(_backend_module(name), op)(args)


# (op, device, mode, signature) -> the backend "auto" measured fastest; mode is "training" or "inference".
_auto_choices = {}


def auto_choices():
    """What ``auto`` has measured so far: {(op, device, mode, signature): backend name}."""
    return dict(_auto_choices)


def adopt_auto_choices(choices, device):
    """Take ``choices`` (another process's ``auto_choices()``) as this process's, for ``device``: in
    multi-GPU training every process then runs every layer on the same backend."""
    for (op, _, mode, signature), name in choices.items():
        _auto_choices[(op, str(device), mode, signature)] = name


def clear_auto_choices():
    """Forget every measured choice: the next call of each signature measures again."""
    _auto_choices.clear()


def _auto_measures(device):
    mode = os.environ.get(AUTO_ENV_VAR)
    if mode is None:
        return _AUTO_MEASURES.get(device.type, False)
    if mode not in ("measure", "preference"):
        raise ValueError(f"pixelfolder_ops: {AUTO_ENV_VAR} must be 'measure' or 'preference', got {mode!r}")
    return mode == "measure"


def _auto_candidates(device):
    return [n for n in _AUTO_PREFERENCE.get(device.type, ("reference",)) if _unavailable_reason(n) is None]


def auto_measures(device):
    """Whether the backend in force is 'auto' and it measures on ``device``: measuring is on there
    and more than one backend can run."""
    return get_backend() == "auto" and _auto_measures(device) and len(_auto_candidates(device)) > 1


def _auto_backend(op, args):
    device = args[0].device
    candidates = _auto_candidates(device)
    if len(candidates) == 1 or not _auto_measures(device):
        return candidates[0]
    training = _differentiated(args)
    key = (op, str(device), "training" if training else "inference", _signature(args))
    choice = _auto_choices.get(key)
    if choice is None:
        if not _can_measure(device):
            return candidates[0]
        choice = _auto_choices[key] = _fastest(op, candidates, device, args, training)
    return choice


def _differentiated(args):
    """Whether autograd will differentiate this call: gradients are on and a tensor requires one."""
    return torch.is_grad_enabled() and any(isinstance(a, torch.Tensor) and a.requires_grad for a in args)


def _signature(args):
    """What makes two calls of an op run the same kernels: tensors by shape, dtype and layout."""
    def describe(value):
        if isinstance(value, torch.Tensor):
            return (tuple(value.shape), value.dtype, tuple(value.stride()))
        if isinstance(value, (list, tuple)):
            return tuple(describe(v) for v in value)
        return value
    return tuple(describe(a) for a in args)


def _can_measure(device):
    if torch.compiler.is_compiling():
        return False
    return not (device.type == "cuda" and torch.cuda.is_current_stream_capturing())


def _fastest(op, candidates, device, args, training=False, repeats=3):
    """The candidate backend with the shortest best-of-``repeats`` time, after one untimed run (which
    also compiles and autotunes what needs it). A run is the forward alone, or with ``training`` the
    forward and the backward to every tensor that requires a gradient. A candidate that cannot run
    these arguments is left out; when none can, the preferred one's error is raised."""
    def synchronize():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    differentiable = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad] if training else []

    def run(function):
        with torch.set_grad_enabled(training):
            output = function(args)
            if training:
                torch.autograd.grad(output, differentiable, torch.ones_like(output), allow_unused=True)

    seconds, errors = {}, []
    for name in candidates:
        function = getattr(_backend_module(name), op)
        try:
            run(function)
        except Exception as error:  # e.g. a dtype this backend's kernels do not take
            errors.append(error)
            continue
        best = float("inf")
        for _ in range(repeats):
            synchronize()
            start = time.perf_counter()
            run(function)
            synchronize()
            best = min(best, time.perf_counter() - start)
        seconds[name] = best
    if not seconds:
        raise errors[0]
    return min(seconds, key=seconds.get)
