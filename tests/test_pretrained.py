"""Pretrained networks in and out (models.pretrained, models.formats, training.convert): NVlabs pickles,
rosinality and CIPS checkpoints, made here in each format; the same images and logits; round trips;
reading that never runs the file's code; every refusal, in one line.

The reference for NVlabs' architecture is models/formats/nvlabs_networks.py (plain F.* calls, written
from the published architecture; it is also the source NVlabs' loader runs from the pickles we
write). Pickles are made here the way NVlabs' persistence writes them, with stand-ins for its
torch_utils.persistence and dnnlib modules."""
import argparse
import copy
import inspect
import math
import os
import pickle
import subprocess
import sys
import types

import numpy as np
import pytest
import torch

import models
import pixelfolder_ops
from helpers import official_state, tiny_config
from models.architecture import build_discriminator, build_generator
from models.formats import FormatError, nvlabs, nvlabs_networks, rosinality
from models.pretrained import read_pretrained
from training import convert, generate
from training.checkpoint import load_networks

STYLE = 32  # style_dim of the test networks


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


def randomized(module, seed=0, noise=0.6, bias=0.3):
    """Non-zero noise strengths and biases (as after training), so that they count."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            if name.endswith(("noise.weight", "noise_strength")):
                parameter.fill_(noise)
            elif name.endswith("bias") and "modulation" not in name and "affine" not in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * bias)
    return module


def stylegan2(size=32, conv_clamp=None, seed=0, **options):
    torch.manual_seed(seed)
    architecture = dict(model="StyleGAN2", size=size, style_dim=STYLE, n_mlp=2, width=0.125, conv_clamp=conv_clamp,
                        **options)
    g = randomized(build_generator(architecture), seed).eval()
    d = randomized(build_discriminator(architecture), seed + 1)
    return architecture, g, d


# ------------------------------------------------------------ our StyleGAN2 is NVlabs' architecture
@pytest.mark.parametrize("backend", [pytest.param("reference", marks=pytest.mark.slow), "cpu"])
def test_our_stylegan2_and_discriminator_compute_nvlabs_architecture_past_the_clamp(backend):
    if pixelfolder_ops.backend._unavailable_reason(backend) is not None:
        pytest.skip(pixelfolder_ops.backend._unavailable_reason(backend))
    architecture, g, d = stylegan2(32, conv_clamp=0.4, mbstd_group=2, mbstd_channels=2)
    nv_g, nv_d = nvlabs.nvlabs_generator(g, architecture), nvlabs.nvlabs_discriminator(d, architecture)
    z = torch.randn(4, STYLE)
    cut = []  # how much of each StyledConv's output reaches the clamp
    hooks = [conv.register_forward_hook(lambda m, a, out: cut.append((out.abs() >= 0.4 - 1e-6).float().mean()))
             for conv in [g.conv1, *g.convs]]
    with torch.no_grad(), pixelfolder_ops.use_backend(backend):
        for psi in (1.0, 0.7):
            assert rel(g(z, noise="const", truncation=psi), nv_g(z, None, psi, noise_mode="const")) < 1e-5
        images = torch.randn(4, 3, 32, 32)
        assert rel(d(images), nv_d(images)) < 1e-5
    for hook in hooks:
        hook.remove()
    assert min(cut) > 0.05  # the clamp is active in every layer
    # The gradients through the clamps (zero where they cut), as R1 takes them.
    images.requires_grad_(True)
    with pixelfolder_ops.use_backend(backend):
        ours, = torch.autograd.grad(d(images).sum(), images)
    theirs, = torch.autograd.grad(nv_d(images).sum(), images)
    assert rel(ours, theirs) < 1e-5


def test_without_a_clamp_the_networks_differ_from_clamped_ones():
    architecture, g, _ = stylegan2(32, conv_clamp=0.4)
    unclamped = copy.deepcopy(architecture)
    unclamped["conv_clamp"] = None
    nv_g = nvlabs.nvlabs_generator(g, unclamped)
    z = torch.randn(2, STYLE)
    with torch.no_grad():
        assert rel(g(z, noise="const"), nv_g(z, None, noise_mode="const")) > 1e-2


def test_nvlabs_channel_rule_and_our_table():
    assert nvlabs.channel_settings({4: 512, 8: 512, 64: 512, 256: 128}, "f") == \
        {"channel_multiplier": 2, "channel_base": None, "channel_max": 512}
    assert nvlabs.channel_settings({4: 512, 64: 256, 256: 64}, "f")["channel_multiplier"] == 1
    settings = nvlabs.channel_settings({4: 256, 16: 256, 32: 128, 64: 64}, "f")
    assert (settings["channel_base"], settings["channel_max"]) == (4096, 256)
    table = models.layers.channel_table(channel_base=4096, channel_max=256)
    assert [table[r] for r in (4, 16, 32, 64, 1024)] == [256, 256, 128, 64, 4]
    with pytest.raises(FormatError, match="follow no channel_base / channel_max rule"):
        nvlabs.channel_settings({4: 256, 8: 100, 16: 256}, "f")


# --------------------------------------------------------------- NVlabs pickles, made as NVlabs does
@pytest.fixture
def nvlabs_modules(monkeypatch):
    """Stand-ins for NVlabs' torch_utils.persistence and dnnlib.util: a persistence function that, as
    NVlabs' does, executes the record's module source and builds the class from it."""
    persistence = types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta):
        module = types.ModuleType(f"_imported_module_{len(sys.modules)}")
        monkeypatch.setitem(sys.modules, module.__name__, module)
        exec(meta["module_src"], module.__dict__)
        obj = module.__dict__[meta["class_name"]].__new__(module.__dict__[meta["class_name"]])
        obj.__setstate__(dict(meta["state"]))
        return obj

    _reconstruct_persistent_obj.__module__ = persistence.__name__
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
    util = types.ModuleType("dnnlib.util")

    class EasyDict(dict):
        pass

    EasyDict.__module__, EasyDict.__qualname__ = util.__name__, "EasyDict"
    util.EasyDict = EasyDict
    for name, module in (("torch_utils", types.ModuleType("torch_utils")), (persistence.__name__, persistence),
                         ("dnnlib", types.ModuleType("dnnlib")), (util.__name__, util)):
        monkeypatch.setitem(sys.modules, name, module)
    return persistence, util


def nvlabs_pickle(path, networks, nvlabs_modules, prefix_source=""):
    """Pickle ``networks`` (nvlabs_networks modules) as NVlabs' persistence does (protocol 3, as its
    Python 3.7 wrote): each module a record {type, version, module_src, class_name, state}; settings as
    EasyDicts, gains as numpy floats. ``prefix_source`` goes before the module source."""
    persistence, util = nvlabs_modules
    source = prefix_source + inspect.getsource(nvlabs_networks)

    def record(module):
        state = dict(module.__dict__)
        state["_init_kwargs"] = util.EasyDict(state["_init_kwargs"])
        state.update({name: np.float64(value) for name, value in state.items() if name.endswith("_gain")})
        meta = dict(type="class", version=6, module_src=source, class_name=type(module).__name__, state=state)
        return persistence._reconstruct_persistent_obj, (meta,)

    with open(path, "wb") as file:
        pickler = pickle.Pickler(file, protocol=3)
        pickler.dispatch_table = {cls: record for cls in vars(nvlabs_networks).values()
                                  if isinstance(cls, type) and issubclass(cls, nvlabs_networks.NetworkModule)}
        pickler.dump(networks)


def nvlabs_snapshot(architecture, g, d):
    g_ema = nvlabs.nvlabs_generator(g, architecture)
    with torch.no_grad():
        g_ema.mapping.w_avg.normal_()
    return {"training_set_kwargs": {"class_name": "training.dataset.ImageFolderDataset", "path": "data.zip",
                                    "resolution": g.size, "use_labels": False},
            "G": copy.deepcopy(g_ema), "D": nvlabs.nvlabs_discriminator(d, architecture), "G_ema": g_ema,
            "augment_pipe": None}


def test_an_nvlabs_pickle_converts_exactly_and_its_code_never_runs(tmp_path, nvlabs_modules):
    architecture, g, d = stylegan2(32, conv_clamp=0.5, mbstd_group=2)
    snapshot = nvlabs_snapshot(architecture, g, d)
    marker = tmp_path / "source-ran"
    path = tmp_path / "network-snapshot.pkl"
    nvlabs_pickle(path, snapshot, nvlabs_modules, prefix_source=f"open({str(marker)!r}, 'w').close()\n")
    pretrained = read_pretrained(path)
    assert not marker.exists()  # the module source the records carry was never run
    assert pretrained.format == "NVlabs pickle" and pretrained.details["path"] == "data.zip"
    assert {k: pretrained.architecture[k] for k in ("model", "size", "n_mlp", "conv_clamp", "mbstd_group")} == \
        {"model": "StyleGAN2", "size": 32, "n_mlp": 2, "conv_clamp": 0.5, "mbstd_group": 2}
    z, images = torch.randn(4, STYLE), torch.randn(4, 3, 32, 32)
    theirs = snapshot["G_ema"]
    with torch.no_grad():
        for psi in (1.0, 0.6):  # truncation around the pickle's own w_avg
            expected = theirs(z, None, psi, noise_mode="const")
            assert rel(pretrained.g_ema(z, noise="const", truncation=psi), expected) < 1e-5
        assert rel(pretrained.d(images), snapshot["D"](images)) < 1e-5
        torch.testing.assert_close(pretrained.g_ema.latent_avg, theirs.mapping.w_avg, rtol=0, atol=0)
        torch.testing.assert_close(pretrained.g_ema.constant_noise()[-1][0, 0], theirs.synthesis.b32.conv1.noise_const,
                                   rtol=0, atol=0)


def test_our_nvlabs_pickles_load_the_way_nvlabs_loads_them_and_round_trip_bitwise(tmp_path, nvlabs_modules):
    architecture, g, d = stylegan2(32, conv_clamp=0.5)
    checkpoint, pickled, again = tmp_path / "ours.pt", tmp_path / "g.pkl", tmp_path / "again.pt"
    torch.save({"g_ema": g.state_dict(), "d": d.state_dict()}, tmp_path / "unused.pt")
    pretrained = models.pretrained.Pretrained("test", architecture, g=g, g_ema=g, d=d)
    convert.write_file(convert.our_checkpoint(pretrained, tmp_path / "unused.pt")[0], checkpoint)
    convert.main([str(checkpoint), "--out", str(pickled), "--to", "nvlabs"])
    with open(pickled, "rb") as file:  # as legacy.load_network_pkl: a plain unpickler, running the source
        loaded = pickle.load(file)
    assert {"G", "D", "G_ema", "augment_pipe", "training_set_kwargs"} <= set(loaded)
    assert isinstance(loaded["G_ema"], torch.nn.Module) and loaded["G_ema"].num_ws == g.n_latent
    z = torch.randn(3, STYLE)
    with torch.no_grad():
        assert rel(loaded["G_ema"](z, None, noise_mode="const"), g(z, noise="const")) < 1e-5
        assert rel(loaded["G_ema"].synthesis(loaded["G_ema"].mapping(z, None), noise_mode="const"),
                   g(z, noise="const")) < 1e-5
        images = torch.randn(4, 3, 32, 32)
        assert rel(loaded["D"](images, None), d(images)) < 1e-5
    # NVlabs' tools rebuild a network from its init_kwargs (legacy.load_network_pkl's force_fp16).
    rebuilt = type(loaded["G_ema"])(**{**loaded["G_ema"]._init_kwargs, "num_fp16_res": 4})
    assert set(dict(rebuilt.named_parameters())) == set(dict(loaded["G_ema"].named_parameters()))
    convert.main([str(pickled), "--out", str(again)])
    a, b = torch.load(checkpoint, weights_only=True), torch.load(again, weights_only=True)
    for name in ("g", "g_ema", "d"):
        assert all(torch.equal(a[name][k], b[name][k]) for k in a[name])
        # NVlabs' networks always have a w_avg: ours gets the average its truncation used (mean_latent()).
        assert set(b[name]) - set(a[name]) == ({"latent_avg"} if name != "d" else set())
    assert torch.equal(b["g_ema"]["latent_avg"], g.mean_latent()[0])
    # The same networks: NVlabs' channel rule states our (test-sized) table.
    tables = [models.layers.channel_table(c["channel_multiplier"], c["width"], c["channel_base"], c["channel_max"])
              for c in (a["config"], b["config"])]
    assert all(tables[0][r] == tables[1][r] for r in (4, 8, 16, 32))
    same = ("model", "size", "style_dim", "n_mlp", "conv_clamp", "mbstd_group", "mbstd_channels")
    assert {k: a["config"][k] for k in same} == {k: b["config"][k] for k in same}


def test_reading_admits_only_what_network_pickles_hold(tmp_path, nvlabs_modules):
    marker = tmp_path / "ran"

    class Command:
        def __init__(self, call):
            self.call = call

        def __reduce__(self):
            return self.call

    attacks = {"posix.system": (os.system, (f"touch {marker}",)),
               "builtins.eval": (eval, (f"open({str(marker)!r}, 'w')",)),
               "subprocess.Popen": (subprocess.Popen, (["touch", str(marker)],))}
    for name, call in attacks.items():
        for where in ("top", "state"):
            path = tmp_path / f"{where}.pkl"
            if where == "top":
                payload = {"G_ema": Command(call)}
            else:  # inside a network's record, where a module's state goes
                persistence, _ = nvlabs_modules
                meta = dict(type="class", version=6, module_src="", class_name="Generator",
                            state={"_parameters": {"weight": Command(call)}})

                class Record:
                    def __reduce__(self):
                        return persistence._reconstruct_persistent_obj, (meta,)
                payload = {"G_ema": Record()}
            path.write_bytes(pickle.dumps(payload))
            with pytest.raises(FormatError) as error:
                read_pretrained(path)
            assert str(error.value) == (f"refused to read {path}: it calls {name}, which NVlabs network pickles never "
                                        f"hold (nothing of the file was run)")
            assert not marker.exists()
    # A storage's bytes are a torch.save stream of their own: read with weights_only too.
    inner = tmp_path / "inner.pt"
    torch.save(Command(attacks["posix.system"]), inner)

    class Storage:
        def __reduce__(self):
            return torch.storage._load_from_bytes, (inner.read_bytes(),)
    (tmp_path / "storage.pkl").write_bytes(pickle.dumps({"G_ema": Storage()}))
    with pytest.raises(FormatError, match="cannot be read"):
        read_pretrained(tmp_path / "storage.pkl")
    assert not marker.exists()


# ------------------------------------------------------------------------------------ rosinality
def rosinality_generator_state(g):
    """Our StyleGAN2's state dict in rosinality's layout: plus the up-sampling convs' blur buffers."""
    state = dict(g.state_dict())
    kernel = torch.outer(torch.tensor([1.0, 3, 3, 1]), torch.tensor([1.0, 3, 3, 1])) / 64 * 4
    for j in range(int(math.log2(g.size)) - 2):
        state[f"convs.{2 * j}.conv.blur.kernel"] = kernel
    return state


