"""Pretrained networks of the field, in and out: NVlabs pickles, rosinality stylegan2-pytorch
checkpoints, CIPS releases and official PixelFolder checkpoints into a checkpoint of this package,
and our StyleGAN2 back out as an NVlabs pickle or a rosinality checkpoint.

    python -m training.convert INPUT --out OUTPUT [--to ours|nvlabs|rosinality] [--size N]

INPUT's format is detected and named. ``--to ours`` (the default) writes a checkpoint that
training.generate, training.evaluate and training.export read and ``training.train --resume``
fine-tunes: G, D and the EMA generator where INPUT has them, the configuration, and a record of the
source. ``--to nvlabs`` writes a pickle NVlabs' ``legacy.load_network_pkl`` loads (G, D, G_ema);
``--to rosinality`` a checkpoint rosinality's code loads (g, d, g_ema, latent_avg). The networks
compute the same images and logits (constant noise: ``G(z, noise="const")``). Reading never runs code
from the file. What does not map is refused with one line naming what was found. See
docs/pretrained.md.
"""
import copy
import dataclasses
import os

import torch

from models.architecture import build_discriminator
from models.formats import FormatError, nvlabs, rosinality
from training import cli
from training.checkpoint import FORMAT, VERSION, checkpoint_file, describe, file_digest, load_networks, write_file
from training.config import TrainConfig

TARGETS = ("ours", "nvlabs", "rosinality")
NETWORK_NAMES = {"g": "G", "d": "D", "g_ema": "G_ema"}


def plain(value):
    """``value`` as what torch.load(weights_only=True) reads back: containers, numbers, strings."""
    if isinstance(value, dict):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def networks_of(pretrained):
    return {name: getattr(pretrained, name) for name in NETWORK_NAMES if getattr(pretrained, name) is not None}


def our_checkpoint(pretrained, path):
    """A checkpoint of this package (step 0) holding ``pretrained``'s networks, and the console notes."""
    config = TrainConfig(**pretrained.architecture)
    config.validate()
    networks = networks_of(pretrained)
    checkpoint = {"format": FORMAT, "version": VERSION, "config": dataclasses.asdict(config), "step": 0,
                  **{name: network.state_dict() for name, network in networks.items()}, **pretrained.optimizers,
                  "source": plain({"file": os.path.basename(path), "sha256": file_digest(path),
                                   "format": pretrained.format, "details": pretrained.details,
                                   "notes": pretrained.notes})}
    notes = ["Adam states carried over (they map exactly)" if pretrained.optimizers else
             "training.train --resume starts with fresh Adam states (the source has none that map)"]
    return checkpoint, notes


def nvlabs_snapshot(pretrained):
    """NVlabs' dict of networks (G, D, G_ema) for ``pretrained``'s StyleGAN2, and the console notes."""
    if pretrained.architecture["model"] != "StyleGAN2":
        raise FormatError(f"--to nvlabs writes StyleGAN2 networks, and this checkpoint holds "
                          f"{pretrained.architecture['model']}")
    g_ema = pretrained.g_ema if pretrained.g_ema is not None else pretrained.g
    notes = []
    if pretrained.g is None or pretrained.g_ema is None:
        notes.append("the input has one generator: it is both G and G_ema")
    d = pretrained.d
    if d is None:
        torch.manual_seed(0)
        d = build_discriminator(pretrained.architecture)
        notes.append("the input has no discriminator: D is freshly initialised (NVlabs' loader requires one)")
    networks = {"G": nvlabs.nvlabs_generator(pretrained.g if pretrained.g is not None else g_ema,
                                             pretrained.architecture),
                "D": nvlabs.nvlabs_discriminator(d, pretrained.architecture),
                "G_ema": nvlabs.nvlabs_generator(g_ema, pretrained.architecture),
                "augment_pipe": None, "training_set_kwargs": None}
    return networks, notes


def rosinality_checkpoint(pretrained):
    networks = networks_of(pretrained)
    if "g_ema" not in networks:
        networks["g_ema"] = copy.deepcopy(networks["g"])
    notes = [f"the input has no '{name}'" for name in ("g", "d") if name not in networks]
    return rosinality.write(networks, pretrained.architecture, pretrained.optimizers), notes


def convert(path, out, to="ours", size=None):
    """Convert the networks in the file at ``path`` and write them to ``out`` in the format ``to``;
    returns the lines to print."""
    path = checkpoint_file(os.fspath(path))  # a run folder: its latest checkpoint
    pretrained = load_networks(path, size)
    held = ", ".join(NETWORK_NAMES[name] for name in networks_of(pretrained))
    lines = [f"read {path}: {pretrained.format}, {describe(pretrained.architecture)}; networks: {held}"]
    lines += [f"note: {note}" for note in pretrained.notes]
    if to == "ours":
        checkpoint, notes = our_checkpoint(pretrained, path)
        write_file(checkpoint, out)
        written = "a checkpoint of this package"
    elif to == "nvlabs":
        snapshot, notes = nvlabs_snapshot(pretrained)
        write_file(snapshot, out, nvlabs.write_pickle)
        written = "an NVlabs pickle (G, D, G_ema)"
    else:
        checkpoint, notes = rosinality_checkpoint(pretrained)
        write_file(checkpoint, out)
        written = f"a rosinality checkpoint ({', '.join(checkpoint)})"
    lines += [f"note: {note}" for note in notes]
    lines.append(f"wrote {out}: {written}")
    return lines


def parse_args(argv=None):
    parser = cli.CommandLineParser(prog="python -m training.convert", description=__doc__.split("\n\n")[0])
    parser.add_argument("input", type=cli.existing_path,
                        help="an NVlabs pickle, a rosinality or CIPS checkpoint, an official PixelFolder checkpoint, "
                             "or one of ours (a run folder: its latest checkpoint)")
    parser.add_argument("--out", required=True, type=cli.output_file, help="the file to write")
    parser.add_argument("--to", choices=TARGETS, default="ours",
                        help="ours: a checkpoint of this package; nvlabs: an NVlabs pickle; rosinality: a rosinality "
                             "stylegan2-pytorch checkpoint (the last two: StyleGAN2 only) (default: %(default)s)")
    parser.add_argument("--size", type=cli.network_size,
                        help="the resolution INPUT's networks must have (default: any)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        lines = convert(args.input, args.out, args.to, args.size)
    except (ValueError, OSError) as error:
        cli.fail(error)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
