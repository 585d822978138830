"""Backend choice for every op: per call (``backend=``), per context (``use_backend``), or by the
environment variable ``PIXELFOLDER_OPS_BACKEND``; the default is ``auto``.

A backend is a module that defines one function per op, with the op's name. Asking by name for a
backend that is unknown or not available on this install is an error, never a silent fallback.
"""
import contextlib
import importlib
import os
import threading

ENV_VAR = "PIXELFOLDER_OPS_BACKEND"

# Every backend the package knows, and the module that implements it. A backend module defines one
# function per op, with the op's name, and ``unavailable_reason(name)``: None when the backend can run
# on this install, else a sentence saying what is missing. "cpu" and "cuda" share the compiled
# extension's module; each reports for its own device.
_MODULES = {"reference": "pixelfolder_ops.reference", "cpu": "pixelfolder_ops.extension",
            "cuda": "pixelfolder_ops.extension", "triton": "pixelfolder_ops.triton"}
KNOWN_BACKENDS = tuple(_MODULES)
# What "auto" tries first, by device type.
_AUTO_PREFERENCE = {"cuda": ("cuda", "triton", "reference"), "cpu": ("cpu", "reference")}

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


def resolve(name, device):
    """The backend module for an op call on ``device`` (a torch.device)."""
    name = _check_name(get_backend() if name is None else name)
    if name == "auto":
        preference = _AUTO_PREFERENCE.get(device.type, ("reference",))
        name = next(n for n in preference if _unavailable_reason(n) is None)
    return _backend_module(name)
