"""NVlabs pickles: stylegan2-ada-pytorch's training snapshots and releases (``G``, ``D``, ``G_ema``) and
the same networks from stylegan3's StyleGAN2 configuration, read without running code from the file,
and our StyleGAN2 written as one.

NVlabs pickles each network as a persistence record: ``torch_utils.persistence._reconstruct_persistent_obj``
called on {type, version, module_src, class_name, state}, where ``module_src`` is the Python source of
the network's module (NVlabs' loader executes it) and ``state`` the object's ``__dict__`` (parameters,
buffers, child networks, settings). The reader's unpickler admits only the globals those pickles
hold: that persistence function (which here keeps the class name and the state and drops the source
unread), tensor and storage rebuilding (storages through ``torch.load(weights_only=True)``), plain
containers, numpy scalars and arrays (settings) and dnnlib's EasyDict (as a dict). Any other global is
refused, naming it, when the unpickler meets it: nothing the file names beyond these is ever called.

The mapping is exact: NVlabs' StyleGAN2 (``skip`` generator, ``resnet`` discriminator) computes the
functions of our StyleGAN2Generator and Discriminator under other names and layouts. Both store
weights N(0, 1) (mapping weights divided by the learning-rate multiplier) and biases raw, scaled at
run time by the same gains; NVlabs' synthesis convs leave out the 1/sqrt(fan_in) scale that
demodulation cancels (it changes only how the 1e-8 of the demodulation compares, far below float32
rounding); its resnet blocks scale both branches by sqrt 1/2 where ours divides their sum by sqrt 2.
"""
import inspect
import io
import math
import pickle
import types
from collections import OrderedDict

import numpy as np
import torch

from ..architecture import build_discriminator, build_generator, complete
from ..layers import RESOLUTIONS, channel_table
from . import FormatError, nvlabs_networks, unreadable

PERSISTENCE = ("torch_utils.persistence", "_reconstruct_persistent_obj")
PERSISTENCE_VERSION = 6
MAPPING_LR = 0.01  # our mapping network's learning-rate multiplier
FILTER = nvlabs_networks.setup_filter()
NAMES = {"g": "G", "g_ema": "G_ema", "d": "D"}  # our names -> the pickle's

try:
    from numpy._core.multiarray import _reconstruct as numpy_array, scalar as numpy_scalar
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import _reconstruct as numpy_array, scalar as numpy_scalar


class PersistentRecord:
    """One network object of an NVlabs pickle as its persistence record describes it: the class name
    and the object's state. The record's module source is never kept or run."""

    def __init__(self, meta):
        if not isinstance(meta, dict) or not isinstance(meta.get("state"), dict):
            raise pickle.UnpicklingError("a persistence record without a state")
        self.class_name = str(meta.get("class_name"))
        self.state = meta["state"]

    def get(self, name, default=None):
        return self.state.get(name, default)

    def children(self):
        return {name: child for name, child in (self.state.get("_modules") or {}).items()
                if isinstance(child, PersistentRecord)}

    def tensors(self, prefix=""):
        """The network's parameters and persistent buffers by their state-dict names."""
        found = {}
        transient = self.state.get("_non_persistent_buffers_set") or set()
        for group in ("_parameters", "_buffers"):
            for name, tensor in (self.state.get(group) or {}).items():
                if isinstance(tensor, torch.Tensor) and name not in (transient if group == "_buffers" else ()):
                    found[prefix + name] = tensor.detach()
        for name, child in self.children().items():
            found.update(child.tensors(f"{prefix}{name}."))
        return found


class EasyDict(dict):
    """dnnlib's EasyDict (settings in network pickles), read as a plain dict."""


class RefusedGlobal(pickle.UnpicklingError):
    pass


def _storage_from_bytes(data):
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


