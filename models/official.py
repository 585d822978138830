"""Load checkpoints written by the official PixelFolder implementation (top-level "g", "g_ema",
"d", plus optimizer states). Our modules keep the official parameter names and shapes, so a
checkpoint maps onto them key for key."""
import os

import torch

from .discriminator import Discriminator
from .generator import ConstantNoise
from .pixelfolder import PixelFolder


def _load_exact(model, state_dict, what):
    """load_state_dict that names every missing, unexpected or mis-shaped key when they don't fit."""
    state_dict = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state_dict.items()}
    expected = model.state_dict()
    # The model's constant noise is not in official checkpoints: the model keeps its own.
    own = {f"{name}.{buffer}" for name, module in model.named_modules() if isinstance(module, ConstantNoise)
           for buffer, _ in module.named_buffers(recurse=False)}
    missing = sorted(set(expected) - set(state_dict) - own)
    unexpected = sorted(set(state_dict) - set(expected))
    misshaped = sorted(f"{k}: checkpoint {tuple(v.shape)}, model {tuple(expected[k].shape)}"
                       for k, v in state_dict.items() if k in expected and v.shape != expected[k].shape)
    if missing or unexpected or misshaped:
        lines = [f"load_official: the checkpoint's '{what}' does not fit {type(model).__name__}(size={model.size})"]
        for title, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", misshaped)):
            if keys:
                lines.append(f"  {title} ({len(keys)}): " + ", ".join(keys))
        raise ValueError("\n".join(lines))
    model.load_state_dict(state_dict)
    return model


def official_size(state_dict):
    """The resolution of an official PixelFolder generator state dict: its first stage works at the
    constant's resolution R_0, and each of its K stages folds twice, so size = R_0 * 4^(K - 1)."""
    state_dict = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state_dict.items()}
    stages = sum(key.startswith("lffs.") and key.endswith(".ffm.conv.weight") for key in state_dict)
    if "input.input" not in state_dict or not stages:
        raise ValueError("load_official: the generator has no 'input.input' or 'lffs.*' keys: not PixelFolder")
    return state_dict["input.input"].shape[-1] * 4 ** (stages - 1)


def load_official(path_or_dict, size=256, map_location="cpu"):
    """(g, g_ema, d) from an official PixelFolder checkpoint: a path (read with
    ``torch.load(..., weights_only=True)``) or the loaded dict. ``g_ema`` is returned in eval mode."""
    if isinstance(path_or_dict, (str, os.PathLike)):
        try:
            checkpoint = torch.load(path_or_dict, map_location=map_location, weights_only=True)
        except Exception as error:  # a truncated or foreign file: say which file and why
            raise ValueError(f"load_official: cannot read {os.fspath(path_or_dict)!r} as a PyTorch checkpoint "
                             f"({type(error).__name__}: {error})") from error
    else:
        checkpoint = path_or_dict
    if not isinstance(checkpoint, dict) or not {"g", "g_ema", "d"} <= set(checkpoint):
        found = sorted(checkpoint) if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise ValueError(f"load_official: expected an official PixelFolder checkpoint with top-level keys "
                         f"'g', 'g_ema' and 'd', got {found}")
    g = _load_exact(PixelFolder(size), checkpoint["g"], "g")
    g_ema = _load_exact(PixelFolder(size), checkpoint["g_ema"], "g_ema").eval()
    d = _load_exact(Discriminator(size), checkpoint["d"], "d")
    return g, g_ema, d
