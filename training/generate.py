"""Images from a trained generator: one PNG per seed and a grid, a z-interpolation strip (the
paper's Fig. 4), and the RGB of every stage side by side (the paper's Fig. 6).

    python -m training.generate CHECKPOINT [--outdir DIR] [--seeds 0-15] [--truncation 1.0]
                                [--noise random|const] [--batch-size 16] [--nrow N] [--stages]
                                [--interpolate SEED_A SEED_B [--steps 8] [--interpolation slerp|lerp]]
                                [--size N] [--device cpu|cuda]

CHECKPOINT is one of our training or converted checkpoints (a run folder: its latest), or any file
``training.convert`` reads (official PixelFolder and rosinality checkpoints, CIPS releases, NVlabs
pickles), whose EMA generator draws the images. An image depends only on its seed: z and the noise
inputs are drawn from it; with ``--noise const`` every image takes the noise stored with the model
(``G(z, noise="const")``: for a converted network, its source's constant noise) and only z comes from
the seed.
"""
from training import extras

if __name__ == "__main__":
    extras.require("train")  # before the imports that need it

import argparse
import math
import os

import torch
import torch.nn.functional as F

from training import checkpoint as training_checkpoint
from training import cli
from training.images import save_grid, save_image

# The sizes a --size can ask for (every model's).
# The EMA generator of any network file training.convert reads (see training.checkpoint).
load_generator = training_checkpoint.load_ema_generator


def seed_inputs(generator, seeds):
    """z (len(seeds), style_dim) and the noise list for ``seeds``, on the CPU. Each image's z and
    noise come from a generator seeded with its own seed, so they do not depend on the batch."""
    zs, noises = [], []
    for seed in seeds:
        rng = torch.Generator().manual_seed(seed)
        zs.append(torch.randn(1, generator.style_dim, generator=rng))
        noises.append(generator.make_noise(1, device="cpu", generator=rng))
    return torch.cat(zs), [torch.cat(level) for level in zip(*noises)]


def on_device(noise, device, noise_mode):
    """The seed-drawn ``noise`` on ``device``, or "const" for the model's own (``noise_mode``)."""
    return "const" if noise_mode == "const" else [n.to(device) for n in noise]


@torch.inference_mode()
def sample_batches(generator, seeds, batch_size, truncation=1.0, return_stages=False, noise_mode="random"):
    """Yields (images, stages) for ``seeds`` in batches, on the generator's device; ``stages`` (the
    RGB of every stage, see ``StyleGenerator.forward``) is None unless ``return_stages``.
    ``noise_mode`` "random": each seed's noise; "const": the model's constant noise."""
    device = next(generator.parameters()).device
    center = generator.mean_latent() if truncation != 1 else None
    for start in range(0, len(seeds), batch_size):
        z, noise = seed_inputs(generator, seeds[start:start + batch_size])
        out = generator(z.to(device), truncation=truncation, truncation_latent=center,
                        noise=on_device(noise, device, noise_mode), return_stages=return_stages)
        yield out if return_stages else (out, None)


def slerp(a, b, t):
    """Spherical interpolation from ``a`` to ``b`` (rows) at fractions ``t`` (T, 1); linear where
    they are (anti)parallel."""
    cosine = F.cosine_similarity(a, b, dim=-1).clamp(-1, 1)[:, None]
    omega = torch.acos(cosine)
    if float(torch.sin(omega).abs().min()) < 1e-6:
        return torch.lerp(a, b, t)
    return (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)


@torch.inference_mode()
def interpolation_strip(generator, seed_a, seed_b, steps, mode="slerp", truncation=1.0, batch_size=16,
                        noise_mode="random"):
    """(steps, 3, S, S): z interpolated from ``seed_a``'s to ``seed_b``'s, endpoints included, with
    ``seed_a``'s noise (or the model's constant noise) throughout so that only z changes."""
    device = next(generator.parameters()).device
    (z_a, z_b), noise = seed_inputs(generator, [seed_a, seed_b])
    t = torch.linspace(0, 1, steps)[:, None]
    z = slerp(z_a[None], z_b[None], t) if mode == "slerp" else torch.lerp(z_a[None], z_b[None], t)
    noise = on_device([n[:1] for n in noise], device, noise_mode)  # batch 1 broadcasts over the strip
    center = generator.mean_latent() if truncation != 1 else None
    return torch.cat([generator(chunk.to(device), truncation=truncation, truncation_latent=center, noise=noise).cpu()
                      for chunk in z.split(batch_size)])


def stage_tiles(stages, size):
    """The K stages' RGB (each (B, 3, s, s)) upsampled (nearest) to ``size``, as (B * K, 3, size, size)
    tiles in row-major order: a grid of K to a row has one row of stages per image."""
    upsampled = [F.interpolate(stage, size=(size, size), mode="nearest") for stage in stages]
    return torch.stack(upsampled, dim=1).flatten(0, 1)