ALLOWED_GLOBALS = {
    PERSISTENCE: PersistentRecord,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
    ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("_codecs", "encode"): lambda text, encoding="utf-8": text.encode(encoding),  # bytes in protocol 2
    ("numpy", "dtype"): np.dtype,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy.core.multiarray", "scalar"): numpy_scalar,
    ("numpy._core.multiarray", "scalar"): numpy_scalar,
    ("numpy.core.multiarray", "_reconstruct"): numpy_array,
    ("numpy._core.multiarray", "_reconstruct"): numpy_array,
    ("dnnlib.util", "EasyDict"): EasyDict,
}


class RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        allowed = ALLOWED_GLOBALS.get((module, name))
        if allowed is None:
            raise RefusedGlobal(f"{module}.{name}")
        return allowed

    def persistent_load(self, pid):
        raise RefusedGlobal("a persistent id (external object)")


def read_pickle(file, path):
    """The object an NVlabs pickle holds, its networks as PersistentRecords."""
    try:
        return RestrictedUnpickler(file).load()
    except RefusedGlobal as error:
        if str(error) == "dnnlib.tflib.network.Network":
            raise FormatError(f"{path} is a TensorFlow StyleGAN/StyleGAN2 pickle (dnnlib.tflib networks): convert "
                              f"it to a PyTorch pickle with stylegan2-ada-pytorch's legacy.py first") from None
        raise FormatError(f"refused to read {path}: it calls {error}, which NVlabs network pickles never hold "
                          f"(nothing of the file was run)") from None
    except Exception as error:  # truncated or corrupt: pickle raises many types
        raise unreadable(path, f"{type(error).__name__}: {error}") from None


# ------------------------------------------------------------------------------ names and layouts
def generator_keys(size, n_mlp):
    """(our key, NVlabs key) of every tensor of StyleGAN2Generator(size) that NVlabs' Generator holds."""
    pairs = [(f"style.{i + 1}.{p}", f"mapping.fc{i}.{p}") for i in range(n_mlp) for p in ("weight", "bias")]
    pairs += [("latent_avg", "mapping.w_avg"), ("input.input", "synthesis.b4.const")]
    resolutions = [2 ** i for i in range(3, int(math.log2(size)) + 1)]
    convs = [("conv1", "synthesis.b4.conv1")]
    for j, res in enumerate(resolutions):
        convs += [(f"convs.{2 * j}", f"synthesis.b{res}.conv0"), (f"convs.{2 * j + 1}", f"synthesis.b{res}.conv1")]
    for index, (ours, theirs) in enumerate(convs):
        pairs += [(f"{ours}.conv.weight", f"{theirs}.weight"),
                  (f"{ours}.conv.modulation.weight", f"{theirs}.affine.weight"),
                  (f"{ours}.conv.modulation.bias", f"{theirs}.affine.bias"),
                  (f"{ours}.noise.weight", f"{theirs}.noise_strength"), (f"{ours}.activate.bias", f"{theirs}.bias"),
                  (f"noises.noise_{index}", f"{theirs}.noise_const")]
    to_rgbs = [("to_rgb1", "synthesis.b4.torgb")] + [(f"to_rgbs.{j}", f"synthesis.b{res}.torgb")
                                                      for j, res in enumerate(resolutions)]
    for ours, theirs in to_rgbs:
        pairs += [(f"{ours}.conv.weight", f"{theirs}.weight"),
                  (f"{ours}.conv.modulation.weight", f"{theirs}.affine.weight"),
                  (f"{ours}.conv.modulation.bias", f"{theirs}.affine.bias"), (f"{ours}.bias", f"{theirs}.bias")]
    return pairs


