"""Networks described by plain settings: the architecture a checkpoint's config records (the
architecture fields of training's TrainConfig), built into this package's modules."""
from .cips import CIPS
from .discriminator import Discriminator
from .inrgan import INRGAN
from .pixelfolder import PixelFolder
from .stylegan2 import StyleGAN2Generator

GENERATORS = {"PixelFolder": PixelFolder, "StyleGAN2": StyleGAN2Generator, "CIPS": CIPS, "INR-GAN": INRGAN}

# Every setting with its default; a record that lacks one (an older checkpoint) has the default.
DEFAULTS = {"model": "PixelFolder", "variant": None, "size": 256, "width": 1.0, "style_dim": 512, "n_mlp": 8,
            "channel_multiplier": 2, "channel_base": None, "channel_max": 512, "conv_clamp": None,
            "mbstd_group": 4, "mbstd_channels": 1}
# The settings that only StyleGAN2 (and the discriminator) take, with the value that means "not used".
STYLEGAN2_ONLY = {"channel_base": None, "conv_clamp": None}


def complete(architecture):
    """``architecture`` with the default of every setting it lacks."""
    return {**DEFAULTS, **{name: value for name, value in architecture.items() if name in DEFAULTS}}


def build_generator(architecture, official_data_flow=False):
    a = complete(architecture)
    options = dict(size=a["size"], style_dim=a["style_dim"], n_mlp=a["n_mlp"],
                   channel_multiplier=a["channel_multiplier"], width=a["width"])
    if a["model"] == "StyleGAN2":
        options.update(channel_base=a["channel_base"], channel_max=a["channel_max"], conv_clamp=a["conv_clamp"])
    else:
        used = [name for name, unused in STYLEGAN2_ONLY.items() if a[name] != unused]
        if used:
            raise ValueError(f"{', '.join(used)}: StyleGAN2 only, not {a['model']}")
    if a["model"] == "PixelFolder":
        options["official_data_flow"] = official_data_flow
    if a["variant"] is not None:
        return PixelFolder.variant(a["variant"], **options)
    return GENERATORS[a["model"]](**options)


def build_discriminator(architecture):
    a = complete(architecture)
    return Discriminator(a["size"], channel_multiplier=a["channel_multiplier"], width=a["width"],
                         stddev_group=a["mbstd_group"], stddev_feat=a["mbstd_channels"],
                         channel_base=a["channel_base"], channel_max=a["channel_max"], conv_clamp=a["conv_clamp"])