@pytest.mark.slow
@pytest.mark.parametrize("legacy_format", [False, True], ids=["zip", "legacy-torch.save"])
def test_a_rosinality_training_checkpoint_converts_with_its_adam_states_and_round_trips_bitwise(
        tmp_path, legacy_format):
    torch.manual_seed(3)
    g = randomized(models.StyleGAN2Generator(16, style_dim=STYLE, n_mlp=2, channel_multiplier=1)).eval()
    d = randomized(models.Discriminator(16, channel_multiplier=1))
    optimizers = {}
    for name, network in (("g", g), ("d", d)):
        optimizer = torch.optim.Adam(network.parameters(), lr=0.002, betas=(0.0, 0.99))
        network(torch.randn(4, STYLE) if name == "g" else torch.randn(4, 3, 16, 16)).square().mean().backward()
        optimizer.step()
        optimizers[f"{name}_optim"] = optimizer.state_dict()
    path = tmp_path / "010000.pt"
    torch.save({"g": rosinality_generator_state(g), "d": d.state_dict(), "g_ema": rosinality_generator_state(g),
                **optimizers, "args": argparse.Namespace(size=16, arch="stylegan2", n_mlp=2, latent=STYLE,
                                                         channel_multiplier=1, path="lmdb"), "ada_aug_p": 0.0},
               path, _use_new_zipfile_serialization=not legacy_format)
    ours, back, again = tmp_path / "ours.pt", tmp_path / "back.pt", tmp_path / "again.pt"
    convert.main([str(path), "--out", str(ours)])
    pretrained = load_networks(ours)
    assert pretrained.optimizers.keys() == {"g_optim", "d_optim"}
    assert pretrained.architecture["channel_multiplier"] == 1 and pretrained.details["details"]["n_mlp"] == 2
    z = torch.randn(3, STYLE)
    with torch.no_grad():
        torch.testing.assert_close(pretrained.g_ema(z, noise="const"), g(z, noise="const"), rtol=0, atol=0)
    convert.main([str(ours), "--out", str(back), "--to", "rosinality"])
    written = torch.load(back, weights_only=True)
    source = torch.load(path, weights_only=False)
    for name in ("g", "g_ema", "d"):
        assert written[name].keys() == source[name].keys()
        assert all(torch.equal(written[name][k], source[name][k]) for k in source[name])
    convert.main([str(back), "--out", str(again)])
    a, b = torch.load(ours, weights_only=True), torch.load(again, weights_only=True)
    for name in ("g", "g_ema", "d"):
        assert all(torch.equal(a[name][k], b[name][k]) for k in a[name]) and a[name].keys() == b[name].keys()


