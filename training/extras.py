"""The optional extras of pyproject.toml that the commands of training/ and benchmarks/ need, and the
check a command makes before importing them.

``pip install .`` installs what ``pixelfolder_ops`` needs and nothing else. A command of this clone
that needs an extra starts with

    from training import extras

    if __name__ == "__main__":
        extras.require("train")

so that, run without the extra, it exits with one line naming it instead of a traceback from deep
inside an import. Imported as a module, it checks nothing: the missing import raises as usual.
"""
import importlib
import sys

# The modules of each extra that a command cannot run without. matplotlib (in [bench] and [digits]) is
# left out: without it the commands write no plot and say so.
MODULES = {
    "train": ("numpy", "PIL", "lmdb", "tensorboard"),
    "bench": ("fvcore",),
    "digits": ("sklearn",),
    "triton": ("triton",),
    "onnx": ("onnx", "onnxruntime", "onnxscript"),
}


def install_command(extra):
    """What to run from the root of the clone to install ``extra``."""
    return f"pip install '.[{extra}]'"


def missing_modules(extra):
    """The modules of ``extra`` that cannot be imported here."""
    missing = []
    for module in MODULES[extra]:
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(module)
    return missing


def command_name():
    """How the running command was started: ``python -m training.train`` for a module run with -m."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return f"python -m {spec.name}" if spec is not None else sys.argv[0]


def require(*extras):
    """Exits with one line (status 1) naming the first of ``extras`` with a module that cannot be imported."""
    for extra in extras:
        missing = missing_modules(extra)
        if missing:
            sys.exit(f"{command_name()} needs the [{extra}] extra ({', '.join(missing)} cannot be imported): "
                     f"{install_command(extra)}")