def discriminator_keys(size):
    """(our key, NVlabs key) of every parameter of Discriminator(size) and of NVlabs' resnet one."""
    pairs = [("convs.0.0.weight", f"b{size}.fromrgb.weight"), ("convs.0.1.bias", f"b{size}.fromrgb.bias")]
    for k, res in enumerate((2 ** i for i in range(int(math.log2(size)), 2, -1)), start=1):
        pairs += [(f"convs.{k}.conv1.0.weight", f"b{res}.conv0.weight"),
                  (f"convs.{k}.conv1.1.bias", f"b{res}.conv0.bias"),
                  (f"convs.{k}.conv2.1.weight", f"b{res}.conv1.weight"),
                  (f"convs.{k}.conv2.2.bias", f"b{res}.conv1.bias"),
                  (f"convs.{k}.skip.1.weight", f"b{res}.skip.weight")]
    pairs += [("final_conv.0.weight", "b4.conv.weight"), ("final_conv.1.bias", "b4.conv.bias")]
    pairs += [(f"final_linear.{i}.{p}", f"b4.{layer}.{p}") for i, layer in enumerate(("fc", "out"))
              for p in ("weight", "bias")]
    return pairs


def translate(source, pairs, target_shapes, what, path):
    """{target key: tensor} from ``source`` along ``pairs`` (source key, target key), each tensor
    reshaped to its target shape (the layouts differ by unit dimensions only); FormatError naming the
    keys that are missing or misshapen."""
    out, missing, misshapen = {}, [], []
    for source_key, target_key in pairs:
        if target_key not in target_shapes:
            continue
        tensor = source.get(source_key)
        if tensor is None:
            missing.append(source_key)
        elif tensor.numel() != math.prod(target_shapes[target_key]):
            misshapen.append(f"{source_key} {tuple(tensor.shape)}")
        else:
            out[target_key] = tensor.reshape(target_shapes[target_key])
    if missing or misshapen:
        found = "; ".join(part for part in (f"missing {', '.join(missing[:3])}" if missing else "",
                                            f"shaped unlike it {', '.join(misshapen[:3])}" if misshapen else "")
                          if part)
        raise FormatError(f"{path}: {what} does not have the layout of the network it describes ({found})")
    return out


# ------------------------------------------------------------------------------------------ reading
def _number(value):
    return None if value is None else float(value)


