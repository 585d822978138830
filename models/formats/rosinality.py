"""rosinality/stylegan2-pytorch checkpoints: training checkpoints (``g``, ``d``, ``g_ema``, ``g_optim``,
``d_optim``, ``args``) and the converted TensorFlow releases (``g_ema``, ``latent_avg``), read and
written.

Our StyleGAN2Generator and Discriminator have rosinality's names and data flow, so the state dicts
map key for key, the fixed noise buffers (``noises.noise_i``) included. The only difference: the
blur after rosinality's up-sampling conv is a buffer of its own there (``convs.i.conv.blur.kernel``,
the [1, 3, 3, 1] kernel times 4), where our fused op takes it as an argument. Both optimizers list
the parameters in the same order, so Adam's states carry over as they are.
"""
import math
import re

import torch

from ..architecture import build_discriminator, build_generator, complete
from ..layers import BLUR_KERNEL, channel_table
from . import FormatError

import pixelfolder_ops as ops

UPSAMPLE_BLUR = ops.make_resample_kernel(BLUR_KERNEL) * 4
GENERATOR_KEYS = ("style.1.weight", "input.input", "conv1.conv.weight", "to_rgb1.conv.weight")
DISCRIMINATOR_KEYS = ("convs.0.0.weight", "final_conv.0.weight", "final_linear.1.weight")


def is_generator(state):
    return isinstance(state, dict) and all(key in state for key in GENERATOR_KEYS)


def rosinality_size(state):
    """The resolution of a rosinality Generator state dict: one to_rgbs entry per resolution above 4."""
    return 2 ** (sum(bool(re.fullmatch(r"to_rgbs\.\d+\.bias", key)) for key in state) + 2)


def upsampling_blur_keys(size):
    return [f"convs.{2 * j}.conv.blur.kernel" for j in range(int(math.log2(size)) - 2)]


