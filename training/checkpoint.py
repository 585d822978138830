"""Training checkpoints: written atomically with the previous one kept, read back with clear errors;
and the one way the commands open any network file (``load_networks``, ``load_ema_generator``).

A run folder holds ``checkpoint-latest.pt`` and ``checkpoint-previous.pt``. A checkpoint is a dict of
tensors, plain containers and primitives (``torch.load(weights_only=True)`` reads it): the format
marker, the config (a dict), the step, the state dicts of g, d, g_ema and both optimizers, the data
stream's position and every process's RNG states. A converted checkpoint (``training.convert``) has
the marker, the config, step 0, g_ema, and g, d and the optimizer states where its source had them,
and ``source``, a record of where the networks came from.
"""
import contextlib
import glob
import hashlib
import logging
import os
import random
import shutil
import tempfile
import zipfile

import numpy as np
import torch

from training import cli
from models.architecture import DEFAULTS, complete
from training.config import ARCHITECTURE_FIELDS, NETWORK_FIELDS, TrainConfig
from models.formats import FormatError, unreadable
from models.pretrained import Pretrained, built_networks, pretrained_from, read_file
from training.networks import build_discriminator, build_generator

logger = logging.getLogger(__name__)
FORMAT = "pixelfolder-training-checkpoint"
VERSION = 1
LATEST = "checkpoint-latest.pt"
PREVIOUS = "checkpoint-previous.pt"
FIRST_VERSION_FIELDS = ("width", "style_dim", "n_mlp", "channel_multiplier")
REQUIRED_KEYS = ("config", "step", "g", "d", "g_ema", "g_optim", "d_optim", "data", "rng")
CONVERTED_REQUIRED_KEYS = ("config", "step", "g_ema", "source")


def _fsync_directory(directory):
    # Makes the renames durable; some filesystems cannot fsync a directory, and then there is nothing to do.
    with contextlib.suppress(OSError):
        descriptor = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def _write_durably(obj, directory, name, dump=None):
    """``dump(obj, file)`` (torch.save where None) to a temporary file in ``directory``, flushed to disk;
    returns its path."""
    descriptor, temporary = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(descriptor, "wb") as file:
            (dump or torch.save)(obj, file)
            file.flush()
            os.fsync(file.fileno())
    except BaseException:
        os.remove(temporary)
        raise
    return temporary


