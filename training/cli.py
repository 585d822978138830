"""What the three commands (training.train, training.generate, training.evaluate) share on their command
lines: a parser whose errors are one line, and the argument validators (argparse ``type=`` functions).

A validator turns the text given on the command line into the value, or raises
``argparse.ArgumentTypeError`` saying what was expected and what was found; argparse then prints
``prog: error: argument --flag: <that>``. The validators also accept values that are already of their
type, so that a configuration built in Python is checked by the same rules (``check_value``).
"""
import argparse
import math
import os
import sys

import torch

from models.formats import reason  # noqa: F401  (the commands quote errors with it)


class CommandLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (the usage is in ``--help``), exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _parse(text, kind, description):
    try:
        return kind(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected {description}, got {text!r}") from None


def _describe(kind, minimum=None, maximum=None, above=None, below=None):
    bounds = [f"{relation} {bound}" for relation, bound in ((">=", minimum), (">", above), ("<=", maximum), ("<", below))
              if bound is not None]
    return " ".join([kind] + [" and ".join(bounds)] if bounds else [kind])


def _within(value, minimum=None, maximum=None, above=None, below=None):
    return not ((minimum is not None and value < minimum) or (maximum is not None and value > maximum)
                or (above is not None and value <= above) or (below is not None and value >= below))


def integer(minimum=None, maximum=None):
    """An int within [minimum, maximum] (either bound may be None)."""
    description = _describe("an integer", minimum, maximum)

    def convert(text):
        if isinstance(text, bool) or isinstance(text, float) and not text.is_integer():
            raise argparse.ArgumentTypeError(f"expected {description}, got {text!r}")
        value = _parse(text, int, description)
        if not _within(value, minimum, maximum):
            raise argparse.ArgumentTypeError(f"expected {description}, got {text!r}")
        return value
    return convert


def number(minimum=None, maximum=None, above=None, below=None):
    """A finite float within the bounds: inclusive ``minimum`` / ``maximum``, exclusive ``above`` / ``below``."""
    description = _describe("a finite number", minimum, maximum, above, below)

    def convert(text):
        value = _parse(text, float, description)
        if not math.isfinite(value) or not _within(value, minimum, maximum, above, below):
            raise argparse.ArgumentTypeError(f"expected {description}, got {text!r}")
        return value
    return convert


def power_of_two(minimum, maximum):
    description = f"a power of two from {minimum} to {maximum}"

    def convert(text):
        value = _parse(text, int, description)
        if value < minimum or value > maximum or value & (value - 1):
            raise argparse.ArgumentTypeError(f"expected {description}, got {text!r}")
        return value
    return convert


def output_folder(text):
    """A folder to write into: it may not exist yet, but no part of its path may be a file."""
    path = os.path.abspath(os.path.expanduser(str(text)))
    probe = path
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise argparse.ArgumentTypeError(f"expected a folder (new or existing), got {str(text)!r}, where {probe} "
                                         f"is a file")
    return str(text)


# --size of the commands that read a network file: the resolution its networks must have.
network_size = power_of_two(8, 1024)


def output_file(text):
    """A file to write: not a folder, and no part of its folder a file."""
    if os.path.isdir(os.path.expanduser(str(text))):
        raise argparse.ArgumentTypeError(f"expected a file path, got the folder {str(text)!r}")
    output_folder(os.path.dirname(os.path.abspath(os.path.expanduser(str(text)))))
    return str(text)


def existing_path(text):
    """A file or folder that exists."""
    if not os.path.exists(os.path.expanduser(str(text))):
        raise argparse.ArgumentTypeError(f"expected an existing file or folder, got {str(text)!r}, which does not "
                                         f"exist")
    return str(text)


def device(text):
    """'auto' (a GPU if there is one, else the CPU), 'cpu', or 'cuda' or 'cuda:N' of a GPU that is here."""
    if text == "auto":
        return text
    try:
        value = torch.device(text)
    except (RuntimeError, TypeError):
        raise argparse.ArgumentTypeError(f"expected 'auto', 'cpu', 'cuda' or 'cuda:N', got {text!r}") from None
    if value.type not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"expected 'auto', 'cpu', 'cuda' or 'cuda:N', got {text!r}")
    if value.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"expected a device this machine has, got {text!r}: PyTorch sees no CUDA "
                                         f"GPU here (torch {torch.__version__})")
    if value.type == "cuda" and value.index is not None and value.index >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(f"expected a GPU index below {torch.cuda.device_count()}, got {text!r}")
    return str(text)


def resolved_device(text):
    """The torch.device a ``device`` argument names ('auto': the GPU if there is one, else the CPU)."""
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(text)


def default_num_workers():
    """Data loading processes for each process of a run: its share of the CPU cores this process may use
    (torchrun starts LOCAL_WORLD_SIZE of them on a machine), one left for training itself, at most 8."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(0, min(8, cores // int(os.environ.get("LOCAL_WORLD_SIZE", 1)) - 1))


def check_value(flag, validator, value):
    """``validator(value)``, with its complaint as a ValueError naming ``flag`` (for settings made in Python)."""
    try:
        return validator(value)
    except argparse.ArgumentTypeError as error:
        raise ValueError(f"argument {flag}: {error}") from None


def fail(message, status=1):
    """Exit with ``message`` as the one line the user sees."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(status)