def channel_settings(channels, path):
    """Our channel settings for NVlabs' per-resolution channel counts {res: C}: StyleGAN2's multiplier
    table where it is one, else NVlabs' rule min(channel_base // res, channel_max)."""
    for multiplier in (2, 1):
        table = channel_table(multiplier)
        if all(table[res] == c for res, c in channels.items()):
            return {"channel_multiplier": multiplier, "channel_base": None, "channel_max": 512}
    cap = max(channels.values())
    low = max(c * res for res, c in channels.items())
    high = min([c * res + res - 1 for res, c in channels.items() if c < cap] or [low])
    if low <= high and all(min(low // res, cap) == c for res, c in channels.items()):
        return {"channel_multiplier": 2, "channel_base": low, "channel_max": cap}
    raise FormatError(f"{path}: the channel counts {channels} follow no channel_base / channel_max rule")


def _check(condition, path, message):
    if not condition:
        raise FormatError(f"{path}: {message}")


def _filters_are_ours(tensors, path, name):
    for key, value in tensors.items():
        if key.endswith("resample_filter"):
            _check(value.shape == FILTER.shape and torch.allclose(value.float(), FILTER), path,
                   f"'{name}' resamples with another filter ({key}), ours use [1, 3, 3, 1]")


def generator_architecture(record, path, name):
    """The architecture (models.architecture settings) of NVlabs' StyleGAN2 Generator ``record``, and
    its conv_clamp; FormatError naming what does not map."""
    _check(record.class_name == "Generator", path, f"'{name}' is a {record.class_name}, not a generator")
    synthesis, mapping = record.children().get("synthesis"), record.children().get("mapping")
    _check(synthesis is not None and mapping is not None, path, f"'{name}' has no mapping or synthesis network")
    if "input" in synthesis.children():
        raise FormatError(f"{path}: '{name}' is a StyleGAN3 generator (its synthesis starts with a "
                          f"{synthesis.children()['input'].class_name}); only StyleGAN2 networks map to this package")
    _check(not int(record.get("c_dim") or 0), path, f"'{name}' is a conditional generator (c_dim "
                                                     f"{record.get('c_dim')}); this package's are unconditional")
    _check(int(record.get("img_channels", 3)) == 3, path, f"'{name}' makes {record.get('img_channels')}-channel "
                                                           f"images; ours make RGB")
    size, z_dim, w_dim = int(record.get("img_resolution")), int(record.get("z_dim")), int(record.get("w_dim"))
    _check(size in RESOLUTIONS and size >= 8, path, f"'{name}' is {size}x{size}; our StyleGAN2 builds 8 to 1024")
    _check(z_dim == w_dim, path, f"'{name}' has z_dim {z_dim} and w_dim {w_dim}; ours has one style_dim for both")
    channels, clamps = {}, set()
    for res in (2 ** i for i in range(2, int(math.log2(size)) + 1)):
        block = synthesis.children().get(f"b{res}")
        _check(block is not None, path, f"'{name}' has no synthesis block b{res}")
        _check(block.get("architecture", "skip") == "skip", path, f"'{name}' has a '{block.get('architecture')}' "
                                                                  f"synthesis; ours is StyleGAN2's 'skip'")
        layers = [block.children().get(layer) for layer in ("conv0", "conv1", "torgb") if layer in block.children()]
        for layer in layers:
            _check(layer.get("activation", "lrelu") == "lrelu", path, f"'{name}' has {layer.get('activation')} "
                                                                      f"activations; ours are leaky ReLU")
            clamps.add(_number(layer.get("conv_clamp")))
        channels[res] = block.children()["conv1"].get("_parameters")["weight"].shape[0]
    _check(len(clamps) == 1, path, f"'{name}' clamps its layers at different values {sorted(map(str, clamps))}")
    _check(not mapping.get("embed"), path, f"'{name}' embeds labels; ours are unconditional")
    return {"model": "StyleGAN2", "size": size, "style_dim": w_dim, "n_mlp": int(mapping.get("num_layers")),
            **channel_settings(channels, path)}, clamps.pop()


def discriminator_architecture(record, path, name):
    """The architecture settings NVlabs' resnet Discriminator ``record`` fixes, its conv_clamp and its
    channel table; FormatError naming what does not map."""
    _check(record.class_name == "Discriminator", path, f"'{name}' is a {record.class_name}, not a discriminator")
    _check(not int(record.get("c_dim") or 0), path, f"'{name}' is a conditional discriminator (c_dim "
                                                     f"{record.get('c_dim')}); ours is unconditional")
    size = int(record.get("img_resolution"))
    channels, clamps = {}, set()
    for res in (2 ** i for i in range(int(math.log2(size)), 2, -1)):
        block = record.children().get(f"b{res}")
        _check(block is not None, path, f"'{name}' has no block b{res}")
        _check(block.get("architecture") == "resnet", path, f"'{name}' has a '{block.get('architecture')}' "
                                                            f"discriminator; ours is StyleGAN2's 'resnet'")
        for layer_name, layer in block.children().items():
            _check(layer.get("activation") in ("lrelu", "linear"), path,
                   f"'{name}' has {layer.get('activation')} activations; ours are leaky ReLU")
            if layer_name != "skip":
                clamps.add(_number(layer.get("conv_clamp")))
        channels[res] = block.children()["conv0"].get("_parameters")["weight"].shape[0]
    epilogue = record.children().get("b4")
    _check(epilogue is not None and epilogue.class_name == "DiscriminatorEpilogue", path,
           f"'{name}' has no epilogue b4")
    _check(not int(epilogue.get("cmap_dim") or 0), path,
           f"'{name}' is conditional (cmap_dim {epilogue.get('cmap_dim')})")
    clamps.add(_number(epilogue.children()["conv"].get("conv_clamp")))
    channels[4] = epilogue.children()["conv"].get("_parameters")["weight"].shape[0]
    _check(len(clamps) == 1, path, f"'{name}' clamps its layers at different values {sorted(map(str, clamps))}")
    mbstd = epilogue.children().get("mbstd")
    group = None if mbstd is None or mbstd.get("group_size") is None else int(mbstd.get("group_size"))
    return {"size": size, "mbstd_group": group, "mbstd_channels": 0 if mbstd is None else int(mbstd.get("num_channels"))
            }, clamps.pop(), channels


def mapping_rescale(record):
    """NVlabs' mapping learning-rate multiplier over ours: its weights and biases times this are ours."""
    fc0 = record.children()["mapping"].children()["fc0"]
    return float(fc0.get("bias_gain", MAPPING_LR)) / MAPPING_LR


def read_networks(data, path):
    """(architecture, {"g": ..., "g_ema": ..., "d": ...} of our modules, notes) from an unpickled NVlabs
    snapshot ``data``."""
    if isinstance(data, PersistentRecord):  # a network pickled alone
        data = {"G_ema" if data.class_name == "Generator" else "D": data}
    _check(isinstance(data, dict), path, f"holds a {type(data).__name__}, not NVlabs' dict of networks")
    records = {name: data.get(key) for name, key in NAMES.items()}
    for name, key in NAMES.items():
        _check(records[name] is None or isinstance(records[name], PersistentRecord), path,
               f"'{key}' is a {type(records[name]).__name__}, not a network")
    generator = records["g_ema"] or records["g"]
    _check(generator is not None, path, f"holds no generator 'G_ema' or 'G' (keys: {sorted(map(str, data))})")
    architecture, clamp = generator_architecture(generator, path, "G_ema" if records["g_ema"] else "G")
    if records["g"] is not None and records["g_ema"] is not None:
        _check(generator_architecture(records["g"], path, "G") == (architecture, clamp), path,
               "'G' and 'G_ema' differ in architecture")
    if records["d"] is not None:
        d_architecture, d_clamp, d_channels = discriminator_architecture(records["d"], path, "D")
        _check(d_architecture["size"] == architecture["size"], path, f"'D' is {d_architecture['size']} px and the "
                                                                     f"generator {architecture['size']}")
        _check(d_clamp == clamp, path, f"'D' clamps at {d_clamp} and the generator at {clamp}; ours share one "
                                       f"conv_clamp")
        _check(all(channel_table(architecture["channel_multiplier"], 1.0, architecture["channel_base"],
                                 architecture["channel_max"])[res] == c for res, c in d_channels.items()), path,
               f"'D' has other channel counts than the generator ({d_channels}); ours share one table")
        architecture.update(mbstd_group=d_architecture["mbstd_group"], mbstd_channels=d_architecture["mbstd_channels"])
    architecture["conv_clamp"] = clamp
    networks = {}
    for name, record in records.items():
        if record is None:
            continue
        tensors = record.tensors()
        _filters_are_ours(tensors, path, NAMES[name])
        if name == "d":
            model = build_discriminator(architecture)
            pairs = [(theirs, ours) for ours, theirs in discriminator_keys(architecture["size"])]
        else:
            model = build_generator(architecture)
            pairs = [(theirs, ours) for ours, theirs in generator_keys(architecture["size"], architecture["n_mlp"])]
            tensors = _with_our_mapping_gains(tensors, mapping_rescale(record))
            tensors = _with_noise_where_unused(tensors, model, pairs)
            if "mapping.w_avg" in tensors:
                model.latent_avg = torch.empty(architecture["style_dim"])
        shapes = {key: tuple(value.shape) for key, value in model.state_dict().items()}
        state = translate(tensors, pairs, shapes, f"'{NAMES[name]}'", path)
        model.load_state_dict({**model.state_dict(), **state})  # the model's own fixed blur kernels
        networks[name] = model
    notes = [] if records["d"] is not None else ["the pickle holds no discriminator 'D'"]
    return architecture, networks, notes


def _with_our_mapping_gains(tensors, rescale):
    if rescale == 1:
        return tensors
    return {key: value * rescale if key.startswith("mapping.fc") else value for key, value in tensors.items()}


def _with_noise_where_unused(tensors, model, pairs):
    """Layers built without noise (``use_noise=False``) as ours with noise strength 0."""
    ours = model.state_dict()
    filled = dict(tensors)
    for theirs, our_key in pairs:
        if theirs not in tensors and theirs.endswith((".noise_strength", ".noise_const")):
            filled[theirs] = torch.zeros(1) if theirs.endswith("strength") else ours[our_key]
    return filled


# ------------------------------------------------------------------------------------------ writing
def nvlabs_channels(architecture):
    """(channel_base, channel_max) that give our table at every resolution the networks use."""
    architecture = complete(architecture)
    size = architecture["size"]
    table = channel_table(architecture["channel_multiplier"], architecture["width"], architecture["channel_base"],
                          architecture["channel_max"])
    settings = channel_settings({res: table[res] for res in RESOLUTIONS if res <= size}, "--to nvlabs")
    if settings["channel_base"] is None:
        return 16384 * settings["channel_multiplier"], 512
    return settings["channel_base"], settings["channel_max"]


def nvlabs_generator(g, architecture):
    """NVlabs' Generator (this package's NVlabs-architecture source) holding ``g``'s weights exactly."""
    base, cap = nvlabs_channels(architecture)
    network = nvlabs_networks.Generator(
        z_dim=g.style_dim, c_dim=0, w_dim=g.style_dim, img_resolution=g.size, img_channels=3,
        mapping_kwargs=dict(num_layers=len(g.style) - 1),
        synthesis_kwargs=dict(channel_base=base, channel_max=cap, conv_clamp=architecture["conv_clamp"]))
    ours = dict(g.state_dict())
    ours.setdefault("latent_avg", g.mean_latent()[0])
    shapes = {key: tuple(value.shape) for key, value in network.state_dict().items()}
    state = translate(ours, generator_keys(g.size, len(g.style) - 1), shapes, "the generator", "--to nvlabs")
    network.load_state_dict(state, strict=False)
    return network.eval().requires_grad_(False)


def nvlabs_discriminator(d, architecture):
    base, cap = nvlabs_channels(architecture)
    network = nvlabs_networks.Discriminator(
        c_dim=0, img_resolution=d.size, img_channels=3, channel_base=base, channel_max=cap,
        conv_clamp=architecture["conv_clamp"],
        epilogue_kwargs=dict(mbstd_group_size=d.stddev_group, mbstd_num_channels=d.stddev_feat))
    shapes = {key: tuple(value.shape) for key, value in network.state_dict().items()}
    network.load_state_dict(translate(d.state_dict(), discriminator_keys(d.size), shapes, "the discriminator",
                                      "--to nvlabs"), strict=False)
    return network.eval().requires_grad_(False)


def _reconstruct_persistent_obj(meta):
    """Stands for NVlabs' function of that name in the pickles written here (never called)."""
    raise NotImplementedError


class PersistencePickler(pickle._Pickler):
    """Pickles this package's NVlabs-architecture modules as NVlabs' persistence does: each as a call
    of torch_utils.persistence._reconstruct_persistent_obj on its record, whose module_src is the
    source of models.formats.nvlabs_networks. (The pure-Python pickler: it can name a global that is
    not importable here.)"""

    source = inspect.getsource(nvlabs_networks)

    def reducer_override(self, obj):
        if isinstance(obj, nvlabs_networks.NetworkModule):
            meta = dict(type="class", version=PERSISTENCE_VERSION, module_src=self.source,
                        class_name=type(obj).__name__, state=dict(obj.__dict__))
            return _reconstruct_persistent_obj, (meta,)
        return NotImplemented

    def save_function(self, obj, name=None):
        if obj is not _reconstruct_persistent_obj:
            return self.save_global(obj, name)
        self.save(PERSISTENCE[0])
        self.save(PERSISTENCE[1])
        self.write(pickle.STACK_GLOBAL)
        self.memoize(obj)

    dispatch = {**pickle._Pickler.dispatch, types.FunctionType: save_function}


def write_pickle(networks, file):
    """Pickle ``networks`` (a dict, as NVlabs' training snapshots) to the open ``file``."""
    PersistencePickler(file, protocol=4).dump(networks)