def test_a_rosinality_release_truncates_around_its_latent_avg_with_its_noise(tmp_path):
    torch.manual_seed(4)
    g = randomized(models.StyleGAN2Generator(16, style_dim=STYLE, n_mlp=2, channel_multiplier=1)).eval()
    state = rosinality_generator_state(g)
    for index in range(len(g.noise_shapes(1))):
        state[f"noises.noise_{index}"] = torch.randn(state[f"noises.noise_{index}"].shape)
    latent_avg = torch.randn(STYLE)
    torch.save({"g_ema": state, "latent_avg": latent_avg}, tmp_path / "stylegan2-ffhq-config-f.pt")
    g_, g_ema, d = models.load_pretrained(tmp_path / "stylegan2-ffhq-config-f.pt")
    assert g_ is None and d is None and not g_ema.training
    z = torch.randn(2, STYLE)
    noise = [state[f"noises.noise_{i}"] for i in range(len(g.noise_shapes(1)))]
    with torch.no_grad():
        expected = g(z, noise=noise, truncation=0.5, truncation_latent=latent_avg[None])
        torch.testing.assert_close(g_ema(z, noise="const", truncation=0.5), expected, rtol=0, atol=0)


# ------------------------------------------------------------------------------------------- CIPS
def test_a_cips_release_gives_the_images_cips_generates(tmp_path):
    torch.manual_seed(5)
    g = randomized(models.CIPS(16, channel_multiplier=1)).eval()
    torch.save(g.state_dict(), tmp_path / "churches_g_ema.pt")  # bare, as CIPS releases are
    pretrained = read_pretrained(tmp_path / "churches_g_ema.pt")
    assert pretrained.format == "CIPS release (g_ema)" and pretrained.g_ema.size == 16
    # CIPS generates with its table looked up bilinearly at the pixel coordinates (border padding,
    # align_corners=False): at pixel i of n, position (i * n / (n - 1) - 1/2) in table pixels.
    table = g.emb.input
    position = (torch.arange(16) * 16 / 15 - 0.5).clamp(0, 15)
    low = position.floor().long().clamp(max=14)
    t = position - low
    rows = table[:, :, low] * (1 - t)[:, None] + table[:, :, low + 1] * t[:, None]
    expected = rows[..., low] * (1 - t) + rows[..., low + 1] * t
    # (grid_sample computes the positions in float32 its own way: a few 1e-6 apart on values of about 1)
    torch.testing.assert_close(pretrained.g_ema.emb.input, expected, rtol=0, atol=2e-5)
    g.emb.input.data.copy_(expected)
    z, noise = torch.randn(2, 512), g.make_noise(1)
    with torch.no_grad():
        assert rel(pretrained.g_ema(z, noise=noise), g(z, noise=noise)) < 1e-5


