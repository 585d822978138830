"""Training images as (3, size, size) float tensors in [-1, 1]: a folder of images, a zip of images (as
StyleGAN2-ADA's dataset_tool writes them), an LMDB, the built-in procedural shapes or scikit-learn's
handwritten digits (training/digits.py); and an endless, resumable stream of batches over them.

Images smaller than the training size are an error naming the file, never upscaled: upscaled
images would teach the generator blur. A folder or zip is scanned at start-up by reading each
image's header: files Pillow cannot identify (and zip members that cannot be read) are skipped and
counted. Damage further into a file shows only when it is decoded: the next readable image stands
in for it, with one warning naming the file.
"""
import io
import itertools
import logging
import os
import signal
import zipfile
import zlib
from pathlib import Path

import lmdb
import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from training.digits import DigitsDataset
from training.images import from_uint8, read_image

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
# What Pillow raises for a file it cannot read as an image, and zipfile and zlib for a damaged member.
UNREADABLE_IMAGE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError, zipfile.BadZipFile,
                           zlib.error, EOFError)


def is_zip(path):
    return os.path.isfile(path) and zipfile.is_zipfile(path)


def _has_image_extension(name):
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _no_images_error(root):
    return ValueError(f"data folder {root} holds no images ({', '.join(IMAGE_EXTENSIONS)}, searched recursively)")


def list_image_files(root):
    """The image files under the folder ``root``, recursively, sorted."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"data folder {root} does not exist or is not a folder (nor a zip file)")
    files = sorted(str(path) for path in Path(root).rglob("*") if _has_image_extension(path.name) and path.is_file())
    if not files:
        raise _no_images_error(root)
    return files


def image_names(root):
    """The images of a folder (searched recursively) or a zip file, as sorted names relative to it. A
    zip's other members (StyleGAN2-ADA's dataset.json of labels) are left out."""
    if not is_zip(root):
        return [os.path.relpath(path, root) for path in list_image_files(root)]
    names = sorted(info.filename for info in per_process(zipfile.ZipFile, root).infolist()
                   if not info.is_dir() and _has_image_extension(info.filename))
    if not names:
        raise _no_images_error(root)
    return names


_opened = {}  # files opened once per process (zip archives, LMDBs): loader workers open their own


def per_process(opener, path):
    """``opener(path)``, opened once in this process."""
    key = (opener, os.getpid(), os.path.realpath(path))
    if key not in _opened:
        _opened[key] = opener(path)
    return _opened[key]


TRAINING = ("the training size", "train at a smaller --size")  # what a size is, and how to choose a smaller one


def too_small_error(name, width, height, size, others=0, purpose=TRAINING):
    more = f" (and {others} more image(s) like it)" if others else ""
    wanted, smaller = purpose
    return ValueError(f"{name} is {width}x{height} px, smaller than {wanted} {size}x{size}{more}: "
                      f"remove such images or {smaller} (images are never upscaled)")


def probe_image(source):
    """(width, height) from an image's header (a path or a file object); raises one of
    UNREADABLE_IMAGE_ERRORS for a file Pillow cannot identify."""
    with Image.open(source) as image:
        return image.size


class StandInImages(Dataset):
    """Encoded images, as floats in [-1, 1] (``pixels``: as uint8). One that fails to decode is warned
    about once, for all the loader's worker processes, and the next one that decodes stands in for it:
    one damaged file must not stop a run of days. A subclass gives ``decode(position)`` (uint8 pixels),
    ``image_name(position)`` and ``source`` (for messages), and calls ``track_warnings()`` once its
    length is known."""

    def track_warnings(self):
        # Which images were warned about, in shared memory: the loader's workers see each other's.
        self.warned = torch.zeros(len(self), dtype=torch.bool).share_memory_()

    def pixels(self, index):
        for offset in range(len(self)):
            position = (index + offset) % len(self)
            try:
                return self.decode(position)
            except UNREADABLE_IMAGE_ERRORS as error:
                if not self.warned[position]:
                    self.warned[position] = True
                    logger.warning(f"{self.image_name(position)}: cannot decode the image ({error}); the next "
                                   f"image stands in for it")
        raise OSError(f"none of the {len(self)} images of {self.source} can be decoded")

    def __getitem__(self, index):
        return from_uint8(self.pixels(index))


class ImageFolderDataset(StandInImages):
    """The images under a folder or in a zip file, read in place (or the ``files`` given, names
    relative to it), centre-cropped and resized to ``size`` (see ``StandInImages``); ``purpose`` words
    the error for images smaller than ``size`` (see ``too_small_error``). ``skipped`` lists the files
    whose header cannot be read as (path, reason). A file's path in messages is root/name, also in a zip."""

    def __init__(self, root, size, files=None, purpose=TRAINING):
        self.root, self.size, self.in_zip = root, size, is_zip(root)
        dimensions, self.skipped = {}, []
        for name in image_names(root) if files is None else files:
            try:
                dimensions[name] = probe_image(self.open(name))
            except UNREADABLE_IMAGE_ERRORS as error:
                self.skipped.append((os.path.join(root, name), str(error)))
        too_small = [(os.path.join(root, name), *dims) for name, dims in dimensions.items() if min(dims) < size]
        if too_small:
            raise too_small_error(*too_small[0], size, others=len(too_small) - 1, purpose=purpose)
        self.files = list(dimensions)
        if not self.files:
            raise ValueError(f"data folder {root}: none of its {len(self.skipped)} image files can be read "
                             f"(first: {self.skipped[0][0]}: {self.skipped[0][1]})")
        self.source = root
        self.track_warnings()

    def __len__(self):
        return len(self.files)

    def open(self, name):
        """The image file ``name`` (relative to the root): a path, or a zip member opened for reading."""
        return per_process(zipfile.ZipFile, self.root).open(name) if self.in_zip else os.path.join(self.root, name)

    def decode(self, position):
        return read_image(self.open(self.files[position]), self.size)

    def image_name(self, position):
        return os.path.join(self.root, self.files[position])

    def report_skipped(self):
        """Warn about the files skipped at start-up (if any), naming the first few."""
        if self.skipped:
            listed = "; ".join(f"{path} ({reason})" for path, reason in self.skipped[:5])
            logger.warning(f"skipped {len(self.skipped)} unreadable image file(s): {listed}"
                           + (f"; and {len(self.skipped) - 5} more" if len(self.skipped) > 5 else ""))


