"""The generators of the paper's tables at 256x256, by the names the tables use."""
import models

PIXELFOLDER_NAMES = tuple(models.VARIANTS)


def build_generator(name, size=256, official_data_flow=False):
    """A fresh generator; ``official_data_flow`` makes PixelFolder models compute their positional
    branch once per image, as the official code does (other models have no such branch)."""
    if name in PIXELFOLDER_NAMES:
        return models.PixelFolder.variant(name, size=size, official_data_flow=official_data_flow)
    factories = {"StyleGAN2": models.StyleGAN2Generator, "CIPS": models.CIPS, "INR-GAN": models.INRGAN}
    if name not in factories:
        raise ValueError(f"build_generator: unknown generator {name!r}; expected one of "
                         f"{', '.join(GENERATOR_NAMES)}")
    return factories[name](size)


GENERATOR_NAMES = ("PixelFolder", "StyleGAN2", "CIPS", "INR-GAN") + PIXELFOLDER_NAMES[1:]
