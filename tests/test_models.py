"""The generators and the discriminator: exact sizes, shapes, the call options, and GMACs."""
import pytest
import torch

import models
from benchmarks.complexity import count_gmacs, count_params
from helpers import noisy, official_state
from training.config import TrainConfig
from training.networks import build_discriminator, build_generator

# Exact counts of the official implementation (docs/design.md, sections 4 and 5).
PARAMS = {
    ("PixelFolder", 256): 20_843_614, ("PixelFolder", 512): 17_478_430, ("PixelFolder", 1024): 21_141_096,
    ("StyleGAN2Generator", 256): 30_034_338, ("StyleGAN2Generator", 512): 30_276_583,
    ("StyleGAN2Generator", 1024): 30_370_060, ("CIPS", 256): 44_317_092, ("Discriminator", 256): 28_864_129,
}
VARIANT_PARAMS = {"Fold+DeConv": 29_410_174, "Down-Sampling+DeConv": 29_964_574,
                  "w/o coordinate embeddings": 20_187_742, "w/o multi-stage connection": 20_843_614}
MAPPING_PARAMS = 2_101_248


@pytest.mark.parametrize("name,size", PARAMS)
def test_parameter_counts_equal_the_official(name, size):
    with torch.device("meta"):
        model = getattr(models, name)(size)
    assert count_params(model) == PARAMS[name, size]
    if hasattr(model, "style"):
        assert count_params(model.style) == MAPPING_PARAMS


@pytest.mark.parametrize("factory", [models.PixelFolder, models.StyleGAN2Generator, models.CIPS, models.INRGAN])
def test_default_generators_are_the_papers_and_pass_their_options_on(factory):
    with torch.device("meta"):
        default, faster_mapping = factory(), factory(lr_mlp=0.1)
    assert default.size == 256 and default.style_dim == 512
    linears = [layer for layer in default.style if isinstance(layer, models.layers.EqualLinear)]
    assert len(linears) == 8 and {layer.lr_mul for layer in linears} == {0.01}
    assert {layer.lr_mul for layer in faster_mapping.style if isinstance(layer, models.layers.EqualLinear)} == {0.1}


@pytest.mark.parametrize("factory", [models.PixelFolder, models.StyleGAN2Generator,
                                     lambda **kw: models.PixelFolder.variant("Fold+DeConv", **kw)])
def test_a_blur_kernel_given_reaches_every_resampling_layer(factory):
    with torch.device("meta"):
        g = factory(size=64, width=0.125, blur_kernel=(1, 2, 1))
    convs = [m.conv for m in g.modules() if isinstance(m, models.layers.StyledConv)]
    assert convs and all(conv.blur_kernel == (1, 2, 1) for conv in convs)
    upsamplers = [m.upsample for m in g.modules() if isinstance(m, models.layers.ToRGB) and m.upsample is not None]
    assert upsamplers and all(tuple(blur.kernel.shape) == (3, 3) for blur in upsamplers)


@pytest.mark.parametrize("options, given", [({"upsampler": "bilinear"}, "'bilinear', 'fold'"),
                                           ({"positional_downsampler": "max"}, "'unfold', 'max'")])
def test_each_unknown_pixelfolder_option_is_refused_alone(options, given):
    with pytest.raises(ValueError) as error:
        models.PixelFolder(size=16, width=0.03, **options)
    assert str(error.value) == (f"PixelFolder: upsampler must be 'unfold' or 'deconv' and positional_downsampler "
                                f"'fold' or 'blur', got {given}")


def test_the_blur_downsampler_of_the_ablation_is_stylegan2s_downsample():
    # StyleGAN2's Downsample: the [1, 3, 3, 1] outer product, normalised, padded (1, 1) on each side
    # of both axes, every second output: written out with F.conv2d.
    g = models.PixelFolder.variant("Down-Sampling+DeConv", size=16, width=0.03)
    blur = g.posfolders[0].blur
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    taps = torch.tensor([1.0, 3.0, 3.0, 1.0], dtype=torch.float64)
    kernel = (taps[:, None] * taps[None, :] / 64).expand(3, 1, 4, 4)
    expected = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (1, 1, 1, 1)), kernel, stride=2, groups=3)
    torch.testing.assert_close(blur(x), expected)


