"""Pretrained networks of the field as this package's modules: NVlabs pickles, rosinality
stylegan2-pytorch checkpoints, CIPS releases, official PixelFolder checkpoints, and our own.

    g, g_ema, d = models.load_pretrained("ffhq.pkl")

Files are never run: PyTorch files are read with ``torch.load(weights_only=True)`` (rosinality's
``args`` Namespace admitted), NVlabs pickles with the restricted unpickler of models.formats.nvlabs.
Anything that does not map exactly to our models is refused with one line (FormatError).
"""
import argparse
import os
import re
import zipfile
from dataclasses import dataclass, field

import torch

from .formats import FormatError, cips, nvlabs, reason, rosinality, unreadable
from .official import load_official, official_size

LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"  # torch.save before PyTorch 1.6


@dataclass
class Pretrained:
    """Networks read from a file, as this package's modules (None where the file has none)."""
    format: str
    architecture: dict  # models.architecture settings
    g: torch.nn.Module = None
    g_ema: torch.nn.Module = None
    d: torch.nn.Module = None
    optimizers: dict = field(default_factory=dict)  # {"g_optim": ..., "d_optim": ...} that map exactly
    notes: list = field(default_factory=list)  # what the conversion left out or made up
    details: dict = field(default_factory=dict)  # what the source says of itself


def read_file(path):
    """("torch", the loaded object) or ("pickle", the unpickled object) for the file at ``path``."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise FormatError(f"checkpoint {path} is a folder, not a checkpoint file")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    with open(path, "rb") as file:
        head = file.read(len(LEGACY_TORCH_MAGIC))
        if zipfile.is_zipfile(path) or head.startswith(LEGACY_TORCH_MAGIC):
            try:
                with torch.serialization.safe_globals([argparse.Namespace]):
                    return "torch", torch.load(path, map_location="cpu", weights_only=True)
            except Exception as error:  # torch.load raises many types for damaged or unsafe files
                refused = re.search(r"GLOBAL ([\w.]+)", str(error))  # torch names the global it refused
                if refused:
                    raise FormatError(f"refused to read {path}: it calls {refused.group(1)}, which network "
                                      f"checkpoints never hold (nothing of the file was run)") from None
                raise unreadable(path, reason(error)) from None
        if head[:1] == b"\x80":  # a pickle's first opcode
            file.seek(0)
            return "pickle", nvlabs.read_pickle(file, path)
    raise unreadable(path, f"it starts with {head[:8]!r}")


def _networks(architecture, networks):
    return dict(architecture=architecture, g=networks.get("g"), g_ema=networks.get("g_ema"), d=networks.get("d"))


def identify(checkpoint, path):
    """The Pretrained networks a loaded PyTorch checkpoint of another project holds."""
    if isinstance(checkpoint, dict) and {"g", "g_ema", "d"} <= set(checkpoint) and \
            any(key.startswith(("posfolders.", "module.posfolders.")) for key in checkpoint["g_ema"]):
        try:
            g, g_ema, d = load_official(checkpoint, size=official_size(checkpoint["g_ema"]))
        except ValueError as error:
            raise FormatError(f"{path}: {reason(error)}") from None
        architecture = {"model": "PixelFolder", "size": g.size}
        return Pretrained("official PixelFolder checkpoint", g=g, g_ema=g_ema, d=d, architecture=architecture)
    candidates = [checkpoint]
    if isinstance(checkpoint, dict):
        candidates += [checkpoint.get(key) for key in ("g_ema", "g")]
    if any(rosinality.is_generator(state) for state in candidates):
        architecture, networks, optimizers, notes, details = rosinality.read(checkpoint, path)
        kind = "rosinality stylegan2-pytorch " + ("training checkpoint" if "g_optim" in checkpoint else
                                                  "release" if "g_ema" in checkpoint else "generator state dict")
        return Pretrained(kind, optimizers=optimizers, notes=notes, details=details,
                          **_networks(architecture, networks))
    if any(cips.is_generator(state) for state in candidates):
        architecture, networks, notes = cips.read(checkpoint, path)
        kind = "CIPS " + ("training checkpoint" if isinstance(checkpoint.get("g_ema"), dict) else "release (g_ema)")
        return Pretrained(kind, notes=notes, **_networks(architecture, networks))
    found = sorted(map(str, checkpoint))[:8] if isinstance(checkpoint, dict) else type(checkpoint).__name__
    raise FormatError(f"checkpoint {path} holds no network of a known format (NVlabs, rosinality, CIPS, PixelFolder, "
                      f"this package's): found {found}")


def read_pretrained(path, size=None):
    """The Pretrained networks in a file of another project (NVlabs, rosinality, CIPS, official
    PixelFolder). ``size``: the resolution expected (refused if the file's is another)."""
    return pretrained_from(*read_file(path), os.fspath(path), size)


def pretrained_from(kind, content, path, size=None):
    """The Pretrained networks of a file ``read_file`` read."""
    return built_networks(lambda: _pretrained_from(kind, content, path), path, size)


def built_networks(build, path, size=None):
    """``build()``'s Pretrained networks of the file at ``path``, whose resolution must be ``size`` when
    given: FormatError naming the file where a part its layout claims is missing or does not fit."""
    try:
        pretrained = build()
    except FormatError:
        raise
    except (KeyError, IndexError, TypeError, AttributeError, ValueError, RuntimeError) as error:
        raise FormatError(f"{path}: its networks lack a part of the layout they claim, or a part does not fit "
                          f"({type(error).__name__}: {reason(error)})") from None
    if size is not None and pretrained.architecture["size"] != size:
        raise FormatError(f"{path} holds {pretrained.architecture['size']}x{pretrained.architecture['size']} "
                          f"networks, not the --size {size} asked for")
    return pretrained


def _pretrained_from(kind, content, path):
    if kind == "pickle":
        architecture, networks, notes = nvlabs.read_networks(content, path)
        details = content.get("training_set_kwargs") if isinstance(content, dict) else None
        return Pretrained("NVlabs pickle", notes=notes, details=dict(details or {}),
                          **_networks(architecture, networks))
    return identify(content, path)


def load_pretrained(path, size=None):
    """(g, g_ema, d) from a file of any format ``training.convert`` reads, ours included, each a
    module of this package or None where the file has no such network; g_ema in eval mode."""
    from training.checkpoint import load_networks  # our checkpoints are training's format

    pretrained = load_networks(path, size)
    if pretrained.g_ema is not None:
        pretrained.g_ema.eval()
    return pretrained.g, pretrained.g_ema, pretrained.d
