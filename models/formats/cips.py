"""CIPS (advimman/CIPS): the released ``g_ema`` state dicts of CIPSskip and its training checkpoints,
read into our CIPS.

The parameters map key for key. One difference is computed at conversion: CIPS looks its learned
coordinate embedding up with ``grid_sample`` (bilinear, border padding, align_corners=False) at the
pixel coordinates when it generates (eval mode), a slight resampling of the table, and uses the table
as it is only while training; the converted generators hold that resampled table, so they give the
images CIPS generates. CIPS draws fresh noise at every call and stores none: the converted
generators' constant noise is their own. CIPS's truncation interpolates z, before its mapping
network (ours interpolates w, as StyleGAN2): CIPS's image for psi and centre c is ours for
z' = c + psi (z - c) without truncation.
"""
import torch
import torch.nn.functional as F

from ..architecture import build_generator
from . import FormatError
from .rosinality import load_exactly

GENERATOR_KEYS = ("lff.ffm.conv.weight", "emb.input", "conv1.conv.weight")
HIDDEN_SIZE = 512  # our CIPS's hidden_size (CIPS' fc_dim), the one the releases use


def is_generator(state):
    return isinstance(state, dict) and all(key in state for key in GENERATOR_KEYS)


def pixel_coordinates(size):
    """(1, size, size, 2): x, y in linspace(-1, 1), as CIPS's convert_to_coord_format lays them out."""
    axis = torch.linspace(-1, 1, size)
    return torch.stack([axis[None, :].expand(size, size), axis[:, None].expand(size, size)], dim=-1)[None]


def generated_embedding(table):
    """The embedding CIPS generates with: ``table`` looked up at the pixel coordinates."""
    return F.grid_sample(table.float(), pixel_coordinates(table.shape[-1]), mode="bilinear", padding_mode="border",
                         align_corners=False)


def generator_architecture(state, path, name):
    residual = any(key.startswith("linears.") and ".conv1.conv.weight" in key for key in state)
    if "to_rgb_last.conv.weight" in state or residual:
        raise FormatError(f"{path}: '{name}' is CIPSres (residual blocks); only CIPSskip maps to this package's CIPS")
    if "linears.0.activate.bias" not in state:
        raise FormatError(f"{path}: '{name}' uses CIPS's sin / sinrelu activations; ours is CIPSskip with leaky ReLU")
    _, hidden, size, _ = state["emb.input"].shape
    if hidden != HIDDEN_SIZE:
        raise FormatError(f"{path}: '{name}' has hidden size (fc_dim) {hidden}; our CIPS is built with {HIDDEN_SIZE}")
    multiplier = state["to_rgbs.4.conv.weight"].shape[2] // 256 if "to_rgbs.4.conv.weight" in state else 2
    return {"model": "CIPS", "size": size, "style_dim": state["style.1.weight"].shape[1],
            "n_mlp": sum(key.startswith("style.") and key.endswith(".weight") for key in state),
            "channel_multiplier": max(multiplier, 1)}


def read(checkpoint, path):
    """(architecture, networks, notes) from a CIPS release (a bare g_ema state dict) or checkpoint."""
    if is_generator(checkpoint):
        checkpoint = {"g_ema": checkpoint}
    states = {name: checkpoint.get(name) for name in ("g", "g_ema") if is_generator(checkpoint.get(name))}
    if not states:
        raise FormatError(f"{path}: holds no CIPS generator")
    name = "g_ema" if "g_ema" in states else "g"
    architecture = generator_architecture(states[name], path, name)
    networks = {}
    for name, state in states.items():
        state = {**state, "emb.input": generated_embedding(state["emb.input"])}
        networks[name] = load_exactly(build_generator(architecture), state, path, f"'{name}'")
    notes = ["CIPS looks its coordinate embedding up with grid_sample when it generates: the converted "
             "generators hold the table as it is looked up (CIPS's eval-mode images)",
             "CIPS stores no noise: noise='const' uses the converted generators' own",
             "CIPS truncates z (before its mapping network), ours w: CIPS's image for psi and centre c is ours for "
             "z' = c + psi (z - c) without truncation"]
    if checkpoint.get("d") is not None:
        notes.append("CIPS's multi-scale discriminator is not this package's: 'd' is not converted")
    if checkpoint.get("g_optim") is not None:
        notes.append("Adam states not carried over (the embedding is resampled)")
    return architecture, networks, notes