def test_to_channels_last_changes_the_layout_of_the_4d_tensors_and_fourier_features_only():
    g = models.PixelFolder(size=16, width=0.03)
    before = {name: tensor.clone() for name, tensor in g.state_dict().items()}
    assert models.to_channels_last(g) is g
    for name, tensor in g.state_dict().items():
        assert torch.equal(tensor, before[name]), name
        layout = torch.channels_last if tensor.dim() == 4 else torch.contiguous_format
        assert tensor.is_contiguous(memory_format=layout), name
    assert any(not tensor.is_contiguous() for tensor in g.state_dict().values())  # 3x3 kernels, the constant
    features = g.lffs[0](8, 8)
    assert features.is_contiguous(memory_format=torch.channels_last) and not features.is_contiguous()
    assert models.layers.FourierCoordinateLayer.memory_format == torch.contiguous_format  # other models keep theirs
    # A 4-D buffer too (no model here has one).
    holder = torch.nn.Module()
    holder.register_buffer("grid", torch.randn(1, 2, 3, 3))
    assert models.to_channels_last(holder).grid.is_contiguous(memory_format=torch.channels_last)


def test_fourier_frequencies_start_uniform_in_plus_minus_sqrt_9_over_2():
    torch.manual_seed(0)
    frequencies = models.layers.FourierCoordinateLayer(4096).ffm.conv.weight.flatten()
    bound = (9 / 2) ** 0.5
    # 8192 uniform draws: the extremes lie within 1% of the bounds but for a chance of 0.995^8192 ~ 1e-18.
    assert -bound <= frequencies.min() < -0.99 * bound and 0.99 * bound < frequencies.max() <= bound


def test_the_printed_layers_say_which_convs_demodulate_and_up_sample():
    assert "4, 4, 3, demodulate=True, up=2" in repr(models.layers.StyledConv(4, 4, 3, 8, upsample=True))
    assert "4, 3, 1, demodulate=False, up=1" in repr(models.layers.ToRGB(4, 8))


def test_the_networks_a_train_config_describes_have_its_settings():
    config = TrainConfig(variant="Fold+DeConv", size=64, width=0.125, n_mlp=3, channel_multiplier=1,
                         official_data_flow=True)
    with torch.device("meta"):
        g, d = build_generator(config), build_discriminator(config)
    assert g.size == 64 and g.official_data_flow is True
    assert sum(isinstance(layer, models.layers.EqualLinear) for layer in g.style) == 3
    # Fold+DeConv: the first conv of every fold up-samples (2 stages of 2 folds at 64).
    assert [conv.conv.up for conv in g.convs] == [2, 1] * 4
    # At 64 px the channel table gives 256 * channel_multiplier * width = 32 channels (64 with the default 2).
    assert g.to_rgbs[-1].conv.weight.shape[2] == 32
    assert d.size == 64 and d.convs[0][0].weight.shape[:2] == (32, 3)


@pytest.mark.parametrize("factory", [models.PixelFolder, models.StyleGAN2Generator, models.CIPS])
def test_every_style_affine_starts_with_bias_1(factory):
    # StyleGAN2: the affine A that maps w to a layer's style has its bias initialised to 1.
    g = factory(size=16, width=0.03, style_dim=8, n_mlp=1)
    affines = [m.modulation for m in g.modules() if isinstance(m, models.layers.ModulatedConv2d)]
    assert affines and all(torch.equal(affine.bias, torch.ones_like(affine.bias)) for affine in affines)
    # ... and every other linear layer's (the mapping's, the discriminator's) with bias 0.
    d = models.Discriminator(size=16, width=0.03)
    others = [m for m in [*g.style, *d.modules()] if isinstance(m, models.layers.EqualLinear)]
    assert len(others) == 1 + 2 and all(torch.equal(m.bias, torch.zeros_like(m.bias)) for m in others)


