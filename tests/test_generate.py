"""training.generate (checkpoints, seeds, interpolation, stages, the CLI) and training.images."""
import numpy as np
import pytest
import torch
from PIL import Image

import models
from helpers import noisy, our_checkpoint
from training import generate
from training.images import from_uint8, read_image, save_grid, save_image, to_uint8


def tiny_pixelfolder(size=16):
    torch.manual_seed(0)
    return models.PixelFolder(size, width=0.125).eval()


def png(path):
    return np.asarray(Image.open(path))


def test_parse_seeds():
    assert generate.parse_seeds("0-3") == [0, 1, 2, 3]
    assert generate.parse_seeds("0,3,7") == [0, 3, 7]
    assert generate.parse_seeds("5, 1-2,9") == [5, 1, 2, 9]


def test_save_image_and_grid_layout(tmp_path):
    # Six flat-coloured 4x5 tiles, 4 to a row, 1 pixel of padding.
    levels = torch.linspace(-1, 1, 6)
    images = levels[:, None, None, None].expand(6, 3, 4, 5)
    save_grid(images, tmp_path / "grid.png", nrow=4, padding=1)
    grid = png(tmp_path / "grid.png")
    assert grid.shape == (2 * 5 + 1, 4 * 6 + 1, 3)
    expected = to_uint8(levels[:, None, None, None]).flatten().numpy()
    for index in range(6):
        row, column = divmod(index, 4)
        tile = grid[1 + row * 5:1 + row * 5 + 4, 1 + column * 6:1 + column * 6 + 5]
        assert (tile == expected[index]).all()
    assert (grid[6:, 13:] == 0).all()  # the two empty slots of the last row
    save_image(images[5], tmp_path / "one.png")
    assert (png(tmp_path / "one.png") == 255).all()


def test_uint8_round_trip_clips_and_rounds():
    pixels = to_uint8(torch.tensor([-3.0, -1.0, 0.0, 0.999, 5.0]).view(1, 5, 1, 1))
    assert pixels.flatten().tolist() == [0, 0, 128, 255, 255]
    assert torch.equal(to_uint8(from_uint8(pixels)), pixels)


def test_read_image_crops_to_centre_square_and_resizes(tmp_path):
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, 10:30] = 200  # the centre square
    Image.fromarray(pixels).save(tmp_path / "wide.png")
    image = read_image(tmp_path / "wide.png", 8)
    assert image.shape == (3, 8, 8) and image.dtype == torch.uint8
    assert (image == 200).all()


