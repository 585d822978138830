"""Does training learn? PixelFolder and StyleGAN2 trained on real handwritten digits (training/digits.py)
for the same wall-clock budget each, with the digits FID and KID of the EMA generator at regular
intervals of images seen, from step 0.

    python -m benchmarks.learning --out DIR [--minutes 8] [--models PixelFolder,StyleGAN2] [--size 32]
                                  [--width 0.0625] [--eval-every 1024] [--eval-samples 1000]
                                  [--threads N] [--backend reference] [--seed 0]

Every model gets the same width scale, seed, data, recipe and training time. The recipe is
StyleGAN2-ADA's 32 px one (its CIFAR-10 configuration) scaled to a CPU, with a learning rate and an R1
weight chosen by measurement (1,500 steps of each model, digits FID of 500 samples, seed 0, below):
- batch 16 (theirs: 64; the paper's: 32), Adam betas (0, 0.99), lazy R1 every 16 D steps;
- Adam lr 0.005, twice theirs: 0.0025 reached less than half as far in the same steps (PixelFolder's
  FID 755 against 310 after 1,500 steps) and 0.01 made D win (PixelFolder's FID 1,934 after 750);
- R1 gamma 1 (theirs for 32 px: 0.01; the paper's 10 is for 256 px): with 0.01, StyleGAN2's D
  gradient on the reals grew (R1 term 4-11) and its generator collapsed onto one image for every z;
  with 1 it stayed diverse (FID 246); PixelFolder learns at 0.01, 0.1 and 1 alike (FID 310, 254, 331);
- a 2-layer mapping network and no style mixing (theirs at 32 px; the paper's: 8 layers, mixing 0.9);
- EMA half-life 500 images: ADA ramps the half-life up to 5% of the images seen, about 500 for the
  10k-25k images of an 8-minute CPU run (the paper's 10k images would average over the whole run);
- no left-right mirroring (a mirrored digit is not a digit).

Only training steps count against --minutes: the clock stops while the FID is measured, and the
evaluation time is reported separately. FID and KID are measured on --eval-samples images of fixed
seeds against all 1,797 digits; with that few samples the FID is biased upwards, the same way at
every point, so the curves compare, but not with FIDs on other sample counts.

On a CPU shared with other jobs, --threads 1 is much faster than 2 (OpenMP threads wait for each
other when one is descheduled), and --backend cpu trains about 4x faster than the reference ops.

Writes learning.json (per model: step, images seen, training seconds, FID, KID at every point),
learning.png (FID against images seen and against training seconds) and <model>_samples.png (the
final EMA generator's images for seeds 0-63).
"""
from training import extras

if __name__ == "__main__":
    extras.require("train", "digits")  # before the imports that need it

import datetime
import json
import os
import platform
import tempfile
import time

import torch
from tqdm import tqdm

from benchmarks.timing import comma_list
from training import cli
from training.config import TrainConfig
from training.digits import DEFAULT_CACHE_DIR
from training.evaluate import DIGITS, dataset_statistics, feature_network, generated_features
from training.generate import sample_batches
from training.images import save_grid
from training.metrics import frechet_distance, kernel_inception_distance, mean_and_covariance
from training.train import Trainer

MODELS = ("PixelFolder", "StyleGAN2")
GRID_SEEDS = range(64)
# StyleGAN2-ADA's 32 px recipe scaled to a CPU, lr and R1 gamma measured (see the module's docstring); the
# rest is the paper's.
RECIPE = {"batch": 16, "lr": 0.005, "r1_gamma": 1.0, "d_reg_every": 16, "n_mlp": 2, "mixing": 0.0,
          "ema_half_life": 500.0, "hflip": False}
KID_SUBSETS = 10


class DigitsFID:
    """The digits FID and KID of a generator against all the digits at ``size``, on ``num_samples``
    generated images of seeds 0 to num_samples - 1."""

    def __init__(self, size, num_samples, cache_dir, batch_size=100):
        self.num_samples, self.batch_size = num_samples, batch_size
        self.classifier, digest = feature_network(DIGITS, cache_dir=cache_dir)
        self.real = dataset_statistics(DIGITS, size, 10 ** 6, self.classifier, digest, cache_dir, batch_size)[0]

    def __call__(self, generator):
        fake = generated_features(generator, self.classifier, self.num_samples, self.batch_size)
        mu, sigma = mean_and_covariance(fake)
        kid, kid_std = kernel_inception_distance(self.real["features"], fake, KID_SUBSETS, self.num_samples)
        return {"fid": frechet_distance(self.real["mu"], self.real["sigma"], mu, sigma), "kid": kid,
                "kid_std": kid_std}


