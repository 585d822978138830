"""Real handwritten digits on every machine: scikit-learn's 1,797 digits (8x8 px, 17 grey levels 0-16,
shipped inside its wheel, so nothing is downloaded) as a training dataset, and a small CNN classifier
trained on them whose penultimate-layer features give a digits FID and KID (the MNIST-FID practice
of the GAN literature; not comparable with Inception FIDs).

scikit-learn is an optional dependency, in the ``digits`` extra: ``pip install '.[digits]'``.

Up-sampling: an 8x8 digit is scaled to the training size with bicubic interpolation (PyTorch's,
align_corners=False), clamped to the grey range and rounded to 8 bits. Bicubic keeps the strokes
sharper than bilinear and, unlike nearest-neighbour, puts no 4x4 (or 2x2) block grid into the
images for a generator to learn. Ink is bright on a black background, as in MNIST; the grey is
replicated to RGB.
"""
import contextlib
import functools
import hashlib
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from training import extras
from training.images import from_uint8

GREY_LEVELS = 16  # the digits' values run from 0 to 16
CLASSIFIER_INPUT_SIZE = 32
FEATURE_DIM = 128
DEFAULT_CACHE_DIR = os.path.join(os.path.expanduser("~"), ".cache", "pixelfolder", "digits_classifier")

# How the classifier is trained; its cache file is named by a hash of this, the architecture, the data
# and the torch version (other versions may compute other bits).
RECIPE = {"held_out": 360, "split_seed": 0, "epochs": 30, "batch": 64, "lr": 0.001, "max_shift": 2, "seed": 0,
          "threads": 1}


