"""Every setting of a training run, with the paper's recipe as defaults, and its command line.

Each field of ``TrainConfig`` is a flag of ``python -m training.train`` (``batch_size`` would be
``--batch-size``); a checkpoint stores the config as a plain dict (``dataclasses.asdict``).
"""
import argparse
import dataclasses
from dataclasses import dataclass, field

import models
from training import cli
from training.networks import GENERATORS

# The fields that decide the networks' shapes: a checkpoint resumes only into the same ones.
ARCHITECTURE_FIELDS = ("model", "variant", "size", "width", "style_dim", "n_mlp", "channel_multiplier",
                       "channel_base", "channel_max", "mbstd_channels")
# The fields that decide what the networks compute: the shapes' and these two.
NETWORK_FIELDS = ARCHITECTURE_FIELDS + ("conv_clamp", "mbstd_group")
# Sizes every model is built for: the discriminator needs 8 px, the channel table ends at 1024.
MINIMUM_SIZE, MAXIMUM_SIZE = 8, 1024
MODEL_MINIMUM_SIZES = {"PixelFolder": 16}
# The fields that may change between a run and its resume without changing what it computes.
RESUMABLE_CHANGES = ("steps", "out", "resume", "num_workers", "device", "backend", "compile", "official_data_flow",
                     "log_every", "sample_every", "n_samples", "checkpoint_every")


def _setting(default, help, check=None, **argparse_options):
    """A field and its flag; ``check`` (a training.cli validator) parses the flag and checks the value."""
    return field(default=default, metadata={"help": help, "check": check, **argparse_options})


@dataclass
class TrainConfig:
    # Data
    dataset: str = _setting("procedural", "'procedural' (built-in shapes, no download), 'digits' (scikit-learn's "
                                          "1,797 handwritten digits, up-sampled; pip install "
                                          "'.[digits]'), a folder of "
                                          "images (png/jpg/jpeg/webp, searched recursively), a zip of images "
                                          "(StyleGAN2-ADA's dataset_tool format, read in place) or an LMDB from "
                                          "training.prepare_data")
    procedural_images: int = _setting(10000, "number of images in the procedural dataset", cli.integer(1))
    hflip: bool = _setting(None, "add the left-right mirror of every image to the dataset (default: yes, except for "
                                 "'digits': a mirrored digit is not a digit)", action=argparse.BooleanOptionalAction)
    num_workers: int = _setting(None, "data loader worker processes per GPU (0: load in the training process; "
                                      "None: this process's share of the machine's CPU cores, less one, at most 8)",
                                cli.integer(0))
    # Networks
    model: str = _setting("PixelFolder", "generator", choices=tuple(GENERATORS))
    variant: str = _setting(None, "one of the paper's PixelFolder ablation models (models.VARIANTS)", type=str,
                            choices=tuple(models.VARIANTS))
    size: int = _setting(256, "image resolution (a power of two)", cli.power_of_two(MINIMUM_SIZE, MAXIMUM_SIZE))
    width: float = _setting(1.0, "scales every channel count of G and D (small models for tests)", cli.number(above=0))
    style_dim: int = _setting(512, "dimension of z and w", cli.integer(1))
    n_mlp: int = _setting(8, "layers of the mapping network", cli.integer(1))
    official_data_flow: bool = _setting(False, "PixelFolder: compute the batch-invariant positional branch once "
                                               "per image as the official code does (same images, slower; for "
                                               "speed comparisons)")
    channel_multiplier: int = _setting(2, "channel multiplier of G and D (StyleGAN2 config-f: 2)", cli.integer(1))
    channel_base: int = _setting(None, "StyleGAN2: NVlabs' channel rule, min(channel_base / r, channel_max) "
                                       "channels at r x r in G and D, instead of --channel-multiplier's table "
                                       "(converted NVlabs networks)", cli.integer(1))
    channel_max: int = _setting(512, "StyleGAN2: the cap of --channel-base's rule", cli.integer(1))
    conv_clamp: float = _setting(None, "StyleGAN2: clamp every conv layer's output of G and D to +-this (NVlabs' "
                                       "conv_clamp; their pickles have 256)", cli.number(above=0))
    mbstd_group: int = _setting(4, "images per minibatch-standard-deviation group of D", cli.integer(1))
    mbstd_channels: int = _setting(1, "feature maps the minibatch standard deviation appends in D (0: none)",
                                   cli.integer(0))
    # The paper's recipe
    batch: int = _setting(32, "images per step over all GPUs together", cli.integer(1))
    lr: float = _setting(0.002, "Adam learning rate (D's is scaled for lazy R1, as StyleGAN2)", cli.number(above=0))
    beta1: float = _setting(0.0, "Adam beta1", cli.number(minimum=0, below=1))
    beta2: float = _setting(0.99, "Adam beta2", cli.number(minimum=0, below=1))
    r1_gamma: float = _setting(10.0, "R1 penalty weight gamma (0: no R1)", cli.number(minimum=0))
    d_reg_every: int = _setting(16, "apply the R1 penalty every this many D steps (lazy regularization)",
                                cli.integer(1))
    ema_half_life: float = _setting(10000.0, "half-life of the generator EMA, in images", cli.number(above=0))
    mixing: float = _setting(0.0, "style-mixing probability", cli.number(minimum=0, maximum=1))
    steps: int = _setting(800000, "train until this many steps in all (a resumed run counts the steps before)",
                          cli.integer(1))
    seed: int = _setting(0, "seed of the weights, the data order and every random draw", cli.integer(0, 2 ** 63 - 1))
    # How it runs
    device: str = _setting("auto", "'auto' (the GPU of this process if there is one), 'cuda' or 'cpu'", cli.device,
                           choices=("auto", "cuda", "cpu"))
    backend: str = _setting("auto", "pixelfolder_ops backend", choices=("auto", "reference", "cpu", "cuda", "triton"))
    amp: str = _setting("none", "mixed precision: 'bf16' runs G and D under bfloat16 autocast",
                        choices=("none", "bf16"))
    channels_last: bool = _setting(False, "channels-last memory format for G, D and the images")
    compile: bool = _setting(False, "torch.compile G and D (the R1 pass stays eager: it needs double backward)")
    # Output
    out: str = _setting("runs/train", "folder for checkpoints, sample grids and TensorBoard logs", cli.output_folder)
    resume: str = _setting(None, "a checkpoint file, a run folder (its latest checkpoint), or 'auto' (--out's "
                                 "latest checkpoint if there is one, else a fresh start); the run continues with "
                                 "the checkpoint's settings, and the flags given on the command line override them",
                           type=str)
    log_every: int = _setting(50, "steps between loss reports (progress bar and TensorBoard)", cli.integer(1))
    sample_every: int = _setting(1000, "steps between sample grids (fixed z, EMA generator)", cli.integer(1))
    n_samples: int = _setting(16, "images in a sample grid", cli.integer(1))
    checkpoint_every: int = _setting(2000, "steps between checkpoints (one is also written at the end)",
                                     cli.integer(1))

    def __post_init__(self):
        if self.hflip is None:
            self.hflip = self.dataset != "digits"

    def architecture(self):
        """The settings that decide what the networks compute (models.architecture builds them)."""
        return {name: getattr(self, name) for name in NETWORK_FIELDS}

    def validate(self):
        """Raise ValueError for settings that cannot train, before anything is built: each value by the
        rule of its flag, then the combinations."""
        for setting in dataclasses.fields(self):
            value, check = getattr(self, setting.name), setting.metadata.get("check")
            if check is not None and value is not None:
                cli.check_value(flag(setting.name), check, value)
        if self.variant is not None and self.model != "PixelFolder":
            raise ValueError(f"--variant {self.variant!r} is a PixelFolder ablation; it does not apply to "
                             f"--model {self.model}")
        for name in ("channel_base", "conv_clamp"):
            if getattr(self, name) is not None and self.model != "StyleGAN2":
                raise ValueError(f"{flag(name)} applies to StyleGAN2 only, not --model {self.model}")
        if self.official_data_flow and self.model != "PixelFolder":
            raise ValueError(f"--official-data-flow applies to PixelFolder only, not --model {self.model}")
        if self.mixing > 0 and self.model == "CIPS":
            raise ValueError("--mixing: CIPS takes one style vector for every layer, so style mixing does not apply")
        if self.size < MODEL_MINIMUM_SIZES.get(self.model, MINIMUM_SIZE):
            raise ValueError(f"argument --size: --model {self.model} needs a size of at least "
                             f"{MODEL_MINIMUM_SIZES[self.model]}, got {self.size}")

    @classmethod
    def from_dict(cls, values):
        """The config a checkpoint stored (fields this version does not know are an error)."""
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown training settings {sorted(unknown)}")
        return cls(**values)


