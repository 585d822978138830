"""Official PixelFolder checkpoints: keys and shapes, loading, errors, and the same images as the
official data flow (written here from the design, directly on the state dict)."""
import math
import os

import pytest
import torch
import torch.nn.functional as F

import models
from helpers import blur, equal_conv, lrelu, official_state

KEY_LIST = os.path.join(os.path.dirname(__file__), "data", "official_pixelfolder256_state_dict.txt")


def official_shapes():
    """{"g": {key: shape}, "d": {...}} from the official implementation's key list."""
    shapes, current = {"g": {}, "d": {}}, None
    for line in open(KEY_LIST):
        if line.startswith("#"):
            current = "g" if "generator" in line else "d" if "Discriminator" in line else current
            continue
        key, shape = line.split(" ", 1)
        shapes[current][key] = tuple(int(n) for n in shape.strip("()\n ").split(",") if n.strip())
    return shapes


def test_state_dicts_have_the_official_keys_and_shapes():
    shapes = official_shapes()
    with torch.device("meta"):
        ours = {"g": models.PixelFolder(256).state_dict(), "d": models.Discriminator(256).state_dict()}
    # The generator also keeps its constant noise (G(z, noise="const")), which official checkpoints lack.
    ours["g"] = official_state(ours["g"])
    for part in ("g", "d"):
        assert {k: tuple(v.shape) for k, v in ours[part].items()} == shapes[part]


def random_checkpoint(size, seed=0):
    torch.manual_seed(seed)
    g, g_ema, d = models.PixelFolder(size), models.PixelFolder(size), models.Discriminator(size)
    for module in g_ema.modules():  # non-zero noise strengths, so noise matters
        if isinstance(module, models.layers.NoiseInjection):
            module.weight.data.normal_()
    return {"g": official_state(g.state_dict()), "g_ema": official_state(g_ema.state_dict()), "d": d.state_dict(),
            "g_optim": {}, "d_optim": {}}


def test_load_official_round_trip(tmp_path):
    checkpoint = random_checkpoint(64)
    checkpoint["d"] = {"module." + k: v for k, v in checkpoint["d"].items()}  # saved from DDP
    path = tmp_path / "official.pt"
    torch.save(checkpoint, path)
    g, g_ema, d = models.load_official(str(path), size=64)
    assert not g_ema.training
    for model, part in ((g, "g"), (g_ema, "g_ema")):
        loaded = model.state_dict()
        assert set(loaded) - set(checkpoint[part]) == {f"noises.noise_{i}" for i in range(len(model.noise_shapes(1)))}
        for key, value in checkpoint[part].items():
            assert torch.equal(value, loaded[key])
    assert torch.equal(d.state_dict()["final_linear.1.weight"], checkpoint["d"]["module.final_linear.1.weight"])


# ----------------------------------------------------------------- the official data flow, by hand
# F.* calls on the state dict, written from the design (docs/design.md, section 4); nothing from models/.
# (helpers.py holds the building blocks the discriminator's oracle shares.)

def fold_by_slices(x):
    return torch.cat([x[:, :, dy::2, dx::2] for dy in range(2) for dx in range(2)], dim=1)


def unfold_by_slices(x):
    c = x.shape[1] // 4
    out = x.new_zeros(x.shape[0], c, 2 * x.shape[2], 2 * x.shape[3])
    for dy in range(2):
        for dx in range(2):
            out[:, :, dy::2, dx::2] = x[:, (dy * 2 + dx) * c:(dy * 2 + dx + 1) * c]
    return out


def upsample_rgb(x):
    """x2 up-sampling: zeros between pixels, pad (2, 1), the normalised [1, 3, 3, 1] kernel times 4."""
    up = x.new_zeros(x.shape[0], x.shape[1], 2 * x.shape[2], 2 * x.shape[3])
    up[:, :, ::2, ::2] = x
    return blur(up, (2, 1), gain=4)


def official_mapping(sd, z):
    """w: pixel norm, then every ``style.i`` linear (lr_mul 0.01) with bias + leaky ReLU."""
    w = z * torch.rsqrt(z.square().mean(1, keepdim=True) + 1e-8)
    i = 1
    while f"style.{i}.weight" in sd:
        weight = sd[f"style.{i}.weight"]
        w = lrelu(F.linear(w, weight * 0.01 / math.sqrt(weight.shape[1])), sd[f"style.{i}.bias"] * 0.01)
        i += 1
    return w