def train_and_measure(model, args, metric, workdir):
    """Train ``model`` for args.minutes of training time, measuring the EMA generator every
    args.eval_every images; returns (points, trainer)."""
    config = TrainConfig(dataset=DIGITS, model=model, size=args.size, width=args.width, seed=args.seed,
                         steps=2 ** 62, out=os.path.join(workdir, model), device="cpu", backend=args.backend,
                         num_workers=0, **RECIPE)
    trainer = Trainer(config)
    budget, trained_seconds, evaluation_seconds, points = args.minutes * 60, 0.0, 0.0, []
    with tqdm(total=round(budget), desc=model, unit="s", disable=None) as progress:
        while True:
            images = trainer.step * config.batch
            if images % args.eval_every < config.batch or trained_seconds >= budget:
                start = time.perf_counter()
                points.append({"step": trainer.step, "images": images, "seconds": trained_seconds,
                               **metric(trainer.g_ema)})
                evaluation_seconds += time.perf_counter() - start
                progress.set_postfix(images=images, fid=f"{points[-1]['fid']:.1f}")
            if trained_seconds >= budget:
                break
            start = time.perf_counter()
            trainer.train_step()
            trained_seconds += time.perf_counter() - start
            progress.update(min(round(trained_seconds), round(budget)) - progress.n)
    summary = {"model": model, "generator_parameters": sum(p.numel() for p in trainer.g_module.parameters()),
               "discriminator_parameters": sum(p.numel() for p in trainer.d_module.parameters()),
               "steps": trainer.step, "images": trainer.step * config.batch, "training_seconds": trained_seconds,
               "evaluation_seconds": evaluation_seconds, "first_fid": points[0]["fid"], "final_fid": points[-1]["fid"],
               "fid_ratio": points[-1]["fid"] / points[0]["fid"], "points": points}
    return summary, trainer


def save_samples(generator, path):
    images = torch.cat([batch for batch, _ in sample_batches(generator, GRID_SEEDS, len(GRID_SEEDS))])
    save_grid(images, path, nrow=8, padding=1)


def plot(results, path):
    """FID against images seen and against training seconds, one line per model; False without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for summary in results["models"]:
        points = summary["points"]
        for axis, x in zip(axes, ("images", "seconds")):
            axis.plot([p[x] for p in points], [p["fid"] for p in points], marker="o", label=summary["model"])
    for axis, label in zip(axes, ("images seen", "training seconds (evaluation not counted)")):
        axis.set_xlabel(label)
        axis.set_ylabel("digits FID (EMA generator)")
        axis.set_yscale("log")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend()
    figure.suptitle(f"{results['size']}x{results['size']} digits, width {results['width']}, "
                    f"{results['minutes']:g} min each on {results['device']}")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def parse_args(argv=None):
    parser = cli.CommandLineParser(prog="python -m benchmarks.learning", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=cli.output_folder, help="folder for the JSON and PNGs")
    parser.add_argument("--minutes", type=cli.number(above=0), default=8.0,
                        help="training time per model, evaluation not counted (default: %(default)s)")
    parser.add_argument("--models", type=comma_list(MODELS, "model"), default=list(MODELS),
                        help=f"comma-separated, of {', '.join(MODELS)} (default: both)")
    parser.add_argument("--size", type=cli.power_of_two(16, 64), default=32, help="(default: %(default)s)")
    parser.add_argument("--width", type=cli.number(above=0), default=0.0625,
                        help="channel scale of G and D, the same for every model (default: %(default)s)")
    parser.add_argument("--eval-every", type=cli.integer(1), default=1024,
                        help="images seen between measurements (default: %(default)s)")
    parser.add_argument("--eval-samples", type=cli.integer(2), default=1000,
                        help="generated images per measurement (default: %(default)s)")
    parser.add_argument("--threads", type=cli.integer(1), default=torch.get_num_threads(),
                        help="PyTorch CPU threads (default: %(default)s)")
    parser.add_argument("--backend", choices=("reference", "cpu", "auto"), default="reference",
                        help="pixelfolder_ops backend (default: %(default)s: plain PyTorch, which needs no build)")
    parser.add_argument("--seed", type=cli.integer(0), default=0, help="(default: %(default)s)")
    parser.add_argument("--cache-dir", type=cli.output_folder, default=DEFAULT_CACHE_DIR,
                        help="where the digits classifier and the digits' statistics are cached "
                             "(default: %(default)s)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        metric = DigitsFID(args.size, args.eval_samples, args.cache_dir)
    except ValueError as error:  # scikit-learn is missing
        cli.fail(error)
    os.makedirs(args.out, exist_ok=True)
    results = {"date": datetime.date.today().isoformat(), "device": f"CPU ({platform.machine()}, "
               f"{args.threads} thread(s))", "torch": torch.__version__, "size": args.size, "width": args.width,
               "minutes": args.minutes, "seed": args.seed, "backend": args.backend, "eval_every_images": args.eval_every,
               "eval_samples": args.eval_samples, "classifier_held_out_accuracy": metric.classifier.held_out_accuracy,
               "recipe": RECIPE, "models": []}
    with tempfile.TemporaryDirectory() as workdir:  # the trainer's run folders: nothing is saved there
        for model in args.models:
            summary, trainer = train_and_measure(model, args, metric, workdir)
            save_samples(trainer.g_ema, os.path.join(args.out, f"{model}_samples.png"))
            results["models"].append(summary)
            print(f"{model}: {summary['steps']} steps, {summary['images']} images in "
                  f"{summary['training_seconds']:.0f} s; digits FID {summary['first_fid']:.2f} -> "
                  f"{summary['final_fid']:.2f} ({summary['fid_ratio']:.3f}x)")
    with open(os.path.join(args.out, "learning.json"), "w") as file:
        json.dump(results, file, indent=2)
    if not plot(results, os.path.join(args.out, "learning.png")):
        print(f"matplotlib is not installed ({extras.install_command('digits')}): no plot written")
    return results


if __name__ == "__main__":
    main()