@pytest.mark.parametrize("change, words", [
    (lambda s: s.update({"to_rgb_last.conv.weight": torch.zeros(1)}), "CIPSres"),
    (lambda s: s.pop("linears.0.activate.bias"), "sin / sinrelu"),
    (lambda s: s.update({"emb.input": torch.zeros(1, 256, 16, 16)}), r"hidden size \(fc_dim\) 256"),
])
def test_cips_configurations_that_do_not_map_are_refused(tmp_path, change, words):
    state = dict(models.CIPS(16, channel_multiplier=1).state_dict())
    change(state)
    torch.save(state, tmp_path / "cips.pt")
    with pytest.raises(FormatError, match=words):
        read_pretrained(tmp_path / "cips.pt")


# ------------------------------------------------------------------------ refusals, in one line each
def record_pickle(path, nvlabs_modules, networks):
    """A pickle of hand-made persistence records: ``networks`` {key: (class name, attributes, children)}."""
    persistence, _ = nvlabs_modules

    class Record:
        def __init__(self, class_name, attributes=None, children=None):
            self.meta = dict(type="class", version=6, module_src="raise SystemExit('never run')", class_name=class_name,
                             state={**(attributes or {}), "_modules": {name: Record(*child)
                                                                       for name, child in (children or {}).items()}})

        def __reduce__(self):
            return persistence._reconstruct_persistent_obj, (self.meta,)
    path.write_bytes(pickle.dumps({key: Record(*value) for key, value in networks.items()}, protocol=3))
    return str(path)


