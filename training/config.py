"""Every setting of a training run, with the paper's recipe as defaults, and its command line.

Each field of ``TrainConfig`` is a flag of ``python -m training.train`` (``batch_size`` would be
``--batch-size``); a checkpoint stores the config as a plain dict (``dataclasses.asdict``).
"""
import argparse
import dataclasses
from dataclasses import dataclass, field

import models
from training.networks import GENERATORS

# The fields that decide the networks' shapes: a checkpoint resumes only into the same ones.
ARCHITECTURE_FIELDS = ("model", "variant", "size", "width", "style_dim", "n_mlp", "channel_multiplier")
# The fields that may change between a run and its resume without changing what it computes.
RESUMABLE_CHANGES = ("steps", "out", "resume", "num_workers", "device", "backend", "compile", "official_data_flow",
                     "log_every", "sample_every", "n_samples", "checkpoint_every")


def _setting(default, help, **argparse_options):
    return field(default=default, metadata={"help": help, **argparse_options})


@dataclass
class TrainConfig:
    # Data
    dataset: str = _setting("procedural", "'procedural' (built-in shapes, no download), a folder of images "
                                          "(png/jpg/jpeg/webp, searched recursively) or an LMDB from "
                                          "training.prepare_data")
    procedural_images: int = _setting(10000, "number of images in the procedural dataset")
    hflip: bool = _setting(True, "add the left-right mirror of every image to the dataset")
    num_workers: int = _setting(4, "data loader worker processes per GPU (0: load in the training process)")
    # Networks
    model: str = _setting("PixelFolder", "generator", choices=tuple(GENERATORS))
    variant: str = _setting(None, "one of the paper's PixelFolder ablation models (models.VARIANTS)", type=str,
                            choices=tuple(models.VARIANTS))
    size: int = _setting(256, "image resolution (a power of two)")
    width: float = _setting(1.0, "scales every channel count of G and D (small models for tests)")
    style_dim: int = _setting(512, "dimension of z and w")
    n_mlp: int = _setting(8, "layers of the mapping network")
    official_data_flow: bool = _setting(False, "PixelFolder: compute the batch-invariant positional branch once "
                                               "per image as the official code does (same images, slower; for "
                                               "speed comparisons)")
    channel_multiplier: int = _setting(2, "channel multiplier of G and D (StyleGAN2 config-f: 2)")
    # The paper's recipe
    batch: int = _setting(32, "images per step over all GPUs together")
    lr: float = _setting(0.002, "Adam learning rate (D's is scaled for lazy R1, as StyleGAN2)")
    beta1: float = _setting(0.0, "Adam beta1")
    beta2: float = _setting(0.99, "Adam beta2")
    r1_gamma: float = _setting(10.0, "R1 penalty weight gamma (0: no R1)")
    d_reg_every: int = _setting(16, "apply the R1 penalty every this many D steps (lazy regularization)")
    ema_half_life: float = _setting(10000.0, "half-life of the generator EMA, in images")
    mixing: float = _setting(0.0, "style-mixing probability")
    steps: int = _setting(800000, "train until this many steps in all (a resumed run counts the steps before)")
    seed: int = _setting(0, "seed of the weights, the data order and every random draw")
    # How it runs
    device: str = _setting("auto", "'auto' (the GPU of this process if there is one), 'cuda' or 'cpu'",
                           choices=("auto", "cuda", "cpu"))
    backend: str = _setting("auto", "pixelfolder_ops backend", choices=("auto", "reference", "cpu", "cuda", "triton"))
    amp: str = _setting("none", "mixed precision: 'bf16' runs G and D under bfloat16 autocast",
                        choices=("none", "bf16"))
    channels_last: bool = _setting(False, "channels-last memory format for G, D and the images")
    compile: bool = _setting(False, "torch.compile G and D (the R1 pass stays eager: it needs double backward)")
    # Output
    out: str = _setting("runs/train", "folder for checkpoints, sample grids and TensorBoard logs")
    resume: str = _setting(None, "a checkpoint file, a run folder (its latest checkpoint), or 'auto' (--out's "
                                 "latest checkpoint if there is one, else a fresh start)", type=str)
    log_every: int = _setting(50, "steps between loss reports (progress bar and TensorBoard)")
    sample_every: int = _setting(1000, "steps between sample grids (fixed z, EMA generator)")
    n_samples: int = _setting(16, "images in a sample grid")
    checkpoint_every: int = _setting(2000, "steps between checkpoints (one is also written at the end)")

    def architecture(self):
        return {name: getattr(self, name) for name in ARCHITECTURE_FIELDS}

    def validate(self):
        """Raise ValueError for settings that cannot train, before anything is built."""
        if self.variant is not None and self.model != "PixelFolder":
            raise ValueError(f"--variant {self.variant!r} is a PixelFolder ablation; it does not apply to "
                             f"--model {self.model}")
        if self.official_data_flow and self.model != "PixelFolder":
            raise ValueError(f"--official-data-flow applies to PixelFolder only, not --model {self.model}")
        if self.mixing > 0 and self.model == "CIPS":
            raise ValueError("--mixing: CIPS takes one style vector for every layer, so style mixing does not apply")
        if not 0 <= self.mixing <= 1:
            raise ValueError(f"--mixing must be a probability in [0, 1], got {self.mixing}")
        for name in ("batch", "d_reg_every", "steps", "log_every", "sample_every", "n_samples", "checkpoint_every",
                     "procedural_images"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.ema_half_life <= 0:
            raise ValueError(f"--ema-half-life must be positive, got {self.ema_half_life}")

    @classmethod
    def from_dict(cls, values):
        """The config a checkpoint stored (fields this version does not know are an error)."""
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown training settings {sorted(unknown)}")
        return cls(**values)


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m training.train", description="Train a generator of models/ "
                                     "against the StyleGAN2 discriminator with the PixelFolder paper's recipe.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for setting in dataclasses.fields(TrainConfig):
        options = dict(setting.metadata)
        options["default"] = setting.default
        if isinstance(setting.default, bool):
            options["action"] = argparse.BooleanOptionalAction
        else:
            options.setdefault("type", type(setting.default))
        parser.add_argument("--" + setting.name.replace("_", "-"), dest=setting.name, **options)
    return parser


def parse_args(argv=None):
    return TrainConfig(**vars(build_parser().parse_args(argv)))