def flag(name):
    return "--" + name.replace("_", "-")


def build_parser(with_defaults=True):
    """The command line; ``with_defaults=False``: flags not given are left out of the result."""
    parser = cli.CommandLineParser(prog="python -m training.train", description="Train a generator of models/ "
                                   "against the StyleGAN2 discriminator with the PixelFolder paper's recipe.",
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                   argument_default=None if with_defaults else argparse.SUPPRESS)
    for setting in dataclasses.fields(TrainConfig):
        options = {key: value for key, value in setting.metadata.items() if key != "check"}
        if with_defaults:
            options["default"] = setting.default
        if isinstance(setting.default, bool):
            options["action"] = argparse.BooleanOptionalAction
        elif "action" not in options:
            options.setdefault("type", setting.metadata["check"] or type(setting.default))
        parser.add_argument(flag(setting.name), dest=setting.name, **options)
    return parser


def parse_args(argv=None):
    return TrainConfig(**vars(build_parser().parse_args(argv)))


def explicit_settings(argv=None):
    """{name: value} of the settings given on the command line ``argv``."""
    return vars(build_parser(with_defaults=False).parse_args(argv))


def resumed_config(saved, explicit):
    """The config of a resumed run: the checkpoint's settings ``saved`` (a dict), with those given
    ``explicit``ly on the command line instead. ValueError for an explicit setting that would change the
    networks the checkpoint holds."""
    saved = dataclasses.asdict(TrainConfig.from_dict(saved))  # the defaults of settings added since it was written
    for name in ARCHITECTURE_FIELDS:
        if name in explicit and explicit[name] != saved[name]:
            raise ValueError(f"argument {flag(name)}: a resumed run keeps the networks of its checkpoint, which "
                             f"has {flag(name)} {saved[name]}, not {explicit[name]} (train in another --out "
                             f"to start a new run)")
    return TrainConfig.from_dict({**saved, **explicit})