def lmdb_key(index, prefix=""):
    return f"{prefix}{str(index).zfill(7)}".encode("utf-8")


def open_lmdb(path):
    """The read-only environment of the LMDB at ``path`` in this process (py-lmdb opens a database once
    per process)."""
    return per_process(_read_only_lmdb, path)


def _read_only_lmdb(path):
    return lmdb.open(path, readonly=True, lock=False, readahead=False, meminit=False)


def find_lmdb(path, size):
    """The LMDB folder that holds the images at ``size``: ``path/<size>`` (the official PixelFolder
    layout, written by training.prepare_data) or ``path`` itself; None if neither is an LMDB."""
    for folder in (os.path.join(path, str(size)), path):
        if os.path.isfile(os.path.join(folder, "data.mdb")):
            return folder
    return None


class LMDBDataset(StandInImages):
    """Images stored as encoded files (PNG/JPEG) in an LMDB, with the count under b"length" (a decimal
    string), decoded as ``StandInImages`` says. Keys are the 7-digit zero-padded index, as the official
    PixelFolder writes them (one database per size), or "<size>-<index>" (rosinality's StyleGAN2: all
    sizes in one database)."""

    def __init__(self, path, size):
        self.path, self.size = find_lmdb(path, size), size
        if self.path is None:
            raise FileNotFoundError(f"{path} is not an LMDB dataset (no data.mdb in it or in {path}/{size})")
        with open_lmdb(self.path).begin() as txn:
            length = txn.get(b"length")
            if length is None:
                raise ValueError(f"LMDB {self.path} has no b'length' key: not a dataset written by "
                                 f"training.prepare_data or the official prepare_data.py")
            self.length = int(length.decode("utf-8"))
            self.prefix = next((prefix for prefix in ("", f"{size}-") if txn.get(lmdb_key(0, prefix)) is not None),
                               None)
            if self.length < 1 or self.prefix is None:
                raise ValueError(f"LMDB {self.path} holds no images of size {size} (its length is {self.length}; "
                                 f"expected keys {lmdb_key(0)!r} or {lmdb_key(0, f'{size}-')!r})")
            # All records share a size: the first tells whether the database was made for a smaller one.
            first = self.image_name(0)
            try:
                width, height = probe_image(io.BytesIO(txn.get(lmdb_key(0, self.prefix))))
            except UNREADABLE_IMAGE_ERRORS as error:
                raise OSError(f"{first}: cannot decode the image ({error})") from error
            if min(width, height) < size:
                raise too_small_error(first, width, height, size)
        self.source = f"LMDB {self.path}"
        self.track_warnings()

    def __len__(self):
        return self.length

    def decode(self, position):
        with open_lmdb(self.path).begin() as txn:
            data = txn.get(lmdb_key(position, self.prefix))
        if data is None:
            raise ValueError(f"no such record, although the database's length is {self.length}")
        return read_image(io.BytesIO(data), self.size)

    def image_name(self, position):
        return f"LMDB {self.path} record {lmdb_key(position, self.prefix).decode()}"


