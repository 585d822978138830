"""The generators and the discriminator: exact sizes, shapes, the call options, and GMACs."""
import pytest
import torch

import models
from benchmarks.complexity import count_gmacs, count_params

# Exact counts, from the official implementation at 256 (../shared/reference/baselines.md).
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


@pytest.mark.parametrize("factory", [
    lambda: models.PixelFolder(64, width=0.125),
    lambda: models.PixelFolder.variant("Fold+DeConv", size=64, width=0.125),
    lambda: models.PixelFolder.variant("Down-Sampling+DeConv", size=64, width=0.125),
    lambda: models.PixelFolder.variant("w/o coordinate embeddings", size=64, width=0.125),
    lambda: models.PixelFolder.variant("w/o multi-stage connection", size=64, width=0.125),
    lambda: models.StyleGAN2Generator(32, width=0.125),
    lambda: models.CIPS(16, width=0.125),
], ids=["PixelFolder", "Fold+DeConv", "Down-Sampling+DeConv", "no-coord", "no-multistage", "StyleGAN2", "CIPS"])
def test_generator_call_options(factory):
    torch.manual_seed(0)
    g = factory()
    z = torch.randn(2, 512)
    noise = g.make_noise(2)
    image = g(z, noise=noise)
    assert image.shape == (2, 3, g.size, g.size) and torch.isfinite(image).all()
    # Given noise makes the output deterministic; fresh noise changes it once noise strength is non-zero.
    assert torch.equal(g(z, noise=noise), image)
    for module in g.modules():
        if isinstance(module, models.layers.NoiseInjection):
            module.weight.data.fill_(0.5)
    assert not torch.equal(g(z), g(z))
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


@pytest.mark.parametrize("variant", ["PixelFolder", "w/o coordinate embeddings", "w/o multi-stage connection"])
def test_positional_branch_once_per_call_gives_the_official_images(variant):
    torch.manual_seed(0)
    fast = models.PixelFolder.variant(variant, size=64, width=0.125)
    official = models.PixelFolder.variant(variant, size=64, width=0.125, official_data_flow=True)
    official.load_state_dict(fast.state_dict())
    z = torch.randn(3, 512)
    noise = fast.make_noise(3)
    torch.testing.assert_close(fast(z, noise=noise), official(z, noise=noise), rtol=1e-5, atol=1e-5)


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
    with pytest.raises(ValueError, match="style mixing"):
        g([torch.randn(1, 512), torch.randn(1, 512)])


def test_bad_generator_inputs_are_clear_errors():
    g = models.PixelFolder(64, width=0.125)
    with pytest.raises(ValueError, match=r"argument 'z' must be of shape \(B, 512\), got \(2, 10\)"):
        g(torch.randn(2, 10))
    with pytest.raises(ValueError, match="argument 'noise' must be a list of 8 tensors"):
        g(torch.randn(2, 512), noise=g.make_noise(2)[:3])
    bad = g.make_noise(2)
    bad[1] = torch.randn(2, 1, 5, 5)
    with pytest.raises(ValueError, match=r"argument 'noise\[1\]' must be of shape \(2, 1, 8, 8\)"):
        g(torch.randn(2, 512), noise=bad)
    with pytest.raises(ValueError, match="PixelFolder: argument 'size' must be a power of two >= 16, got 100"):
        models.PixelFolder(100)
    with pytest.raises(ValueError, match="unknown variant"):
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
    with pytest.raises(ValueError, match=r"must be of shape \(B, 3, 32, 32\)"):
        d(torch.randn(4, 3, 16, 16, dtype=torch.float64))


def test_fvcore_gmacs_of_the_paper_generators():
    torch.manual_seed(0)
    assert round(count_gmacs(models.PixelFolder()), 2) == 23.75
    stylegan2 = models.StyleGAN2Generator()
    assert round(count_gmacs(stylegan2), 2) == 45.37
    assert round(count_gmacs(stylegan2, convention="paper"), 2) == 83.74


def test_paper_convention_of_the_ablations():
    assert round(count_gmacs(models.PixelFolder(), convention="paper"), 2) == 23.74
    assert round(count_gmacs(models.PixelFolder.variant("Down-Sampling+DeConv"), convention="paper"), 2) == 91.58


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
