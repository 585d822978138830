"""The generator and discriminator a TrainConfig describes."""
from models.architecture import GENERATORS, build_discriminator as build_discriminator_of
from models.architecture import build_generator as build_generator_of

__all__ = ["GENERATORS", "build_discriminator", "build_generator"]


def build_generator(config):
    return build_generator_of(config.architecture(), official_data_flow=config.official_data_flow)


def build_discriminator(config):
    return build_discriminator_of(config.architecture())
