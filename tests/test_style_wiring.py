"""Which style vector w_i (row i of the per-layer latent, B x n_latent x style_dim) each layer of each
generator takes, against the official layer-to-w maps written out here from the specifications:

- PixelFolder and its ablations (docs/design.md, section 4): the k-th StyledConv takes w_k, the
  ToRGB after fold f of stage i takes w_{4i + 2f + 2}.
- StyleGAN2 (docs/design.md, section 5): the 4x4 conv w_0, its ToRGB w_1; the two convs of the j-th
  resolution w_{2j+1} and w_{2j+2}, its ToRGB w_{2j+3}.
- CIPS: one w for every layer.
- INR-GAN (StyleGAN2-ADA's synthesis network): each block's layers take consecutive rows, and its
  ToRGB the row after its last layer, which the next block's first layer takes too.

A layer's style is the output of its affine (``modulation`` of a modulated conv, ``affine`` of an
FMM layer), read by forward hooks. The noise inputs likewise: the i-th noise tensor goes to the i-th
StyledConv in forward order (``noise_shapes``' order)."""
import pytest
import torch

import models
from models.inrgan import INRGAN

PIXELFOLDER_64 = {**{f"convs.{k}": k for k in range(8)},
                  "to_rgbs.0": 2, "to_rgbs.1": 4, "to_rgbs.2": 6, "to_rgbs.3": 8}
STYLEGAN2_32 = {"conv1": 0, "to_rgb1": 1, "convs.0": 1, "convs.1": 2, "to_rgbs.0": 3, "convs.2": 3, "convs.3": 4,
                "to_rgbs.1": 5, "convs.4": 5, "convs.5": 6, "to_rgbs.2": 7}
CIPS_16 = {"conv1": 0, **{f"linears.{i}": 0 for i in range(6)}, **{f"to_rgbs.{i}": 0 for i in range(3)}}
# Blocks 4, 8, 16 (all at 16 x 16), 32, 64 (one extra layer): 1, 2, 2, 2, 3 FMM layers.
INRGAN_64 = {"blocks.0.0": 0, "to_rgbs.0": 1, "blocks.1.0": 1, "blocks.1.1": 2, "to_rgbs.1": 3,
             "blocks.2.0": 3, "blocks.2.1": 4, "to_rgbs.2": 5, "blocks.3.0": 5, "blocks.3.1": 6, "to_rgbs.3": 7,
             "blocks.4.0": 7, "blocks.4.1": 8, "blocks.4.2": 9, "to_rgbs.4": 10}

# 16 channels and a 32-wide w everywhere: a forward takes milliseconds.
TINY = dict(width=0.03, style_dim=32, n_mlp=2)
GENERATORS = {
    **{variant: (lambda variant=variant: models.PixelFolder.variant(variant, size=64, **TINY), PIXELFOLDER_64)
       for variant in models.VARIANTS},
    "StyleGAN2": (lambda: models.StyleGAN2Generator(32, **TINY), STYLEGAN2_32),
    "CIPS": (lambda: models.CIPS(16, **TINY), CIPS_16),
    "INR-GAN": (lambda: INRGAN(64, input_size=16, extra_layer_resolutions=(64,), **TINY), INRGAN_64),
}


def style_layers(generator):
    """{layer name: its affine}, for every layer that takes a style."""
    layers = {}
    for name, module in generator.named_modules():
        for suffix in (".conv.modulation", ".affine"):
            if name.endswith(suffix):
                layers[name[:-len(suffix)]] = module
    return layers


def styles_of(generator, forward):
    """{layer name: the style it computed} in ``forward()``, a call of the generator."""
    styles = {}
    hooks = [affine.register_forward_hook(lambda module, inputs, out, name=name: styles.__setitem__(name, out))
             for name, affine in style_layers(generator).items()]
    try:
        with torch.no_grad():
            forward()
    finally:
        for hook in hooks:
            hook.remove()
    return styles


def build(name):
    factory, table = GENERATORS[name]
    torch.manual_seed(0)
    generator = factory()
    assert generator.n_latent == max(table.values()) + 1
    assert set(style_layers(generator)) == set(table)
    return generator, table


@pytest.mark.parametrize("name", GENERATORS)
def test_each_latent_row_reaches_exactly_the_layers_of_the_official_map(name):
    generator, table = build(name)
    latent = torch.randn(2, generator.n_latent, generator.style_dim)
    noise = generator.make_noise(2)
    before = styles_of(generator, lambda: generator.synthesis(latent, noise))
    assert set(before) == set(table)
    for row in range(generator.n_latent):
        perturbed = latent.clone()
        perturbed[:, row] = torch.randn(2, generator.style_dim)
        after = styles_of(generator, lambda: generator.synthesis(perturbed, noise))
        changed = {layer for layer in table if not torch.equal(after[layer], before[layer])}
        assert changed == {layer for layer, taken in table.items() if taken == row}, f"row {row}"


@pytest.mark.parametrize("name", [name for name, (_, table) in GENERATORS.items() if max(table.values()) > 0])
@pytest.mark.slow
def test_style_mixing_at_every_crossover_gives_each_layer_the_w_of_its_side(name):
    generator, table = build(name)
    affines = style_layers(generator)
    z1, z2 = torch.randn(2, generator.style_dim), torch.randn(2, generator.style_dim)
    noise = generator.make_noise(2)
    with torch.no_grad():
        w1, w2 = generator.style(z1), generator.style(z2)
        for index in range(1, generator.n_latent):
            styles = styles_of(generator, lambda: generator([z1, z2], inject_index=index, noise=noise))
            for layer, taken in table.items():
                expected = affines[layer](w1 if taken < index else w2)
                torch.testing.assert_close(styles[layer], expected, rtol=0, atol=0,
                                           msg=f"crossover {index}, {layer}")


# The StyledConvs in forward order, each taking the noise tensor of its position.
NOISE_ORDER = {
    **{variant: [f"convs.{k}" for k in range(8)] for variant in models.VARIANTS},
    "StyleGAN2": ["conv1"] + [f"convs.{k}" for k in range(6)],
    "CIPS": ["conv1"] + [f"linears.{k}" for k in range(6)],
}


@pytest.mark.parametrize("name", NOISE_ORDER)
def test_each_noise_tensor_reaches_its_styled_conv_first(name):
    generator, _ = build(name)
    for module in generator.modules():
        if isinstance(module, models.layers.NoiseInjection):
            module.weight.data.fill_(1.0)
    convs = {layer: generator.get_submodule(layer) for layer in NOISE_ORDER[name]}
    latent = torch.randn(1, generator.n_latent, generator.style_dim)
    noise = generator.make_noise(1)
    assert len(noise) == len(convs)

    def outputs(noise):
        seen = {}
        hooks = [conv.register_forward_hook(lambda module, inputs, out, layer=layer: seen.__setitem__(layer, out))
                 for layer, conv in convs.items()]
        with torch.no_grad():
            generator.synthesis(latent, noise)
        for hook in hooks:
            hook.remove()
        return seen

    before = outputs(noise)
    for index, layer in enumerate(NOISE_ORDER[name]):
        perturbed = list(noise)
        perturbed[index] = torch.randn_like(noise[index])
        after = outputs(perturbed)
        changed = [conv for conv in NOISE_ORDER[name] if not torch.equal(after[conv], before[conv])]
        assert changed and changed[0] == layer, f"noise {index}"