def save_checkpoint(state, directory):
    """Write ``state`` as ``directory/checkpoint-latest.pt``; the one it replaces becomes
    ``checkpoint-previous.pt``. At every instant the latest checkpoint is a complete file: the new
    one is written in full to a temporary file first, and each file is put in place by a rename."""
    os.makedirs(directory, exist_ok=True)
    latest, previous = os.path.join(directory, LATEST), os.path.join(directory, PREVIOUS)
    temporary = _write_durably({"format": FORMAT, "version": VERSION, **state}, directory, LATEST)
    try:
        if zipfile.is_zipfile(latest):
            # Only a whole file (a torch.save archive with its directory at the end) becomes the previous
            # one: a damaged latest, resumed from its previous, must not push that good one out.
            # A hard link (a copy where links are not supported) keeps the old latest as previous
            # without a moment when latest is missing.
            kept = f"{temporary}.previous"
            try:
                os.link(latest, kept)
            except OSError:
                shutil.copyfile(latest, kept)
            os.replace(kept, previous)
        os.replace(temporary, latest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
        raise
    _fsync_directory(directory)
    return latest


def file_digest(path):
    """The SHA-256 of a file's bytes, as hex."""
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def write_file(obj, path, dump=None):
    """Write ``obj`` to ``path`` with ``dump(obj, file)`` (torch.save where None): in full to a
    temporary file beside it first, then renamed into place, so that ``path`` is never a partly written
    file."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    temporary = _write_durably(obj, directory, os.path.basename(path), dump)
    try:
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
        raise
    _fsync_directory(directory)
    return path


def temporary_files(directory):
    """The temporary files ``save_checkpoint`` writes in ``directory``; any found before a run starts
    are left by a save that was killed."""
    return glob.glob(os.path.join(glob.escape(directory), f".{LATEST}.*.tmp*"))


def remove_stale_temporaries(directory):
    """Delete the temporary files a killed save left in ``directory``; returns their paths."""
    removed = []
    for path in temporary_files(directory):
        with contextlib.suppress(FileNotFoundError):
            size = os.path.getsize(path)
            os.remove(path)
            removed.append((path, size))
    if removed:
        logger.info(f"removed {len(removed)} temporary checkpoint file(s) ({sum(s for _, s in removed) / 2 ** 20:.0f} "
                    f"MiB) left in {directory} by an interrupted save")
    return [path for path, _ in removed]


def checkpoint_file(path):
    """``path`` if it is not a folder; a run folder's latest checkpoint, or its previous one, with a
    warning, where the latest cannot be read."""
    if not os.path.isdir(path):
        return path
    latest, previous = os.path.join(path, LATEST), os.path.join(path, PREVIOUS)
    try:
        load_checkpoint(latest, mmap=True)
    except (ValueError, FileNotFoundError) as error:
        if not os.path.isfile(previous):
            raise
        step = load_checkpoint(previous, mmap=True)["step"]
        logger.warning(f"{error}; using {previous} (step {step}) instead")
        return previous
    return latest


def find_checkpoint(resume, out):
    """The checkpoint file ``--resume`` names: a file, a run folder's latest (see ``checkpoint_file``),
    or for 'auto' the latest in ``out`` if there is one (else None: a fresh start)."""
    if resume == "auto":
        return checkpoint_file(out) if os.path.exists(os.path.join(out, LATEST)) else None
    return checkpoint_file(resume)


def describe(architecture):
    """The networks in words; the settings added since the first version only where they are not the default."""
    architecture = complete(architecture)
    model = architecture["model"] + (f" ({architecture['variant']})" if architecture.get("variant") else "")
    details = ", ".join(f"{name} {architecture[name]}" for name in NETWORK_FIELDS
                        if name not in ("model", "variant", "size")
                        and (name in FIRST_VERSION_FIELDS or architecture[name] != DEFAULTS[name]))
    return f"{model} at {architecture['size']}x{architecture['size']} px ({details})"


def way_back(path):
    """Where to turn when ``path``, a run's latest checkpoint, cannot be read."""
    previous = os.path.join(os.path.dirname(path), PREVIOUS)
    if os.path.basename(path) == LATEST and os.path.isfile(previous):
        return f"; the checkpoint before it is {previous}"
    return ""


def read_checkpoint(path, mmap=False):
    """Whatever ``torch.load`` finds at ``path`` (weights only), on the CPU (``mmap``: tensors read
    when used); ValueError naming the path for a file that is truncated, corrupt or no checkpoint, and
    the previous checkpoint beside a damaged latest one."""
    if os.path.isdir(path):
        raise ValueError(f"checkpoint {path} is a folder, not a checkpoint file")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and zipfile.is_zipfile(path))
    except Exception as error:  # torch.load raises many types for a damaged file
        raise FormatError(f"{unreadable(path, cli.reason(error))}{way_back(path)}") from error


def is_training_checkpoint(checkpoint):
    """Whether a loaded checkpoint claims to be one of ours (``check_checkpoint`` says if it is whole)."""
    return isinstance(checkpoint, dict) and "format" in checkpoint