def one_line_refusal(capsys, argv):
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        convert.main(argv)
    assert exit_info.value.code == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


GENERATOR = {"z_dim": 512, "w_dim": 512, "c_dim": 0, "img_channels": 3, "img_resolution": 64}


@pytest.mark.parametrize("networks, words", [
    ({"G_ema": ("Generator", GENERATOR, {"mapping": ("MappingNetwork",),
                                         "synthesis": ("SynthesisNetwork", {}, {"input": ("SynthesisInput",)})})},
     ["'G_ema' is a StyleGAN3 generator", "SynthesisInput", "only StyleGAN2"]),
    ({"G_ema": ("Generator", {**GENERATOR, "c_dim": 10}, {"mapping": ("MappingNetwork",),
                                                          "synthesis": ("SynthesisNetwork",)})},
     ["'G_ema' is a conditional generator (c_dim 10)"]),
    ({"G_ema": ("Generator", {**GENERATOR, "img_resolution": 2048}, {"mapping": ("MappingNetwork",),
                                                                     "synthesis": ("SynthesisNetwork",)})},
     ["'G_ema' is 2048x2048", "8 to 1024"]),
    ({"G_ema": ("Generator", {**GENERATOR, "img_resolution": 4}, {"mapping": ("MappingNetwork",),
                                                                  "synthesis": ("SynthesisNetwork",)})},
     ["'G_ema' is 4x4"]),
    ({"G_ema": ("StyleGAN3Discriminator",)}, ["'G_ema' is a StyleGAN3Discriminator, not a generator"]),
    ({"D": ("Discriminator",)}, ["holds no generator 'G_ema' or 'G'"]),
    ({"G_ema": ("Generator", {**GENERATOR, "img_resolution": 8}, {
        "mapping": ("MappingNetwork",), "synthesis": ("SynthesisNetwork", {}, {"b4": ("SynthesisBlock",)})})},
     ["its networks lack a part of the layout they claim", "KeyError"]),
], ids=["stylegan3", "conditional", "2048px", "4px", "other-class", "no-generator", "malformed"])
def test_nvlabs_networks_that_do_not_map_are_refused_in_one_line(tmp_path, capsys, nvlabs_modules, networks, words):
    path = record_pickle(tmp_path / "network.pkl", nvlabs_modules, networks)
    line = one_line_refusal(capsys, [path, "--out", str(tmp_path / "out.pt")])
    for word in [path] + words:
        assert word in line, (word, line)
    assert not (tmp_path / "out.pt").exists()


