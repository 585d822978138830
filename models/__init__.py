"""The PixelFolder generator, the residual discriminator and the paper's baselines, on pixelfolder_ops."""
from .cips import CIPS
from .discriminator import Discriminator
from .generator import StyleGenerator
from .inrgan import INRGAN
from .layers import to_channels_last
from .official import load_official
from .pretrained import load_pretrained
from .pixelfolder import VARIANTS, PixelFolder
from .stylegan2 import StyleGAN2Generator

__all__ = ["CIPS", "Discriminator", "INRGAN", "PixelFolder", "StyleGAN2Generator", "StyleGenerator", "VARIANTS",
           "load_official", "load_pretrained", "to_channels_last"]