def test_same_seed_same_image_whatever_the_batch():
    generator = tiny_pixelfolder()
    (batch_of_three, _), = generate.sample_batches(generator, [4, 5, 6], batch_size=3)
    singles = torch.cat([images for images, _ in generate.sample_batches(generator, [4, 5, 6], batch_size=1)])
    torch.testing.assert_close(batch_of_three, singles, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(batch_of_three[0], batch_of_three[1])


def test_truncation_pulls_images_towards_the_mean_latent():
    generator = tiny_pixelfolder()
    (full, _), = generate.sample_batches(generator, [1, 2], batch_size=2)
    (none, _), = generate.sample_batches(generator, [1, 2], batch_size=2, truncation=0.0)
    # psi = 0: every image gets the mean w; only the noise still differs between them.
    assert (none[0] - none[1]).abs().mean() < (full[0] - full[1]).abs().mean()


def test_slerp_endpoints_and_norm():
    a, b = torch.tensor([[3.0, 0.0]]), torch.tensor([[0.0, 3.0]])
    path = generate.slerp(a, b, torch.linspace(0, 1, 5)[:, None])
    torch.testing.assert_close(path[0], a[0])
    torch.testing.assert_close(path[-1], b[0])
    torch.testing.assert_close(path.norm(dim=1), torch.full((5,), 3.0))
    torch.testing.assert_close(generate.slerp(a, a, torch.tensor([[0.5]])), a)


def test_interpolation_strip_starts_at_seed_a():
    generator = tiny_pixelfolder()
    strip = generate.interpolation_strip(generator, 3, 8, steps=4, batch_size=3)
    assert strip.shape == (4, 3, 16, 16)
    (image_a, _), = generate.sample_batches(generator, [3], batch_size=1)
    torch.testing.assert_close(strip[0], image_a[0], rtol=1e-4, atol=1e-5)
    linear = generate.interpolation_strip(generator, 3, 8, steps=4, mode="lerp")
    torch.testing.assert_close(linear[[0, -1]], strip[[0, -1]], rtol=1e-4, atol=1e-5)


def test_stage_tiles_upsample_every_stage_to_the_final_size():
    generator = tiny_pixelfolder(64)  # two stages: 16 and 64 pixels
    (images, stages), = generate.sample_batches(generator, [0, 1], batch_size=2, return_stages=True)
    tiles = generate.stage_tiles(stages, 64)
    assert tiles.shape == (4, 3, 64, 64)
    torch.testing.assert_close(tiles[1::2], images)
    torch.testing.assert_close(tiles[2, :, ::4, ::4], stages[0][1])
    torch.testing.assert_close(tiles[2, :, 3::4, 3::4], stages[0][1])


def test_load_generator_reads_our_checkpoint(tmp_path):
    path, g_ema = our_checkpoint(tmp_path)
    loaded = generate.load_generator(path)
    assert type(loaded) is models.PixelFolder and not loaded.training
    z = torch.randn(2, g_ema.style_dim)
    noise = g_ema.make_noise(2)
    with torch.no_grad():
        torch.testing.assert_close(loaded(z, noise=noise), g_ema(z, noise=noise))


@pytest.mark.slow
def test_load_generator_builds_a_variant_from_its_config(tmp_path):
    path, _ = our_checkpoint(tmp_path, variant="Fold+DeConv")
    assert generate.load_generator(path).upsampler == "deconv"


def test_load_generator_reads_official_checkpoints(tmp_path):
    torch.manual_seed(0)
    g, g_ema = models.PixelFolder(16), models.PixelFolder(16)
    torch.save({"g": g.state_dict(), "g_ema": g_ema.state_dict(), "d": models.Discriminator(16).state_dict()},
               tmp_path / "official.pt")
    loaded = generate.load_generator(tmp_path / "official.pt", size=16)
    assert not loaded.training
    torch.testing.assert_close(loaded.state_dict(), g_ema.state_dict())


@pytest.mark.slow
def test_cli_writes_seeds_grid_stages_and_strip_deterministically(tmp_path, capsys):
    path, _ = our_checkpoint(tmp_path / "run", size=64)
    for run in ("first", "second"):
        generate.main([path, "--outdir", str(tmp_path / run), "--seeds", "0-2,7",
                       "--batch-size", "3", "--stages", "--interpolate", "0", "7", "--steps", "5"])
    out = tmp_path / "first"
    assert sorted(p.name for p in out.iterdir()) == ["grid.png", "interpolation-0000-0007-slerp.png", "seed0000.png",
                                                     "seed0001.png", "seed0002.png", "seed0007.png", "stages.png"]
    assert png(out / "seed0007.png").shape == (64, 64, 3)
    assert png(out / "grid.png").shape == (128, 128, 3)  # 2 x 2
    assert png(out / "stages.png").shape == (4 * 64, 2 * 64, 3)  # a row of two stages per seed
    assert png(out / "interpolation-0000-0007-slerp.png").shape == (64, 5 * 64, 3)
    np.testing.assert_array_equal(png(out / "grid.png")[:64, :64], png(out / "seed0000.png"))
    np.testing.assert_array_equal(png(out / "stages.png")[3 * 64:, 64:], png(out / "seed0007.png"))
    for path in out.iterdir():
        np.testing.assert_array_equal(png(path), png(tmp_path / "second" / path.name))
    assert "grid.png" in capsys.readouterr().out


def test_cli_interpolation_alone_writes_only_the_strip(tmp_path):
    path, _ = our_checkpoint(tmp_path / "run")
    generate.main([path, "--outdir", str(tmp_path), "--interpolate", "1", "2", "--steps", "3",
                   "--interpolation", "lerp", "--truncation", "0.7"])
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["interpolation-0001-0002-lerp.png"]


def test_constant_noise_takes_only_z_from_the_seed(tmp_path):
    generator = noisy(tiny_pixelfolder())
    (images, _), = generate.sample_batches(generator, [3, 4], batch_size=2, noise_mode="const")
    z, _ = generate.seed_inputs(generator, [3, 4])
    with torch.no_grad():
        torch.testing.assert_close(images, generator(z, noise="const"))
    (random, _), = generate.sample_batches(generator, [3, 4], batch_size=2)
    assert not torch.allclose(images, random)
    # psi = 0: every image gets the mean w; with the same noise for all, they are the same image.
    (collapsed, _), = generate.sample_batches(generator, [3, 4], batch_size=2, truncation=0.0, noise_mode="const")
    torch.testing.assert_close(collapsed[0], collapsed[1])
    strip = generate.interpolation_strip(generator, 3, 4, steps=3, noise_mode="const")
    torch.testing.assert_close(strip[[0, -1]], images, rtol=1e-4, atol=1e-5)


def test_cli_constant_noise(tmp_path):
    path, _ = our_checkpoint(tmp_path / "run")
    checkpoint = torch.load(path, weights_only=True)
    for key in checkpoint["g_ema"]:
        if key.endswith("noise.weight"):
            checkpoint["g_ema"][key].fill_(0.5)  # noise that counts
    torch.save(checkpoint, path)
    g_ema = generate.load_generator(path)
    for noise in ("const", "random"):
        generate.main([path, "--outdir", str(tmp_path / noise), "--seeds", "5", "--noise", noise])
    z, _ = generate.seed_inputs(g_ema, [5])
    with torch.no_grad():
        expected = to_uint8(g_ema(z, noise="const"))[0].permute(1, 2, 0).numpy().astype(int)
    assert np.abs(png(tmp_path / "const" / "seed0005.png").astype(int) - expected).max() <= 1
    assert np.abs(png(tmp_path / "random" / "seed0005.png").astype(int) - expected).max() > 1