def check_checkpoint(checkpoint, path, architecture=None):
    """ValueError naming ``path`` unless ``checkpoint`` is a whole training checkpoint of this version
    (and, when ``architecture`` (TrainConfig.architecture()) is given, of those networks)."""
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise ValueError(f"checkpoint {path} is not a training checkpoint of this package (it has no "
                         f"'format': '{FORMAT}' entry)")
    if checkpoint.get("version") != VERSION:
        raise ValueError(f"checkpoint {path} has format version {checkpoint.get('version')}; this version of "
                         f"training reads version {VERSION}")
    required = CONVERTED_REQUIRED_KEYS if "source" in checkpoint else REQUIRED_KEYS
    missing = [key for key in required if key not in checkpoint]
    if missing:
        raise ValueError(f"checkpoint {path} is incomplete: it lacks {', '.join(missing)}")
    if architecture is not None:
        saved = {name: complete(checkpoint["config"])[name] for name in ARCHITECTURE_FIELDS}
        architecture = {name: architecture[name] for name in ARCHITECTURE_FIELDS}
        if saved != architecture:
            raise ValueError(f"checkpoint {path} holds {describe(saved)}, but this run builds "
                             f"{describe(architecture)}")


def load_checkpoint(path, architecture=None, mmap=False):
    """The training checkpoint at ``path``, on the CPU, checked (see ``read_checkpoint`` and
    ``check_checkpoint`` for the errors)."""
    checkpoint = read_checkpoint(path, mmap)
    check_checkpoint(checkpoint, path, architecture)
    return checkpoint


def networks_of(checkpoint):
    """The networks of a loaded (and checked) checkpoint of ours, as models.pretrained.Pretrained."""
    config = TrainConfig.from_dict(checkpoint["config"])
    networks = {}
    for name, build in (("g", build_generator), ("g_ema", build_generator), ("d", build_discriminator)):
        if checkpoint.get(name) is not None:
            networks[name] = build(config)
            networks[name].load_state_dict(checkpoint[name])
    optimizers = {name: checkpoint[name] for name in ("g_optim", "d_optim") if checkpoint.get(name) is not None}
    kind = "converted checkpoint of this package" if "source" in checkpoint else "training checkpoint of this package"
    return Pretrained(kind, config.architecture(), optimizers=optimizers, details=checkpoint.get("source", {}),
                      **networks)


def load_networks(path, size=None):
    """The networks of any file ``training.convert`` reads: our training or converted checkpoints (a run
    folder: its latest), official PixelFolder checkpoints, rosinality and CIPS checkpoints, NVlabs
    pickles; as models.pretrained.Pretrained. ``size``: the resolution expected where the file's is
    checked against one. ValueError (FormatError) or FileNotFoundError naming the file."""
    path = checkpoint_file(os.fspath(path))
    try:
        kind, content = read_file(path)
    except FormatError as error:
        raise FormatError(f"{error}{way_back(path)}") from None
    if kind == "torch" and is_training_checkpoint(content):
        check_checkpoint(content, path)
        return built_networks(lambda: networks_of(content), path, size)
    return pretrained_from(kind, content, path, size)


def load_ema_generator(path, size=None, device="cpu"):
    """The EMA generator (else the generator) of any file ``load_networks`` reads, in eval mode on
    ``device``: what training.generate, training.evaluate and training.export run."""
    pretrained = load_networks(path, size)
    generator = pretrained.g_ema if pretrained.g_ema is not None else pretrained.g
    return generator.to(device).eval()


def capture_rng_state(device):
    """This process's RNG states (python, numpy, torch, and CUDA on a GPU) as tensors and lists."""
    version, python_state, gauss = random.getstate()
    _, numpy_keys, position, has_gauss, cached_gaussian = np.random.get_state()
    state = {"python": [version, list(python_state), gauss],
             "numpy": {"keys": torch.from_numpy(numpy_keys.astype(np.int64)), "position": int(position),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
             "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng_state(state, device):
    version, python_state, gauss = state["python"]
    random.setstate((version, tuple(python_state), gauss))
    numpy_state = state["numpy"]
    np.random.set_state(("MT19937", numpy_state["keys"].numpy().astype(np.uint32), numpy_state["position"],
                         numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