@functools.lru_cache(maxsize=1)
def load_digit_arrays():
    """(images (1797, 8, 8) float64 in [0, 16], labels (1797,) int) from scikit-learn; ValueError
    naming the extra where scikit-learn is not installed."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ValueError("the digits dataset comes with scikit-learn, which is not installed: "
                         f"{extras.install_command('digits')}") from None
    digits = load_digits()
    return digits.images, digits.target


def upsampled_digits(size):
    """All digits as (1797, 3, size, size) uint8 (see the module's docstring for how)."""
    images = torch.from_numpy(load_digit_arrays()[0]).float()[:, None] / GREY_LEVELS
    if size != images.shape[-1]:
        images = F.interpolate(images, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
    return (images * 255).round().to(torch.uint8).expand(-1, 3, -1, -1).contiguous()


class DigitsDataset(torch.utils.data.Dataset):
    """scikit-learn's 1,797 handwritten digits at ``size`` x ``size`` as (3, size, size) floats in
    [-1, 1] (``pixels``: as uint8), in scikit-learn's order; ``labels`` holds their classes."""

    def __init__(self, size):
        self.size = size
        self.images = upsampled_digits(size)
        self.labels = torch.from_numpy(load_digit_arrays()[1]).long()

    def __len__(self):
        return len(self.images)

    def pixels(self, index):
        return self.images[index]

    def __getitem__(self, index):
        return from_uint8(self.images[index])


class DigitsClassifier(nn.Module):
    """(N, 3, H, W) images in [-1, 1], any H and W -> (N, 128) penultimate-layer features (the
    digits FID's), as FIDInceptionV3 gives its pool features; ``logits`` adds the 10-class layer.
    Images are made grey (the channel mean) and resized bilinearly (antialiased) to 32x32 first."""

    def __init__(self):
        super().__init__()
        # A strided first layer sees every pixel at 32x32 and makes the rest cheap (16x16, 8x8, 4x4).
        self.body = nn.Sequential(
            nn.Conv2d(1, 16, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * 4 * 4, FEATURE_DIM), nn.ReLU())
        self.classifier = nn.Linear(FEATURE_DIM, 10)

    def forward(self, images):
        grey = images.mean(dim=1, keepdim=True)
        if grey.shape[-2:] != (CLASSIFIER_INPUT_SIZE, CLASSIFIER_INPUT_SIZE):
            grey = F.interpolate(grey, size=(CLASSIFIER_INPUT_SIZE, CLASSIFIER_INPUT_SIZE), mode="bilinear",
                                 align_corners=False, antialias=True)
        return self.body(grey)

    def logits(self, images):
        return self.classifier(self(images))


def held_out_split(recipe):
    """(training indices, held-out indices): a fixed random permutation of the digits."""
    order = np.random.default_rng(recipe["split_seed"]).permutation(len(load_digit_arrays()[1]))
    return torch.from_numpy(order[recipe["held_out"]:]), torch.from_numpy(order[:recipe["held_out"]])


def recipe_digest(recipe):
    """A hash of everything that decides the trained weights."""
    images, labels = load_digit_arrays()
    data = hashlib.sha256(np.ascontiguousarray(images).tobytes() + np.ascontiguousarray(labels).tobytes())
    key = json.dumps({"recipe": recipe, "architecture": repr(DigitsClassifier()), "data": data.hexdigest(),
                      "torch": torch.__version__}, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


@contextlib.contextmanager
def deterministic(seed, threads):
    """Seeded (without touching the caller's random state), deterministic algorithms, a fixed number of
    threads (CPU reductions may split differently with another count; one thread is also the fastest
    for this small network on a busy CPU); all restored on exit."""
    threads_before, deterministic_before = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(True)
        try:
            yield
        finally:
            torch.set_num_threads(threads_before)
            torch.use_deterministic_algorithms(deterministic_before)


def shifted(images, max_shift, generator):
    """Each image moved by its own random offset of up to ``max_shift`` pixels in x and y (the
    background, -1, fills in): generated digits are not all centred the way the real ones are."""
    size = images.shape[-1]
    padded = F.pad(images, [max_shift] * 4, value=-1)
    offsets = torch.randint(0, 2 * max_shift + 1, (len(images), 2), generator=generator).tolist()
    return torch.stack([image[:, dy:dy + size, dx:dx + size] for image, (dy, dx) in zip(padded, offsets)])


def accuracy(classifier, images, labels):
    with torch.no_grad():
        return float((classifier.logits(images).argmax(1) == labels).float().mean())


def train_digits_classifier(recipe=RECIPE):
    """(DigitsClassifier in eval mode on the CPU, held-out accuracy), trained by ``recipe`` with Adam on
    the cross-entropy, on the training part of the fixed split, deterministically."""
    dataset = DigitsDataset(CLASSIFIER_INPUT_SIZE)
    images, labels = from_uint8(dataset.images[:, :1]), dataset.labels
    train, held_out = held_out_split(recipe)
    with deterministic(recipe["seed"], recipe["threads"]):
        classifier = DigitsClassifier()
        optimizer = torch.optim.Adam(classifier.parameters(), lr=recipe["lr"])
        rng = torch.Generator().manual_seed(recipe["seed"])
        for _ in range(recipe["epochs"]):
            for batch in train[torch.randperm(len(train), generator=rng)].split(recipe["batch"]):
                loss = F.cross_entropy(classifier.logits(shifted(images[batch], recipe["max_shift"], rng)),
                                       labels[batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        classifier.eval()
        return classifier, accuracy(classifier, images[held_out], labels[held_out])


def classifier_path(cache_dir, recipe=RECIPE):
    return os.path.join(cache_dir, f"digits-classifier-{recipe_digest(recipe)}.pt")


def load_digits_classifier(cache_dir=DEFAULT_CACHE_DIR, device="cpu", recipe=RECIPE):
    """The DigitsClassifier of ``recipe`` in eval mode on ``device``: from its cache file in
    ``cache_dir``, or trained (about a minute on a CPU; its held-out accuracy is printed) and cached.
    ``held_out_accuracy`` and ``digest`` (the recipe's hash) are set on it."""
    path = classifier_path(cache_dir, recipe)
    if os.path.isfile(path):
        saved = torch.load(path, map_location="cpu", weights_only=True)
        classifier = DigitsClassifier()
        classifier.load_state_dict(saved["state_dict"])
        held_out_accuracy = saved["held_out_accuracy"]
    else:
        print(f"training the digits classifier (once; cached in {cache_dir})", file=sys.stderr)
        classifier, held_out_accuracy = train_digits_classifier(recipe)
        print(f"digits classifier: held-out accuracy {held_out_accuracy:.2%} on {recipe['held_out']} digits",
              file=sys.stderr)
        os.makedirs(cache_dir, exist_ok=True)
        torch.save({"state_dict": classifier.state_dict(), "held_out_accuracy": held_out_accuracy, "recipe": recipe},
                   path + ".partial")
        os.replace(path + ".partial", path)  # an interrupted run leaves no partial cache behind
    classifier.held_out_accuracy, classifier.digest = held_out_accuracy, recipe_digest(recipe)
    return classifier.eval().to(device)
