"""INR-GAN: the parameter count of the authors' configuration, shapes, determinism, gradients and the
base-class call options."""
import math

import pytest
import torch
import torch.nn.functional as F

from benchmarks.complexity import count_gmacs
from models.inrgan import INRGAN, CoordinateEmbedding, FMMLinear, logarithmic_frequencies
from models.layers import channel_table

PARAMS_256 = 74_012_509  # the authors' released configuration; the paper's Table 1 says 107.03 M
MAPPING_PARAMS = 2_101_248


def count(module):
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    return INRGAN(128, width=0.0625)


def test_parameter_count_and_breakdown_at_256():
    with torch.device("meta"):
        model = INRGAN()
    assert count(model) == PARAMS_256
    assert count(model.style) == MAPPING_PARAMS
    fmm = [m for m in model.modules() if isinstance(m, FMMLinear)]
    assert len(fmm) == 15 and model.n_latent == 16
    assert sum(count(m.affine) for m in fmm) == 513 * 10 * 12_052
    constants = [model.input.constant] + [e.constant for e in model.embeddings.values()]
    assert sum(c.numel() for c in constants) == 128 * 32 ** 2 + 128 * 64 ** 2 + 64 * 128 ** 2 + 64 * 256 ** 2


def test_layer_shapes_follow_the_authors_config():
    with torch.device("meta"):
        model = INRGAN()
    assert model.block_resolutions == [32, 32, 32, 32, 64, 128, 256]
    assert [e.channels for e in (model.input, *model.embeddings.values())] == [168, 176, 156, 160]
    shapes = [[tuple(layer.weight.shape) for layer in block] for block in model.blocks]
    assert shapes == [[(512, 168)], *[[(512, 512)] * 2] * 3, [(512, 688), (512, 512)],
                      [(256, 668), (256, 256), (256, 256)], [(128, 416), (128, 128), (128, 128)]]


def test_width_scales_every_layer_and_coordinate_constant_and_the_affines_start_at_0(small):
    table = channel_table(2, 0.0625)
    outs = [min(table[resolution], table[4]) for resolution in (4, 8, 16, 32, 64, 128)]
    assert [[layer.weight.shape[0] for layer in block] for block in small.blocks] == [
        [outs[0]], *[[out] * 2 for out in outs[1:5]], [outs[5]] * 3]
    # The constants (128 and 64 channels) and the random frequencies (32) at 1/16: the minimum, 8.
    constants = [e.constant.shape[1] for e in (small.input, *small.embeddings.values())]
    assert constants == [8, 8, 8] and len(small.embeddings["128"].frequencies) == 2 * (2 * 7 + 8)
    # FMM's affine heads start with bias 0 (the factors centred on 0), not AdaIN's 1.
    fmm = [layer for block in small.blocks for layer in block]
    assert all(torch.equal(layer.affine.bias, torch.zeros_like(layer.affine.bias)) for layer in fmm)


def test_wider_variant_matching_the_papers_compute():
    with torch.device("meta"):
        model = INRGAN(channel_multiplier=4)
    assert count(model) == 86_155_997
    assert [model.channels[r] for r in (64, 128, 256)] == [512, 512, 256]


def test_rejects_a_size_that_is_not_a_power_of_two():
    with pytest.raises(ValueError, match="power of two"):
        INRGAN(96)


@pytest.mark.slow
def test_output_shape_stages_and_determinism(small):
    z = torch.randn(2, 512)
    with torch.no_grad():
        image, stages = small(z, return_stages=True)
        again = small(z)
        other = small(torch.randn(2, 512))
    assert image.shape == (2, 3, 128, 128) and torch.isfinite(image).all()
    assert [s.shape[-1] for s in stages] == [32, 32, 32, 32, 64, 128] and stages[-1] is image
    assert small.noise_shapes(2) == []
    torch.testing.assert_close(again, image)  # no noise inputs: the same z gives the same image
    assert not torch.allclose(image[0], image[1]) and not torch.allclose(other, image)


def test_stage_resolutions_do_not_depend_on_the_channel_count():
    # 16 channels at every resolution, against an input block at 32: no coincidence of channels and size.
    torch.manual_seed(0)
    model = INRGAN(64, width=0.03, style_dim=32, n_mlp=2)
    with torch.no_grad():
        image, stages = model(torch.randn(1, 32), return_stages=True)
    assert [s.shape[-1] for s in stages] == [32, 32, 32, 32, 64] and image.shape == (1, 3, 64, 64)