def test_the_default_discriminator_is_stylegan2s_at_256():
    with torch.device("meta"):
        d = models.Discriminator()
    assert (d.size, d.stddev_group, d.stddev_feat) == (256, 4, 1)
    assert count_params(d) == PARAMS["Discriminator", 256]
    assert all(tuple(blur.kernel.shape) == (4, 4) for blur in d.modules() if isinstance(blur, models.layers.Blur))


def test_a_blur_kernel_given_reaches_every_discriminator_downsampling():
    with torch.device("meta"):
        d = models.Discriminator(size=64, width=0.125, blur_kernel=(1, 2, 1))
    blurs = [m for m in d.modules() if isinstance(m, models.layers.Blur)]
    # Each of the 4 ResBlocks (64 -> 4) blurs before its stride-2 3x3 conv and its 1x1 skip; a 3-tap
    # kernel pads (3 - 2 + k - 1) pixels, the extra one before: (2, 1) and (1, 0).
    assert [(tuple(blur.kernel.shape), blur.pad) for blur in blurs] == [((3, 3), (2, 1)), ((3, 3), (1, 0))] * 4
    # ... and the width reaches every layer: (out, in) channels of the table scaled by it.
    channels = models.layers.channel_table(2, 0.125)
    blocks = [block.conv2[1].weight.shape[:2] for block in d.convs[1:]]
    assert blocks == [(channels[resolution // 2], channels[resolution]) for resolution in (64, 32, 16, 8)]
    assert d.convs[0][0].weight.shape[:2] == (channels[64], 3)


# CIPS-skip's channels per block (Anokhin et al.'s configuration); the last five times the channel multiplier.
CIPS_BLOCK_CHANNELS = (512, 512, 512, 512, 256, 128, 64, 32, 16)


@pytest.mark.parametrize("width, multiplier", [(1.0, 2), (0.01, 1), (1.816, 1), (1.785, 1)])
def test_cips_channels_are_the_authors_table_scaled_to_multiples_of_4(width, multiplier):
    # At 1.816 and 1.785 every entry (and the hidden size, 512) sits just below a rounding boundary:
    # an entry off by one moves its layer to the next multiple of 4. At 0.01 every layer is the minimum.
    def scaled(channels):
        return max(4, 4 * round(channels * width / 4))

    table = [scaled(c * (multiplier if block >= 4 else 1)) for block, c in enumerate(CIPS_BLOCK_CHANNELS)]
    with torch.device("meta"):
        g = models.CIPS(size=1024, width=width, channel_multiplier=multiplier)
    hidden, expected, previous = scaled(512), [], scaled(512)
    for channels in table:
        expected += [(channels, previous), (channels, channels)]
        previous = channels
    assert g.emb.input.shape[1] == g.lff.ffm.conv.out_channels == hidden
    assert tuple(g.conv1.conv.weight.shape[1:3]) == (scaled(512), 2 * hidden)
    assert [tuple(layer.conv.weight.shape[1:3]) for layer in g.linears] == expected
    assert [to_rgb.conv.weight.shape[2] for to_rgb in g.to_rgbs] == table


def test_a_bfloat16_model_takes_the_noise_make_noise_gives():
    torch.manual_seed(0)
    g = models.PixelFolder(16, width=0.03, style_dim=32, n_mlp=2).to(torch.bfloat16)
    image = g(torch.randn(2, 32, dtype=torch.bfloat16), noise=g.make_noise(2))  # float32 noise
    assert image.dtype == torch.bfloat16 and torch.isfinite(image.float()).all()


def test_an_upsampling_styled_conv_filters_with_its_own_blur_kernel():
    torch.manual_seed(0)
    own = models.layers.StyledConv(4, 4, 3, 8, upsample=True, blur_kernel=(1, 2, 1))
    default = models.layers.StyledConv(4, 4, 3, 8, upsample=True)
    default.load_state_dict(own.state_dict())
    x, w, noise = torch.randn(1, 4, 5, 5), torch.randn(1, 8), torch.zeros(1, 1, 10, 10)
    assert (own(x, w, noise) - default(x, w, noise)).abs().max() > 1e-3


@pytest.mark.parametrize("variant", VARIANT_PARAMS)
def test_ablation_variant_parameter_counts(variant):
    with torch.device("meta"):
        model = models.PixelFolder.variant(variant)
    assert count_params(model) == VARIANT_PARAMS[variant]


def test_without_coordinate_embeddings_differs_by_the_constant_and_its_merge_conv():
    with torch.device("meta"):
        base, ablated = models.PixelFolder(), models.PixelFolder.variant("w/o coordinate embeddings")
    constant = base.input.input.numel()
    conv0 = count_params(base.posfolders[0].conv0)
    assert count_params(base) - count_params(ablated) == constant + conv0
    # The paper's 20.32 M is the ablated model still holding the unused constant.
    assert count_params(ablated) + constant == 20_318_814


def test_pixelfolder_stage_shapes():
    torch.manual_seed(0)
    g = models.PixelFolder(256, width=0.125)
    assert g.stage_resolutions == [16, 64, 256] and g.n_latent == 13
    image, stages = g(torch.randn(2, 512), return_stages=True)
    assert image.shape == (2, 3, 256, 256)
    assert [s.shape for s in stages] == [(2, 3, 16, 16), (2, 3, 64, 64), (2, 3, 256, 256)]
    assert stages[-1] is image and torch.isfinite(image).all()


def test_pixelfolder_every_layer_resolution():
    g = models.PixelFolder(64, width=0.125)
    seen = []
    for i, conv in enumerate(g.convs):
        conv.register_forward_hook(lambda module, inputs, out, i=i: seen.append((i, tuple(out.shape[1:]))))
    g(torch.randn(1, 512))
    c = models.layers.channel_table(2, 0.125)
    # Stage 0 at 16 (input 4x4), stage 1 at 64 (input 16x16): A at r, its output unfolded to 2r, B at 2r.
    expected = [(c[8] // 4, 8, 8), (c[8], 8, 8), (c[16] // 4, 16, 16), (c[16], 16, 16),
                (c[32] // 4, 32, 32), (c[32], 32, 32), (c[64] // 4, 64, 64), (c[64], 64, 64)]
    assert [shape for _, shape in seen] == expected


GENERATORS = [
    lambda: models.PixelFolder(64, width=0.125),
    lambda: models.PixelFolder.variant("Fold+DeConv", size=64, width=0.125),
    lambda: models.PixelFolder.variant("Down-Sampling+DeConv", size=64, width=0.125),
    lambda: models.PixelFolder.variant("w/o coordinate embeddings", size=64, width=0.125),
    lambda: models.PixelFolder.variant("w/o multi-stage connection", size=64, width=0.125),
    lambda: models.StyleGAN2Generator(32, width=0.125),
    lambda: models.CIPS(16, width=0.125),
]
GENERATOR_IDS = ["PixelFolder", "Fold+DeConv", "Down-Sampling+DeConv", "no-coord", "no-multistage", "StyleGAN2", "CIPS"]


@pytest.mark.parametrize("factory", GENERATORS, ids=GENERATOR_IDS)
@pytest.mark.slow
def test_generator_call_options(factory):
    torch.manual_seed(0)
    g = factory()
    z = torch.randn(2, 512)
    noise = g.make_noise(2)
    image = g(z, noise=noise)
    assert image.shape == (2, 3, g.size, g.size) and torch.isfinite(image).all()
    # Given noise makes the output deterministic; fresh noise changes it once noise strength is non-zero.
    assert torch.equal(g(z, noise=noise), image)
    seeded = [g.make_noise(2, generator=torch.Generator().manual_seed(1)) for _ in range(2)]
    assert all(torch.equal(a, b) for a, b in zip(*seeded))
    # Every stage's RGB, each at a resolution no lower than the one before, the last being the image.
    same, stages = g(z, noise=noise, return_stages=True)
    sizes = [stage.shape[-1] for stage in stages]
    assert torch.equal(same, image) and stages[-1] is same and sizes == sorted(sizes)
    assert all(stage.shape == (2, 3, size, size) for stage, size in zip(stages, sizes))
    assert not torch.equal(noisy(g)(z), g(z))
    # Truncation 0 collapses every z onto the mean w (noise shared by the batch).
    mean = g.mean_latent(256)
    same = g(z, truncation=0.0, truncation_latent=mean, noise=g.make_noise(1))
    torch.testing.assert_close(same[0], same[1])
    assert torch.isfinite(g(z, truncation=0.7)).all()  # estimates the mean itself
    # input_is_latent skips the mapping network.
    w = g.style(z)
    torch.testing.assert_close(g(w, input_is_latent=True, noise=noise), g(z, noise=noise))
    # Gradients reach every parameter.
    g.zero_grad()
    g(z, noise=noise).square().mean().backward()
    unused = {"posfolders.0.conv_merge.0.weight", "posfolders.0.conv_merge.1.bias"}
    missing = [n for n, p in g.named_parameters() if p.grad is None and n not in unused]
    assert not missing


@pytest.mark.parametrize("factory", GENERATORS, ids=GENERATOR_IDS)
def test_constant_noise_is_the_models_own_for_every_image_and_call(factory):
    torch.manual_seed(0)
    g = noisy(factory()).eval()
    z = torch.randn(3, 512)
    with torch.no_grad():
        image = g(z, noise="const")
        torch.testing.assert_close(g(z, noise="const"), image, rtol=0, atol=0)
        torch.testing.assert_close(g(z, noise=g.constant_noise()), image, rtol=0, atol=0)
        # One noise for the whole batch: each image is the one it would be alone.
        torch.testing.assert_close(g(z[1:2], noise="const")[0], image[1], rtol=1e-4, atol=1e-4)
        assert not torch.allclose(g(z, noise="random"), image)
    noise = g.constant_noise()
    assert [tuple(n.shape) for n in noise] == [(1,) + tuple(shape[1:]) for shape in g.noise_shapes(1)]
    # In the state dict under rosinality's names, and the same for every model of this architecture:
    # drawn from a seed of its own, not from the RNG that drew the weights.
    state = g.state_dict()
    assert all(torch.equal(state[f"noises.noise_{i}"], n) for i, n in enumerate(noise))
    torch.manual_seed(1)
    again = factory()
    assert all(torch.equal(a, b) for a, b in zip(again.constant_noise(), noise))
    assert not torch.equal(next(again.parameters()), next(g.parameters()))


@pytest.mark.parametrize("factory", GENERATORS, ids=GENERATOR_IDS)
def test_the_constant_noise_loads_with_the_weights_and_state_dicts_without_it_keep_the_models(factory):
    torch.manual_seed(0)
    source = noisy(factory()).eval()
    for buffer in source.constant_noise():
        buffer.normal_()  # as a converted network's noise
    target = factory().eval()
    target.load_state_dict(source.state_dict())
    z = torch.randn(2, 512)
    with torch.no_grad():
        torch.testing.assert_close(target(z, noise="const"), source(z, noise="const"), rtol=0, atol=0)
    # A checkpoint from before the constant noise (or an official PixelFolder one) has no noise keys.
    fresh = factory()
    without = official_state(source.state_dict())
    assert len(without) < len(source.state_dict())
    kept = [n.clone() for n in fresh.constant_noise()]
    fresh.load_state_dict(without)
    assert all(torch.equal(a, b) for a, b in zip(fresh.constant_noise(), kept))
    assert torch.equal(next(fresh.parameters()), next(source.parameters()))


def test_the_constant_noise_follows_the_models_device_dtype_and_an_unknown_mode_is_refused():
    g = models.StyleGAN2Generator(16, width=0.125).to(torch.bfloat16)
    assert all(n.dtype == torch.bfloat16 for n in g.constant_noise())
    assert torch.isfinite(g(torch.randn(2, 512, dtype=torch.bfloat16), noise="const")).all()
    with torch.device("meta"):
        assert all(n.is_meta for n in models.CIPS(16, width=0.125).constant_noise())
    with pytest.raises(ValueError, match="'noise' must be one of random, const"):
        g(torch.randn(1, 512, dtype=torch.bfloat16), noise="fixed")
    inr = models.INRGAN(16, width=0.125)
    assert inr.constant_noise() == [] and inr(torch.randn(1, 512), noise="const").shape == (1, 3, 16, 16)


@pytest.mark.parametrize("variant", ["PixelFolder", "w/o coordinate embeddings", "w/o multi-stage connection"])
def test_positional_branch_once_per_call_gives_the_official_images(variant):
    torch.manual_seed(0)
    fast = models.PixelFolder.variant(variant, size=64, width=0.125)
    official = models.PixelFolder.variant(variant, size=64, width=0.125, official_data_flow=True)
    official.load_state_dict(fast.state_dict())
    z = torch.randn(3, 512)
    noise = fast.make_noise(3)
    positional_batches = {}
    for name, model in (("fast", fast), ("official", official)):
        model.posfolders[0].conv1.register_forward_pre_hook(
            lambda module, args, name=name: positional_batches.__setitem__(name, args[0].shape[0]))
    torch.testing.assert_close(fast(z, noise=noise), official(z, noise=noise), rtol=1e-5, atol=1e-5)
    assert positional_batches == {"fast": 1, "official": 3}


def test_style_mixing_switches_styles_at_the_crossover():
    torch.manual_seed(0)
    g = models.PixelFolder(64, width=0.125)
    z1, z2 = torch.randn(1, 512), torch.randn(1, 512)
    latent = g.latents([z1, z2], inject_index=3)
    w1, w2 = g.style(z1), g.style(z2)
    assert torch.equal(latent[0, :3], w1.expand(3, -1)) and torch.equal(latent[0, 3:], w2.expand(g.n_latent - 3, -1))
    noise = g.make_noise(1)
    mixed = g([z1, z2], inject_index=3, noise=noise)
    assert torch.equal(mixed, g.synthesis(latent, noise)[0])
    assert not torch.equal(g([z1, z2], inject_index=3, noise=noise), g(z1, noise=noise))


def test_cips_rejects_style_mixing():
    g = models.CIPS(16, width=0.125)
    with pytest.raises(ValueError, match="^CIPS takes one style vector for every layer: style mixing"):
        g([torch.randn(1, 512), torch.randn(1, 512)])


def test_truncation_and_the_random_crossover_follow_stylegan2():
    torch.manual_seed(0)
    g = models.PixelFolder(64, width=0.03, style_dim=32, n_mlp=2)
    z1, z2 = torch.randn(1, 32), torch.randn(1, 32)
    w1, w2, mean = g.style(z1), g.style(z2), g.mean_latent(64)
    # w' = mean + psi (w - mean), for every layer.
    truncated = g.latents(z1, truncation=0.7, truncation_latent=mean)
    torch.testing.assert_close(truncated, (mean + 0.7 * (w1 - mean))[:, None].expand(-1, g.n_latent, -1))
    # Without an index, the crossover is uniform over 1 .. n_latent - 1: both codes always take part.
    crossovers = set()
    for _ in range(200):
        latent = g.latents([z1, z2])
        crossover = int(sum(torch.equal(row, w1[0]) for row in latent[0]))
        assert torch.equal(latent[0, crossover:], w2.expand(g.n_latent - crossover, -1))
        crossovers.add(crossover)
    assert crossovers == set(range(1, g.n_latent))


def test_bad_generator_inputs_are_clear_errors():
    g = models.PixelFolder(64, width=0.125)
    with pytest.raises(ValueError, match=r"^PixelFolder: argument 'z' must be of shape \(B, 512\), got \(2, 10\)"):
        g(torch.randn(2, 10))
    with pytest.raises(ValueError, match=r"^PixelFolder: argument 'z' must be a tensor or a list of two \(style "
                                         r"mixing\), got a list of 3$"):
        g([torch.randn(2, 512)] * 3)
    with pytest.raises(ValueError, match="^PixelFolder: argument 'noise' must be a list of 8 tensors"):
        g(torch.randn(2, 512), noise=g.make_noise(2)[:3])
    bad = g.make_noise(2)
    bad[1] = torch.randn(2, 1, 5, 5)
    with pytest.raises(ValueError, match=r"^PixelFolder: argument 'noise\[1\]' must be of shape \(2, 1, 8, 8\)"):
        g(torch.randn(2, 512), noise=bad)
    with pytest.raises(ValueError, match="PixelFolder: argument 'size' must be a power of two >= 16, got 100"):
        models.PixelFolder(100)
    with pytest.raises(ValueError, match="unknown variant 'bigger'; expected one of PixelFolder, Fold\\+DeConv, "
                                         "Down-Sampling\\+DeConv, w/o coordinate embeddings, w/o multi-stage connection$"):
        models.PixelFolder.variant("bigger")


def test_multistage_connection_off_feeds_zeros():
    torch.manual_seed(0)
    g = models.PixelFolder(64, width=0.125, multistage_connection=False)
    z, noise = torch.randn(1, 512), g.make_noise(1)
    merged_inputs = []
    g.posfolders[1].conv_merge.register_forward_pre_hook(lambda module, args: merged_inputs.append(args[0]))
    g(z, noise=noise)
    half = merged_inputs[0].shape[1] // 2
    assert merged_inputs[0][:, half:].abs().sum() == 0 and merged_inputs[0][:, :half].abs().sum() > 0


def test_discriminator_shapes_and_r1_double_backward():
    torch.manual_seed(0)
    d = models.Discriminator(32, width=0.125).double()
    images = torch.randn(4, 3, 32, 32, dtype=torch.float64, requires_grad=True)
    logits = d(images)
    assert logits.shape == (4, 1)
    grad, = torch.autograd.grad(logits.sum(), images, create_graph=True)
    grad.square().sum().backward()
    # The logit's bias does not change the gradient with respect to the image.
    assert [n for n, p in d.named_parameters() if p.grad is None] == ["final_linear.1.bias"]
    # Each wrong dimension alone is refused: rank, channels, height, width.
    for shape in ((1, 3, 1, 32, 32), (4, 4, 32, 32), (4, 3, 16, 32), (4, 3, 32, 16), (4, 3, 16, 16)):
        with pytest.raises(ValueError, match=r"must be of shape \(B, 3, 32, 32\)"):
            d(torch.randn(shape, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"the batch \(6\) must be divisible by the minibatch-stddev group \(4\)"):
        d(torch.randn(6, 3, 32, 32, dtype=torch.float64))


@pytest.mark.slow
def test_fvcore_gmacs_of_the_paper_generators():
    torch.manual_seed(0)
    assert round(count_gmacs(models.PixelFolder()), 2) == 23.75
    stylegan2 = models.StyleGAN2Generator()
    assert round(count_gmacs(stylegan2), 2) == 45.37
    assert round(count_gmacs(stylegan2, convention="paper"), 2) == 83.74


@pytest.mark.slow
def test_paper_convention_of_the_ablations():
    assert round(count_gmacs(models.PixelFolder(), convention="paper"), 2) == 23.74
    assert round(count_gmacs(models.PixelFolder.variant("Down-Sampling+DeConv"), convention="paper"), 2) == 91.58


@pytest.mark.slow
def test_models_run_under_bfloat16_autocast():
    torch.manual_seed(0)
    g, d = models.PixelFolder(64, width=0.125), models.Discriminator(64, width=0.125)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        images = g(torch.randn(4, 512))
        logits = d(images)
    assert images.dtype == torch.bfloat16 and torch.isfinite(logits.float()).all()
    logits.float().sum().backward()
    assert all(p.grad is not None for p in d.parameters())


@pytest.mark.parametrize("factory, minimum", [(models.PixelFolder, 16), (models.StyleGAN2Generator, 8),
                                              (models.CIPS, 4), (models.INRGAN, 8), (models.Discriminator, 8)])
def test_sizes_that_are_not_powers_of_two_or_too_small_are_refused(factory, minimum):
    for size in (minimum // 2, 3 * minimum, 0):
        with pytest.raises(ValueError, match=f"{factory.__name__}: argument 'size' must be a power of two >= "
                                             f"{minimum}, got {size}"):
            factory(size)


def test_log2_size_takes_powers_of_two_from_the_minimum_on():
    log2_size = models.layers.log2_size
    assert [log2_size("M", size, 8) for size in (8, 16, 256, 1024)] == [3, 4, 8, 10]
    assert log2_size("M", 1, 1) == 0 and log2_size("M", 2, 2) == 1
    for size, minimum in ((4, 8), (24, 8), (0, 0), (-8, 0), (2.0, 0), (0.25, 0), ("256", 8)):
        with pytest.raises(ValueError, match=f"^M: argument 'size' must be a power of two >= {minimum}, got {size}$"):
            log2_size("M", size, minimum)


# StyleGAN2's channels per resolution (config f: channel_multiplier 2), 512 at most.
STYLEGAN2_CHANNELS = {4: 512, 8: 512, 16: 512, 32: 512, 64: 512, 128: 256, 256: 128, 512: 64, 1024: 32}


def test_channel_table_is_stylegan2s_scaled_to_multiples_of_16():
    assert models.layers.channel_table() == models.layers.channel_table(2, 1.0) == STYLEGAN2_CHANNELS
    assert models.layers.channel_table(1) == {4: 512, 8: 512, 16: 512, 32: 512, 64: 256, 128: 128, 256: 64,
                                              512: 32, 1024: 16}
    # Each entry c * width rounded to the nearest multiple of 16, and at least 16: at 0.1716, 512 x 0.1716
    # = 87.9 -> 80 (513 would give 88.0 -> 96), 256 x 0.1716 = 43.9 -> 48.
    assert models.layers.channel_table(2, 0.1716) == {4: 80, 8: 80, 16: 80, 32: 80, 64: 80, 128: 48, 256: 16,
                                                      512: 16, 1024: 16}
    assert models.layers.channel_table(4, 0.5) == {4: 256, 8: 256, 16: 256, 32: 256, 64: 512, 128: 256, 256: 128,
                                                   512: 64, 1024: 32}
    # Widths at which one entry lands just below a rounding boundary, so that one more channel in the
    # table (c + 2 for 128 x 2 at 0.0935: 258 x 0.0935 = 24.1 -> 32, not 16) would show.
    assert models.layers.channel_table(2, 0.0935) == {**dict.fromkeys((4, 8, 16, 32, 64), 48), 128: 16, 256: 16,
                                                      512: 16, 1024: 16}
    assert models.layers.channel_table(2, 0.187) == {**dict.fromkeys((4, 8, 16, 32, 64), 96), 128: 48, 256: 16,
                                                     512: 16, 1024: 16}
    assert models.layers.channel_table(2, 0.37) == {**dict.fromkeys((4, 8, 16, 32, 64), 192), 128: 96, 256: 48,
                                                    512: 16, 1024: 16}
    assert models.layers.channel_table(2, 0.74) == {**dict.fromkeys((4, 8, 16, 32, 64), 384), 128: 192, 256: 96,
                                                    512: 48, 1024: 16}