def test_files_that_are_no_network_are_refused_in_one_line(tmp_path, capsys, nvlabs_modules):
    out = str(tmp_path / "out.pt")
    text, truncated, foreign, swagan, tensorflow = (tmp_path / name for name in (
        "notes.pkl", "truncated.pkl", "weights.pt", "swagan.pt", "tf.pkl"))
    text.write_text("hello")
    architecture, g, d = stylegan2(16)
    nvlabs_pickle(tmp_path / "whole.pkl", nvlabs_snapshot(architecture, g, d), nvlabs_modules)
    truncated.write_bytes((tmp_path / "whole.pkl").read_bytes()[:5000])
    torch.save({"weights": torch.ones(2)}, foreign)
    torch.save({"g_ema": {**rosinality_generator_state(g), "to_rgbs.0.iwt.ll": torch.ones(2)}}, swagan)
    tf_network = types.ModuleType("dnnlib.tflib.network")

    class Network:
        def __reduce__(self):
            return Network, ()
    Network.__module__, Network.__qualname__ = tf_network.__name__, "Network"
    tf_network.Network = Network
    sys.modules[tf_network.__name__] = tf_network
    try:
        tensorflow.write_bytes(pickle.dumps((Network(), Network(), Network())))
    finally:
        del sys.modules[tf_network.__name__]
    for path, words in ((text, ["cannot be read", "truncated, corrupt or not a checkpoint"]),
                        (truncated, ["cannot be read", "truncated, corrupt or not a checkpoint"]),
                        (foreign, ["holds no network of a known format", "weights"]),
                        (swagan, ["rosinality SWAGAN generator"]),
                        (tensorflow, ["TensorFlow StyleGAN/StyleGAN2 pickle"])):
        line = one_line_refusal(capsys, [str(path), "--out", out])
        for word in [str(path)] + words:
            assert word in line, (word, line)
    assert not os.path.exists(out)