SEED = cli.integer(0, 2 ** 63 - 1)


def parse_seeds(text):
    """'0-15', '0,3,7' or a mix ('0-3,9') -> a list of ints, ranges inclusive (ArgumentTypeError for an
    empty or reversed range, or a part that is not a seed)."""
    seeds = []
    for part in text.split(","):
        first, dash, last = part.strip().partition("-")
        try:
            first, last = SEED(first), SEED(last) if dash else SEED(first)
        except argparse.ArgumentTypeError:
            raise argparse.ArgumentTypeError(f"expected seeds as 'FIRST-LAST', 'A,B,C' or a mix of non-negative "
                                             f"integers, got {text!r}") from None
        if last < first:
            raise argparse.ArgumentTypeError(f"expected ranges FIRST-LAST with FIRST <= LAST, got {part.strip()!r} "
                                             f"in {text!r}")
        seeds += range(first, last + 1)
    return seeds


def parse_args(argv=None):
    parser = cli.CommandLineParser(prog="python -m training.generate", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="our training or converted checkpoint, a run folder (its latest "
                                           "checkpoint), or any network file training.convert reads")
    parser.add_argument("--outdir", type=cli.output_folder, default="generated",
                        help="where the PNGs go (default: %(default)s)")
    parser.add_argument("--seeds", type=parse_seeds,
                        help="'0-15', '0,3,7' or a mix: one PNG per seed and a grid (default 0-15, unless "
                             "--interpolate is given alone)")
    parser.add_argument("--truncation", type=cli.number(), default=1.0,
                        help="psi, towards G.mean_latent() (default: 1)")
    parser.add_argument("--noise", choices=("random", "const"), default="random",
                        help="'random': each seed's own noise; 'const': the noise stored with the model, the same "
                             "for every image (a converted network's source noise) (default: %(default)s)")
    parser.add_argument("--batch-size", type=cli.integer(1), default=16)
    parser.add_argument("--nrow", type=cli.integer(1), help="grid images per row (default: about the square root)")
    parser.add_argument("--stages", action="store_true",
                        help="also stages.png: per seed, a row with the RGB of every stage, upsampled")
    parser.add_argument("--interpolate", nargs=2, type=SEED, metavar=("SEED_A", "SEED_B"),
                        help="a strip interpolating z from SEED_A's to SEED_B's")
    parser.add_argument("--steps", type=cli.integer(2), default=8,
                        help="images in the interpolation strip, both ends included (default: 8)")
    parser.add_argument("--interpolation", choices=("slerp", "lerp"), default="slerp",
                        help="spherical or linear in z (default: slerp)")
    parser.add_argument("--size", type=cli.network_size,
                        help="the resolution the checkpoint's networks must have (default: any)")
    parser.add_argument("--device", type=cli.device, default="auto",
                        help="'auto' (the GPU if there is one), 'cpu', 'cuda' or 'cuda:N' (default: auto)")
    args = parser.parse_args(argv)
    if args.seeds is None and args.interpolate is None:
        args.seeds = list(range(16))
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        generator = load_generator(args.checkpoint, size=args.size, device=cli.resolved_device(args.device))
        os.makedirs(args.outdir, exist_ok=True)
    except (ValueError, OSError) as error:
        cli.fail(error)
    written = []
    if args.seeds:
        images, tiles = [], []
        batches = sample_batches(generator, args.seeds, args.batch_size, args.truncation, return_stages=args.stages,
                                 noise_mode=args.noise)
        for batch, stages in batches:
            images.append(batch.cpu())
            if stages is not None:
                tiles.append(stage_tiles(stages, batch.shape[-1]).cpu())
        images = torch.cat(images)
        for seed, image in zip(args.seeds, images):
            save_image(image, os.path.join(args.outdir, f"seed{seed:04d}.png"))
        written.append(f"{len(images)} x seedNNNN.png")
        save_grid(images, os.path.join(args.outdir, "grid.png"), nrow=args.nrow or math.ceil(math.sqrt(len(images))))
        written.append("grid.png")
        if tiles:
            tiles = torch.cat(tiles)
            save_grid(tiles, os.path.join(args.outdir, "stages.png"), nrow=len(tiles) // len(images))
            written.append("stages.png")
    if args.interpolate:
        seed_a, seed_b = args.interpolate
        strip = interpolation_strip(generator, seed_a, seed_b, args.steps, args.interpolation, args.truncation,
                                    args.batch_size, args.noise)
        name = f"interpolation-{seed_a:04d}-{seed_b:04d}-{args.interpolation}.png"
        save_grid(strip, os.path.join(args.outdir, name), nrow=len(strip))
        written.append(name)
    print(f"wrote {', '.join(written)} to {args.outdir}")


if __name__ == "__main__":
    main()