def generator_architecture(state, path, name, multiplier=None):
    """The settings of the rosinality Generator whose state dict is ``state``; ``multiplier``: its
    channel multiplier where the checkpoint says (below 64 px the channels do not tell)."""
    if any(".iwt." in key or ".dwt." in key or key.startswith(("iwt.", "dwt.")) for key in state):
        raise FormatError(f"{path}: '{name}' is a rosinality SWAGAN generator (wavelet to_rgbs); only StyleGAN2 "
                          f"maps to this package")
    size = rosinality_size(state)
    n_mlp = sum(bool(re.fullmatch(r"style\.\d+\.weight", key)) for key in state)
    weights = {res: state.get(f"convs.{2 * j + 1}.conv.weight")
               for j, res in enumerate(2 ** i for i in range(3, int(math.log2(size)) + 1))}
    if any(weight is None or weight.dim() != 5 for weight in weights.values()):
        raise FormatError(f"{path}: '{name}' lacks the StyledConvs of a rosinality StyleGAN2 Generator at {size} px")
    channels = {res: weight.shape[1] for res, weight in weights.items()}
    if size >= 64 or not isinstance(multiplier, int) or multiplier < 1:
        multiplier = max(channels[size] * size // 16384, 1) if size >= 64 else 2
    table = channel_table(multiplier)
    if size < 8 or size > 1024 or any(table[res] != c for res, c in channels.items()):
        raise FormatError(f"{path}: '{name}' is {size}x{size} with channels {channels}: not a StyleGAN2 this "
                          f"package builds (8 to 1024 px, StyleGAN2's channel table)")
    return {"model": "StyleGAN2", "size": size, "style_dim": state["style.1.weight"].shape[1], "n_mlp": n_mlp,
            "channel_multiplier": multiplier}


def our_generator_state(state, path, name):
    """``state`` without the up-sampling blur kernels (checked to be the [1, 3, 3, 1] ones ours use)."""
    for key in upsampling_blur_keys(rosinality_size(state)):
        if key in state and not torch.allclose(state[key].float(), UPSAMPLE_BLUR):
            raise FormatError(f"{path}: '{name}' up-samples with another blur kernel ({key}); ours use [1, 3, 3, 1]")
    return {key: value for key, value in state.items() if key not in upsampling_blur_keys(rosinality_size(state))}


def load_exactly(model, state, path, what):
    """Load ``state`` into ``model``, keys and shapes exactly (the model keeps its own constant noise
    where ``state`` has none); FormatError naming what does not fit."""
    expected = model.state_dict()
    missing = [key for key in expected if key not in state and not key.startswith("noises.")]
    unexpected = [key for key in state if key not in expected]
    misshapen = [f"{key} {tuple(value.shape)} (ours {tuple(expected[key].shape)})" for key, value in state.items()
                 if key in expected and value.shape != expected[key].shape]
    if missing or unexpected or misshapen:
        found = "; ".join(f"{title} {', '.join(keys[:3])}" + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")
                          for title, keys in (("missing", missing), ("unexpected", unexpected),
                                              ("misshapen", misshapen)) if keys)
        raise FormatError(f"{path}: {what} does not fit {type(model).__name__} at {model.size} px ({found})")
    model.load_state_dict(state)
    return model


def adam_state_maps(state, model):
    """Whether an Adam state dict over another copy of ``model``'s parameters, in the same order,
    fits ``model`` exactly (one parameter group, every state shaped as its parameter)."""
    parameters = list(model.parameters())
    groups = state.get("param_groups") if isinstance(state, dict) else None
    if not groups or len(groups) != 1 or len(groups[0].get("params", ())) != len(parameters):
        return False
    states = state.get("state", {})
    return all(all(value.shape == parameter.shape for name, value in states.get(index, {}).items()
                   if name in ("exp_avg", "exp_avg_sq"))
               for index, parameter in zip(groups[0]["params"], parameters))


def read(checkpoint, path):
    """(architecture, networks, optimizer states, notes, details) from a rosinality checkpoint or a bare
    generator state dict."""
    if is_generator(checkpoint):
        checkpoint = {"g_ema": checkpoint}
    states = {name: checkpoint.get(name) for name in ("g", "g_ema", "d")}
    args = checkpoint.get("args")
    if getattr(args, "arch", "stylegan2") != "stylegan2":
        raise FormatError(f"{path}: a rosinality '{args.arch}' checkpoint; only StyleGAN2 maps to this package")
    generator_name = "g_ema" if states["g_ema"] is not None else "g"
    architecture = generator_architecture(states[generator_name], path, generator_name,
                                          getattr(args, "channel_multiplier", None))
    networks = {}
    for name in ("g", "g_ema"):
        if states[name] is not None:
            networks[name] = load_exactly(build_generator(architecture),
                                          our_generator_state(states[name], path, name), path, f"'{name}'")
    if checkpoint.get("latent_avg") is not None:
        networks["g_ema" if "g_ema" in networks else "g"].latent_avg = checkpoint["latent_avg"].reshape(-1).float()
    if states["d"] is not None:
        networks["d"] = load_exactly(build_discriminator(architecture), states["d"], path, "'d'")
    optimizers = {f"{name}_optim": checkpoint[f"{name}_optim"] for name in ("g", "d")
                  if name in networks and adam_state_maps(checkpoint.get(f"{name}_optim"), networks[name])}
    notes = [f"the checkpoint holds no '{name}'" for name in ("g", "d") if name not in networks]
    details = {name: getattr(args, name) for name in ("size", "channel_multiplier", "n_mlp", "latent", "path", "iter")
               if isinstance(getattr(args, name, None), (int, float, str))}
    return architecture, networks, optimizers, notes, details


def write(networks, architecture, optimizers):
    """A rosinality checkpoint (a dict for torch.save) of our StyleGAN2 ``networks``."""
    architecture = complete(architecture)
    if architecture["model"] != "StyleGAN2":
        raise FormatError(f"--to rosinality writes StyleGAN2 networks, and this checkpoint holds "
                          f"{architecture['model']}")
    for name, unsupported in (("channel_base", architecture["channel_base"] is not None),
                              ("conv_clamp", architecture["conv_clamp"] is not None),
                              ("mbstd_group", architecture["mbstd_group"] != 4),
                              ("mbstd_channels", architecture["mbstd_channels"] != 1),
                              ("width", architecture["width"] != 1)):
        if unsupported:
            raise FormatError(f"--to rosinality: rosinality's StyleGAN2 has no {name} setting, and this checkpoint's "
                              f"is {architecture[name]}")
    checkpoint = {}
    for name, network in networks.items():
        state = dict(network.state_dict())
        if name != "d":
            state.pop("latent_avg", None)
            state.update({key: UPSAMPLE_BLUR.clone() for key in upsampling_blur_keys(network.size)})
        checkpoint[name] = state
    latent_avg = networks["g_ema"].latent_avg
    if latent_avg is not None:
        checkpoint["latent_avg"] = latent_avg.clone()
    checkpoint.update(optimizers)
    return checkpoint