def test_conversions_that_do_not_map_are_refused_in_one_line(tmp_path, capsys, nvlabs_modules):
    torch.manual_seed(0)
    official = {"g": official_state(models.PixelFolder(16).state_dict())}
    official.update(g_ema=official["g"], d=models.Discriminator(16).state_dict(), g_optim={}, d_optim={})
    path = tmp_path / "pixelfolder.pt"
    torch.save(official, path)
    architecture, g, d = stylegan2(16, conv_clamp=256.0)
    pickled = tmp_path / "clamped.pkl"
    nvlabs_pickle(pickled, nvlabs_snapshot(architecture, g, d), nvlabs_modules)
    for argv, words in (([str(path), "--to", "nvlabs"], ["--to nvlabs writes StyleGAN2 networks", "PixelFolder"]),
                        ([str(pickled), "--to", "rosinality"], ["--to rosinality: rosinality's StyleGAN2 has no"]),
                        ([str(pickled), "--size", "64"], ["holds 16x16 networks, not the --size 64"])):
        line = one_line_refusal(capsys, argv + ["--out", str(tmp_path / "out.pt")])
        for word in words:
            assert word in line, (word, line)
    for setting, value in (("conv_clamp", 256.0), ("mbstd_group", 8), ("channel_base", 8192), ("width", 0.5)):
        with pytest.raises(FormatError, match=f"rosinality's StyleGAN2 has no {setting} setting"):
            rosinality.write({}, {"model": "StyleGAN2", setting: value}, {})
    with pytest.raises(SystemExit) as exit_info:
        convert.main([str(pickled), "--out", str(tmp_path)])
    assert exit_info.value.code == 2 and "expected a file path, got the folder" in capsys.readouterr().err


