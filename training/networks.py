"""The generator and discriminator a TrainConfig describes."""
import models

GENERATORS = {"PixelFolder": models.PixelFolder, "StyleGAN2": models.StyleGAN2Generator, "CIPS": models.CIPS,
              "INR-GAN": models.INRGAN}


def build_generator(config):
    options = dict(size=config.size, style_dim=config.style_dim, n_mlp=config.n_mlp,
                   channel_multiplier=config.channel_multiplier, width=config.width)
    if config.model == "PixelFolder":
        options["official_data_flow"] = config.official_data_flow
    if config.variant is not None:
        return models.PixelFolder.variant(config.variant, **options)
    return GENERATORS[config.model](**options)


def build_discriminator(config):
    return models.Discriminator(config.size, channel_multiplier=config.channel_multiplier, width=config.width)