class ProceduralShapesDataset(Dataset):
    """``length`` images of one to three ellipses, rectangles and triangles of random colours on a
    plain background, drawn at 4x and downsampled (antialiased). Image ``i`` depends only on
    (seed, i), at any size."""

    SUPERSAMPLING = 4

    def __init__(self, size, length=10000, seed=0):
        self.size, self.length, self.seed = size, length, seed

    def __len__(self):
        return self.length

    def __getitem__(self, index):
        rng = np.random.default_rng([self.seed, index])
        side = self.size * self.SUPERSAMPLING
        canvas = Image.new("RGB", (side, side), tuple(int(c) for c in rng.integers(0, 256, 3)))
        draw = ImageDraw.Draw(canvas)
        for _ in range(rng.integers(1, 4)):
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            cx, cy = rng.uniform(0.2, 0.8, 2) * side
            rx, ry = rng.uniform(0.1, 0.3, 2) * side
            shape = rng.integers(3)
            if shape == 0:
                draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=colour)
            elif shape == 1:
                draw.rectangle((cx - rx, cy - ry, cx + rx, cy + ry), fill=colour)
            else:
                draw.polygon([(cx, cy - ry), (cx - rx, cy + ry), (cx + rx, cy + ry)], fill=colour)
        pixels = np.asarray(canvas.resize((self.size, self.size), Image.Resampling.LANCZOS))
        return from_uint8(torch.from_numpy(pixels.copy()).permute(2, 0, 1))


class MirroredDataset(Dataset):
    """Every image of ``dataset`` as is, then all of them mirrored left-right: the recipe's
    horizontal flips, decided by the index rather than a random draw so that resume is exact."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return 2 * len(self.dataset)

    def __getitem__(self, index):
        image = self.dataset[index % len(self.dataset)]
        return image.flip(-1) if index >= len(self.dataset) else image


def make_dataset(source, size, hflip=True, seed=0, procedural_images=10000):
    """The dataset ``source`` names: 'procedural', 'digits', an LMDB folder, or a folder or zip of images."""
    if source == "procedural":
        dataset = ProceduralShapesDataset(size, procedural_images, seed)
    elif source == "digits":
        dataset = DigitsDataset(size)
    elif find_lmdb(source, size) is not None:
        dataset = LMDBDataset(source, size)
    else:
        dataset = ImageFolderDataset(source, size)
    return MirroredDataset(dataset) if hflip else dataset


def ignore_stop_signals(worker_id=None):
    """In a loader worker: Ctrl-C and SIGTERM are for the training process, which saves a checkpoint
    before it stops; a worker killed by them would end the run with a loader error first. Workers
    still exit with the training process (the loader watches its parent)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class _SkippingSampler(DistributedSampler):
    """A DistributedSampler that starts its epoch ``skip`` indices in (to resume mid-epoch)."""

    skip = 0

    def __iter__(self):
        return itertools.islice(super().__iter__(), self.skip, None)

    def __len__(self):
        return super().__len__() - self.skip


class BatchStream:
    """Endless batches for one process: a DistributedSampler reshuffled (seeded) every epoch and a
    DataLoader that drops the last partial batch. ``state_dict`` is the position, (epoch, batch in
    epoch), from which ``load_state_dict`` continues with the very same batches."""

    def __init__(self, dataset, batch_size, rank=0, world_size=1, seed=0, num_workers=0, pin_memory=False):
        self.sampler = _SkippingSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
        self.batch_size = batch_size
        self.batches_per_epoch = self.sampler.num_samples // batch_size
        if self.batches_per_epoch == 0:
            raise ValueError(f"the dataset has {len(dataset)} images (mirrors included), fewer than one batch of "
                             f"{batch_size} for each of {world_size} processes")
        # The loader's own generator seeds its workers: the global RNG, which training draws from,
        # must not depend on when loader iterators are made. Persistent workers outlive epochs (the
        # sampler runs in this process, so its epoch and skip still apply).
        self.loader = DataLoader(dataset, batch_size=batch_size, sampler=self.sampler, num_workers=num_workers,
                                 pin_memory=pin_memory, drop_last=True, persistent_workers=num_workers > 0,
                                 generator=torch.Generator().manual_seed(seed), worker_init_fn=ignore_stop_signals)
        self.epoch, self.batch = 0, 0
        self._iterator = None

    def __iter__(self):
        return self

    def __next__(self):
        if self._iterator is None:
            self.sampler.set_epoch(self.epoch)
            self.sampler.skip = self.batch * self.batch_size
            self._iterator = iter(self.loader)
        images = next(self._iterator)
        self.batch += 1
        if self.batch == self.batches_per_epoch:
            self.epoch, self.batch, self._iterator = self.epoch + 1, 0, None
        return images

    def state_dict(self):
        return {"epoch": self.epoch, "batch": self.batch}

    def load_state_dict(self, state):
        # A different world size or batch changes the epoch length: continue from the same epoch.
        self.epoch, self.batch = state["epoch"], state["batch"] % self.batches_per_epoch
        self._iterator = None
