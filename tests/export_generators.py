"""What the export tests share (no test module imports another): small generators of every kind and an
official-layout checkpoint."""
import functools

import torch

import models

GENERATORS = {
    "PixelFolder": lambda: models.PixelFolder(16, width=0.125),
    "StyleGAN2": lambda: models.StyleGAN2Generator(16, width=0.125),
    "CIPS": lambda: models.CIPS(16, width=0.125),
    "INR-GAN": lambda: models.INRGAN(32, width=0.125, input_size=8),
}
# PixelFolder's ablations (the paper's Table 3), by their table names.
ABLATIONS = {name: functools.partial(models.PixelFolder.variant, name, size=16, width=0.125)
             for name in models.VARIANTS if name != "PixelFolder"}


def tiny(name):
    """A small generator whose noise strengths are not zero (as after training), so noise counts."""
    torch.manual_seed(0)
    generator = {**GENERATORS, **ABLATIONS}[name]().eval()
    with torch.no_grad():
        for parameter_name, parameter in generator.named_parameters():
            if parameter_name.endswith("noise.weight"):
                parameter.normal_(0, 0.5)
    return generator


def official_checkpoint(path):
    """An official-layout PixelFolder checkpoint at 16x16 written to ``path``; returns the path as a string."""
    torch.manual_seed(0)
    generator = models.PixelFolder(16)
    torch.save({"g": generator.state_dict(), "g_ema": generator.state_dict(),
                "d": models.Discriminator(16).state_dict()}, path)
    return str(path)