def official_synthesis(sd, latent, noises, size):
    """The image for per-layer styles ``latent`` (B, 13 at 256, style_dim): the k-th StyledConv takes
    w_k, the ToRGB after fold f of stage i takes w_{4i + 2f + 2}."""
    def modconv(x, prefix, demodulate, w):
        weight = sd[prefix + ".weight"][0]
        c_in, k = weight.shape[1], weight.shape[-1]
        styles = F.linear(w, sd[prefix + ".modulation.weight"] / math.sqrt(w.shape[1]),
                          sd[prefix + ".modulation.bias"])
        out = []
        for b in range(x.shape[0]):
            wb = weight / math.sqrt(c_in * k * k) * styles[b].view(1, -1, 1, 1)
            if demodulate:
                wb = wb * torch.rsqrt(wb.square().sum((1, 2, 3), keepdim=True) + 1e-8)
            out.append(F.conv2d(x[b:b + 1], wb, padding=k // 2))
        return torch.cat(out)

    def styled(x, index, noise):
        out = modconv(x, f"convs.{index}.conv", True, latent[:, index]) + sd[f"convs.{index}.noise.weight"] * noise
        return lrelu(out, sd[f"convs.{index}.activate.bias"])

    def conv_layer(x, prefix):
        return lrelu(equal_conv(x, sd[prefix + ".0.weight"]), sd[prefix + ".1.bias"])

    batch, stages = latent.shape[0], int(math.log2(size)) // 2 - 1
    out = skip = None
    for i in range(stages):
        res = size // 4 ** (stages - 1 - i)
        weight, bias = sd[f"lffs.{i}.ffm.conv.weight"], sd[f"lffs.{i}.ffm.conv.bias"]
        xs = torch.linspace(-1, 1, res, dtype=latent.dtype).view(1, 1, 1, res).expand(batch, 1, res, res)
        ys = torch.linspace(-1, 1, res, dtype=latent.dtype).view(1, 1, res, 1).expand(batch, 1, res, res)
        emb = torch.sin(F.conv2d(torch.cat([xs, ys], 1), weight, bias))
        if i == 0:
            emb = conv_layer(torch.cat([emb, sd["input.input"].expand(batch, -1, -1, -1)], 1), "posfolders.0.conv0")
        pos = fold_by_slices(fold_by_slices(conv_layer(emb, f"posfolders.{i}.conv1")))
        out = pos if i == 0 else conv_layer(torch.cat([pos, out], 1), f"posfolders.{i}.conv_merge")
        for f in range(2):
            k = 4 * i + 2 * f
            out = styled(unfold_by_slices(styled(out, k, noises[k])), k + 1, noises[k + 1])
            rgb = modconv(out, f"to_rgbs.{2 * i + f}.conv", False, latent[:, 4 * i + 2 * f + 2])
            rgb = rgb + sd[f"to_rgbs.{2 * i + f}.bias"]
            skip = rgb if skip is None else rgb + upsample_rgb(skip)
    return skip


def official_forward(sd, z, noises, size):
    """One w for every layer (no style mixing)."""
    n_latent = 4 * (int(math.log2(size)) // 2 - 1) + 1
    return official_synthesis(sd, official_mapping(sd, z)[:, None].expand(-1, n_latent, -1), noises, size)


@pytest.mark.slow
def test_loaded_generator_gives_the_official_images():
    checkpoint = random_checkpoint(64, seed=1)
    _, g_ema, _ = models.load_official(checkpoint, size=64)
    torch.manual_seed(2)
    z = torch.randn(2, 512)
    noise = g_ema.make_noise(2)
    with torch.no_grad():
        ours = g_ema(z, noise=noise)
        official = official_forward(checkpoint["g_ema"], z, noise, 64)
    assert ours.shape == official.shape == (2, 3, 64, 64)
    torch.testing.assert_close(ours, official, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_style_mixing_at_every_crossover_gives_the_official_images():
    # float64, so that one layer given the wrong w shows far above rounding.
    torch.manual_seed(3)
    g = models.PixelFolder(64, width=0.125).double()
    for module in g.modules():
        if isinstance(module, models.layers.NoiseInjection):
            module.weight.data.normal_()
    for layer in list(g.style)[1:]:  # non-zero mapping biases, so that their lr_mul counts
        layer.bias.data.normal_()
    sd = g.state_dict()
    z1, z2 = torch.randn(2, 512, dtype=torch.float64), torch.randn(2, 512, dtype=torch.float64)
    noise = [n.double() for n in g.make_noise(2)]
    w1, w2 = official_mapping(sd, z1), official_mapping(sd, z2)
    assert g.n_latent == 9
    with torch.no_grad():
        for index in range(1, g.n_latent):
            latent = torch.stack([w1 if row < index else w2 for row in range(g.n_latent)], dim=1)
            official = official_synthesis(sd, latent, noise, 64)
            torch.testing.assert_close(g([z1, z2], inject_index=index, noise=noise), official,
                                       rtol=1e-10, atol=1e-10, msg=f"crossover {index}")


def test_mismatched_checkpoint_lists_every_bad_key():
    checkpoint = random_checkpoint(64)
    del checkpoint["g"]["convs.3.noise.weight"], checkpoint["g"]["convs.1.noise.weight"]
    checkpoint["g"]["extra.weight"] = torch.zeros(1)
    checkpoint["g"]["to_rgbs.0.bias"] = torch.zeros(3)
    with pytest.raises(ValueError) as error:
        models.load_official(checkpoint, size=64)
    assert str(error.value) == ("load_official: the checkpoint's 'g' does not fit PixelFolder(size=64)\n"
                                "  missing keys (2): convs.1.noise.weight, convs.3.noise.weight\n"
                                "  unexpected keys (1): extra.weight\n"
                                "  shape mismatches (1): to_rgbs.0.bias: checkpoint (3,), model (1, 3, 1, 1)")


def misshape_to_rgb_bias(state_dict):
    state_dict["to_rgbs.0.bias"] = torch.zeros(3)


def drop_final_bias(state_dict):
    del state_dict["final_linear.1.bias"]


@pytest.mark.parametrize("part, fault, expected", [
    ("g_ema", misshape_to_rgb_bias, "load_official: the checkpoint's 'g_ema' does not fit PixelFolder(size=64)\n"
                                    "  shape mismatches (1): to_rgbs.0.bias: checkpoint (3,), model (1, 3, 1, 1)"),
    ("d", drop_final_bias, "load_official: the checkpoint's 'd' does not fit Discriminator(size=64)\n"
                           "  missing keys (1): final_linear.1.bias")])
def test_a_single_fault_is_reported_with_the_part_it_is_in(part, fault, expected):
    # A shape mismatch alone, with no missing or unexpected key, is reported as well.
    checkpoint = random_checkpoint(64)
    fault(checkpoint[part])
    with pytest.raises(ValueError) as error:
        models.load_official(checkpoint, size=64)
    assert str(error.value) == expected


def test_a_checkpoint_of_g_g_ema_and_d_alone_loads():
    checkpoint = random_checkpoint(64)
    _, g_ema, _ = models.load_official({part: checkpoint[part] for part in ("g", "g_ema", "d")}, size=64)
    assert torch.equal(g_ema.state_dict()["to_rgbs.0.bias"], checkpoint["g_ema"]["to_rgbs.0.bias"])


def test_a_checkpoint_that_is_not_a_dict_is_refused_by_its_type():
    with pytest.raises(ValueError) as error:
        models.load_official(["g", "g_ema", "d"])
    assert str(error.value) == ("load_official: expected an official PixelFolder checkpoint with top-level keys "
                                "'g', 'g_ema' and 'd', got list")


def test_a_checkpoint_of_another_size_does_not_fit_the_default_256():
    with pytest.raises(ValueError, match="does not fit PixelFolder\\(size=256\\)"):
        models.load_official(random_checkpoint(64))


def test_truncated_and_foreign_files_are_clear_errors(tmp_path):
    path = tmp_path / "official.pt"
    torch.save(random_checkpoint(64), path)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match="cannot read .*truncated.pt.* as a PyTorch checkpoint"):
        models.load_official(str(truncated), size=64)
    foreign = tmp_path / "foreign.pt"
    torch.save({"model": {}}, foreign)
    with pytest.raises(ValueError, match="top-level keys 'g', 'g_ema' and 'd', got \\['model'\\]"):
        models.load_official(str(foreign), size=64)


def test_a_missing_file_names_the_exception(tmp_path):
    path = str(tmp_path / "missing.pt")
    with pytest.raises(ValueError) as error:
        models.load_official(path)
    assert str(error.value) == (f"load_official: cannot read {path!r} as a PyTorch checkpoint "
                                f"(FileNotFoundError: [Errno 2] No such file or directory: {path!r})")


class MakesADirectoryWhenUnpickled:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return os.mkdir, (self.path,)


def test_a_file_that_would_run_code_is_refused_unrun(tmp_path):
    # Read with weights_only=True: a pickle that calls a function is refused, and the function never runs.
    marker = str(tmp_path / "code ran")
    path = tmp_path / "official.pt"
    torch.save(MakesADirectoryWhenUnpickled(marker), path)
    with pytest.raises(ValueError, match="cannot read .* as a PyTorch checkpoint \\(UnpicklingError: "):
        models.load_official(str(path))
    assert not os.path.exists(marker)