# ------------------------------------------------------------------ converted checkpoints, end to end
@pytest.fixture
def converted(tmp_path, nvlabs_modules):
    """An NVlabs snapshot (16 px, conv_clamp, mbstd group 2), its pickle, and our conversion of it."""
    architecture, g, d = stylegan2(16, conv_clamp=1.0, mbstd_group=2)
    snapshot = nvlabs_snapshot(architecture, g, d)
    source, ours = tmp_path / "network-snapshot-001000.pkl", tmp_path / "ours.pt"
    nvlabs_pickle(source, snapshot, nvlabs_modules)
    convert.main([str(source), "--out", str(ours)])
    return snapshot, str(ours)


def test_generate_draws_the_sources_images_from_a_converted_checkpoint(tmp_path, converted):
    from PIL import Image

    from training import evaluate
    from training.images import to_uint8
    snapshot, ours = converted
    generate.main([ours, "--outdir", str(tmp_path / "png"), "--seeds", "3-4", "--noise", "const",
                   "--truncation", "0.7"])
    z, _ = generate.seed_inputs(evaluate.load_generator(ours), [3, 4])
    with torch.no_grad():
        expected = to_uint8(snapshot["G_ema"](z, None, 0.7, noise_mode="const")).permute(0, 2, 3, 1).numpy()
    for index, seed in enumerate((3, 4)):
        written = np.asarray(Image.open(tmp_path / "png" / f"seed000{seed}.png")).astype(int)
        assert np.abs(written - expected[index]).max() <= 1


@pytest.mark.slow
def test_train_resume_fine_tunes_a_converted_checkpoint_with_fresh_adam_states(tmp_path, converted, caplog):
    import logging

    from training import train
    snapshot, ours = converted
    caplog.set_level(logging.INFO)
    out = tmp_path / "run"
    train.main(["--resume", ours, "--out", str(out), "--steps", "1", "--dataset", "procedural",
                "--procedural-images", "8", "--batch", "4", "--num-workers", "0", "--sample-every", "1000"])
    log = caplog.text
    assert "fine-tuning the networks converted from network-snapshot-001000.pkl (NVlabs pickle)" in log
    assert "G's Adam states are fresh; D's Adam states are fresh" in log
    checkpoint = torch.load(out / "checkpoint-latest.pt", weights_only=True)
    assert checkpoint["step"] == 1 and checkpoint["config"]["conv_clamp"] == 1.0
    assert checkpoint["config"]["mbstd_group"] == 2 and "latent_avg" not in checkpoint["g_ema"]
    before = torch.load(ours, weights_only=True)
    assert not torch.equal(checkpoint["d"]["final_linear.1.weight"], before["d"]["final_linear.1.weight"])
    assert torch.equal(checkpoint["g_ema"]["noises.noise_0"], before["g_ema"]["noises.noise_0"])


@pytest.mark.slow
def test_export_reads_a_converted_checkpoint(tmp_path, converted):
    from training import export
    _, ours = converted
    export.main([ours, "--out", str(tmp_path / "g.pt2")])
    error, tolerance, _ = export.check(str(tmp_path / "g.pt2"))
    assert error <= tolerance


def test_checkpoints_from_before_the_new_settings_still_load_and_resume(tmp_path):
    from training.checkpoint import load_checkpoint
    from training.config import TrainConfig
    from training.train import Trainer
    config = tiny_config(tmp_path, steps=1)
    Trainer(config).run()
    convert.main([str(tmp_path), "--out", str(tmp_path / "networks.pt")])  # a run folder: its latest checkpoint
    assert load_networks(tmp_path / "networks.pt").format == "converted checkpoint of this package"
    path = tmp_path / "checkpoint-latest.pt"
    old = torch.load(path, weights_only=True)
    for name in ("channel_base", "channel_max", "conv_clamp", "mbstd_group", "mbstd_channels"):
        del old["config"][name]
    for name in ("g", "g_ema"):
        old[name] = official_state(old[name])
    torch.save(old, path)
    load_checkpoint(str(path), config.architecture())  # the same networks
    assert generate.load_generator(str(path)).size == 16
    resumed = Trainer(TrainConfig(**{**config.__dict__, "steps": 2, "resume": str(path)}))
    assert resumed.step == 1