def test_logarithmic_frequencies_are_octaves_along_the_axes_and_the_diagonals():
    q = math.pi / 2  # 2 pi / 4: the first octave's period is 4 grid units (the grid spans 2)
    axes_and_diagonals = [[0, q], [0, 2 * q], [q, 0], [2 * q, 0], [-q / 2, q / 2], [-q, q], [q / 2, q / 2], [q, q]]
    torch.testing.assert_close(logarithmic_frequencies(4, diagonals=True), torch.tensor(axes_and_diagonals))
    # ceil(log2 5) = 3 octaves
    axes = [[0, q], [0, 2 * q], [0, 4 * q], [q, 0], [2 * q, 0], [4 * q, 0]]
    torch.testing.assert_close(logarithmic_frequencies(5, diagonals=False), torch.tensor(axes))


def test_coordinate_embedding_is_sines_and_cosines_then_the_constant():
    torch.manual_seed(0)
    embedding = CoordinateEmbedding(8, constant_channels=5, diagonals=True, random_frequencies=4096)
    fixed = 3 * 4  # 3 octaves along 4 directions
    random = embedding.frequencies[fixed:fixed + 4096]
    # The random frequencies: N(0, 10) per coordinate (std sqrt 10; 8192 draws: within 3 %).
    assert abs(random.std().item() / math.sqrt(10) - 1) < 0.03
    features = embedding(2)
    channels = fixed + 4096
    assert features.shape == (2, 2 * channels + 5, 8, 8) and embedding.channels == 2 * channels + 5
    sines, cosines = features[0, :channels], features[0, channels:2 * channels]
    torch.testing.assert_close(sines ** 2 + cosines ** 2, torch.ones_like(sines))  # the second half is cos
    torch.testing.assert_close(features[:, 2 * channels:], embedding.constant.expand(2, -1, -1, -1))


@pytest.mark.parametrize("channels_last", [False, True])
def test_fmm_layer_equals_its_formula(channels_last):
    """W (1 + A B / sqrt(r)), each output row normalised, applied per pixel, then bias + leaky ReLU
    times sqrt 2; A (c_out x r) and B (r x c_in) from the affine head of w (equalized lr)."""
    torch.manual_seed(0)
    c_in, c_out, style_dim, rank = 6, 5, 8, 3
    layer = FMMLinear(c_in, c_out, style_dim, rank).double()
    layer.affine.bias.data.normal_()
    layer.activate.bias.data.normal_()
    x, w = torch.randn(2, c_in, 4, 3, dtype=torch.float64), torch.randn(2, style_dim, dtype=torch.float64)
    factors = F.linear(w, layer.affine.weight / math.sqrt(style_dim), layer.affine.bias)
    expected = []
    for b in range(2):
        a, bb = factors[b, :c_out * rank].view(c_out, rank), factors[b, c_out * rank:].view(rank, c_in)
        weight = layer.weight * (1 + a @ bb / math.sqrt(rank))
        weight = weight / (weight.square().sum(1, keepdim=True).sqrt() + 1e-8)
        expected.append(torch.einsum("oi,ihw->ohw", weight, x[b]))
    expected = F.leaky_relu(torch.stack(expected) + layer.activate.bias.view(1, -1, 1, 1), 0.2) * math.sqrt(2)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    out = layer(x, w)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    assert out.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def test_gradients_reach_every_parameter(small):
    small.zero_grad()
    small(torch.randn(2, 512)).square().mean().backward()
    missing = [name for name, p in small.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_truncation_and_input_is_latent(small):
    z = torch.randn(2, 512)
    with torch.no_grad():
        w = small.style(z)
        torch.testing.assert_close(small(w, input_is_latent=True), small(z))
        mean = small.mean_latent(256)
        torch.testing.assert_close(small(z, truncation=0, truncation_latent=mean),
                                   small(mean.expand(2, -1), input_is_latent=True))
        half = small(z, truncation=0.5, truncation_latent=mean)
    assert torch.isfinite(half).all()


def test_style_mixing_switches_styles_at_the_index(small):
    z1, z2 = torch.randn(1, 512), torch.randn(1, 512)
    with torch.no_grad():
        latent = small.latents([z1, z2], inject_index=5)
        mixed = small([z1, z2], inject_index=5)
    assert latent.shape == (1, small.n_latent, 512)
    torch.testing.assert_close(latent[:, 4], small.style(z1))
    torch.testing.assert_close(latent[:, 5], small.style(z2))
    assert mixed.shape == (1, 3, 128, 128)


@pytest.mark.slow
def test_fvcore_gmacs_at_256():
    torch.manual_seed(0)
    assert count_gmacs(INRGAN()) == pytest.approx(14.99, abs=0.005)
