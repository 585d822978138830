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

# The baselines run the reference backend, as the official code (PixelFolder's positional branch once per
# image) or with that branch hoisted out of the batch as every fused mode runs it, so that a speed-up
# separates the data-flow gain from the kernels'; each also under torch.compile. Mode -> official data flow.
BASELINE_MODES = {"reference": True, "reference_hoisted": False, "compile": True, "compile_hoisted": False}
# The eager baselines every measured row is compared with.
EAGER_BASELINES = ("reference", "reference_hoisted")


def official_data_flow(mode):
    """Whether benchmark ``mode`` runs the official data flow (only the official baselines do)."""
    return BASELINE_MODES.get(mode, False)


def runs_mode(name, mode):
    """False for a hoisted baseline of a generator with nothing to hoist: it would repeat the official one."""
    return name in PIXELFOLDER_NAMES or mode not in ("reference_hoisted", "compile_hoisted")
