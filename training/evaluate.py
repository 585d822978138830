"""FID, KID and precision/recall (k = 3) of a generator against a dataset, on the 2048-d pool
features of the FID Inception-v3 (training/inception.py), or with ``--features digits`` on the 128-d
penultimate features of a small classifier of handwritten digits (training/digits.py: the
MNIST-FID practice; its values are not comparable with Inception FIDs).

    python -m training.evaluate CHECKPOINT --dataset FOLDER_OR_STATISTICS [--num-samples 50000]
                                [--batch-size 50] [--truncation 1.0] [--features inception|digits]
                                [--inception PATH] [--cache-dir DIR] [--resolution R] [--workers N]
                                [--kid-subsets 100] [--kid-subset-size 1000] [--size N]
                                [--device cpu|cuda]

--dataset is a folder of images (searched recursively for png, jpg, jpeg and webp) or a zip of
them, read at the generator's resolution unless --resolution says otherwise; 'digits' (the digits
dataset of training/digits.py); or a statistics file: an .npz with "mu" and "sigma" (and
"features", for KID and precision/recall), such as the cache this command writes. A dataset's
statistics are cached in --cache-dir under a name keyed by its path, its file list, the
resolution, N and the feature network (the Inception weights' digest, the digits classifier's
recipe), and reused by later runs with the same ones. The digits classifier is trained on first
use (about a minute on a CPU) and cached in the same folder.

N images are generated (seeds 0 to N-1, see training/generate.py) and quantized to 8 bits like the
real ones; where the folder holds more than N images, N of them are drawn at random (fixed seed).
The results are printed as one JSON object.
"""
from training import extras

if __name__ == "__main__":
    extras.require("train")  # before the imports that need it

import hashlib
import json
import logging
import math
import os

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from training import cli
from training.checkpoint import file_digest
from training.data import ImageFolderDataset, image_names
from training.digits import DigitsDataset, load_digits_classifier
from training.generate import load_generator, sample_batches
from training.images import from_uint8, to_uint8
from training.inception import WEIGHTS_ENV, load_inception, weights_path
from training.metrics import frechet_distance, kernel_inception_distance, mean_and_covariance, precision_recall

DEFAULT_CACHE_DIR = os.path.join(os.path.expanduser("~"), ".cache", "pixelfolder", "dataset_statistics")
PRECISION_RECALL_K = 3
# What an image smaller than the resolution is, and how to evaluate at a smaller one (training.data.too_small_error).
EVALUATION = ("the evaluation resolution", "pass a smaller --resolution")
DIGITS = "digits"  # --dataset and --features name the digits of training/digits.py
FEATURES = ("inception", DIGITS)


class ImageFiles(ImageFolderDataset):
    """(3, resolution, resolution) uint8 images from files relative to ``folder`` (or members of a zip):
    files whose header cannot be read are skipped, and one that fails to decode further in is replaced
    by the next, with a warning, as in training."""

    def __init__(self, folder, files, resolution):
        super().__init__(folder, resolution, files, purpose=EVALUATION)

    __getitem__ = ImageFolderDataset.pixels


class DigitImages(DigitsDataset):
    """The digits as (3, resolution, resolution) uint8 images."""

    __getitem__ = DigitsDataset.pixels


def feature_network(features, inception_path=None, cache_dir=DEFAULT_CACHE_DIR, device="cpu"):
    """(network, digest): the network that turns images in [-1, 1] into the feature vectors of the
    metrics ('inception' or 'digits'), and a digest of its weights that keys the statistics cache."""
    if features == DIGITS:
        classifier = load_digits_classifier(cache_dir, device)
        return classifier, classifier.digest
    inception_path = weights_path(inception_path)
    return load_inception(inception_path, device), file_digest(inception_path)


@torch.inference_mode()
def image_features(network, batches):
    """(N, D) float32 features of batches of uint8 images (B, 3, H, W), by a feature network."""
    device = next(network.parameters()).device
    return torch.cat([network(from_uint8(batch.to(device))).cpu() for batch in batches]).numpy()


def generated_features(generator, network, num_samples, batch_size, truncation=1.0):
    """Features of the images of seeds 0 to ``num_samples`` - 1, quantized to 8 bits as a PNG would be."""
    batches = (to_uint8(images) for images, _ in sample_batches(generator, range(num_samples), batch_size, truncation))
    return image_features(network, tqdm(batches, "generated", total=math.ceil(num_samples / batch_size),
                                        disable=None, leave=False))


def save_statistics(path, mu, sigma, features):
    """mu, sigma and the features as an .npz at ``path``, through a temporary file so that an
    interrupted run leaves no partial cache behind."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".partial", "wb") as file:
        np.savez(file, mu=np.asarray(mu), sigma=np.asarray(sigma), features=features)
    os.replace(path + ".partial", path)


def load_statistics(path):
    """{"mu", "sigma", "features"} from an .npz; "features" is None where the file has none."""
    try:
        data = np.load(path)
    except Exception as error:  # numpy raises several types for a file that is not an .npz
        raise ValueError(f"evaluate: {path!r} is not a statistics file (an .npz with arrays 'mu' and 'sigma'): "
                         f"{type(error).__name__}: {error}") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ValueError(f"evaluate: {path!r} is not a statistics file (an .npz with arrays 'mu' and 'sigma'): "
                         f"it holds a single array")
    with data:
        if not {"mu", "sigma"} <= set(data.files):
            raise ValueError(f"evaluate: {path!r} is not a statistics file: it needs arrays 'mu' and 'sigma', "
                             f"has {sorted(data.files)}")
        return {"mu": data["mu"], "sigma": data["sigma"],
                "features": data["features"] if "features" in data.files else None}


def statistics_cache_path(folder, files, resolution, num_samples, network_digest, cache_dir):
    source = folder if folder == DIGITS else os.path.abspath(folder)
    key = json.dumps({"folder": source, "files": files, "resolution": resolution,
                      "num_samples": num_samples, "features": network_digest})
    name = f"{os.path.basename(source)}-{resolution}px-{num_samples}"
    return os.path.join(cache_dir, f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz")


def dataset_statistics(dataset, resolution, num_samples, network, network_digest, cache_dir=DEFAULT_CACHE_DIR,
                       batch_size=50, workers=0):
    """({"mu", "sigma", "features"}, the file they come from) for a statistics file, or for 'digits', an
    image folder or a zip (from their cache, computed on the first call), with the feature network
    ``network`` (``network_digest`` keys the cache)."""
    if os.path.isfile(dataset) and not dataset.lower().endswith(".zip"):
        return load_statistics(dataset), dataset
    files = None if dataset == DIGITS else image_names(dataset)
    path = statistics_cache_path(dataset, files, resolution, num_samples, network_digest, cache_dir)
    if os.path.isfile(path):
        return load_statistics(path), path
    if dataset == DIGITS:
        images = DigitImages(resolution)
        if len(images) > num_samples:
            images = torch.utils.data.Subset(images, random_indices(len(images), num_samples))
    else:
        if len(files) > num_samples:
            files = [files[i] for i in random_indices(len(files), num_samples)]
        images = ImageFiles(dataset, files, resolution)
        images.report_skipped()
    loader = DataLoader(images, batch_size=batch_size, num_workers=workers)
    features = image_features(network, tqdm(loader, "dataset", disable=None, leave=False))
    mu, sigma = mean_and_covariance(features)
    save_statistics(path, mu, sigma, features)
    return {"mu": mu.numpy(), "sigma": sigma.numpy(), "features": features}, path


def random_indices(count, num_samples):
    """``num_samples`` of ``count`` indices drawn at random without replacement (fixed seed), sorted."""
    return sorted(np.random.default_rng(0).choice(count, num_samples, replace=False).tolist())


def equal_sized(real, fake, seed=0):
    """Random subsets of both sets, of the smaller one's size: precision and recall depend on set sizes."""
    size = min(len(real), len(fake))
    rng = np.random.default_rng(seed)
    return [features if len(features) == size else features[np.sort(rng.choice(len(features), size, replace=False))]
            for features in (real, fake)]


def evaluate(generator, dataset, inception_path=None, num_samples=50000, batch_size=50, truncation=1.0,
             resolution=None, cache_dir=DEFAULT_CACHE_DIR, workers=0, kid_subsets=100, kid_subset_size=1000,
             features="inception"):
    """The metrics of ``generator`` (on its device) against ``dataset`` (an image folder or zip, 'digits'
    or a statistics file) on the ``features`` of FEATURES, as a dict. KID and precision/recall are None
    where the statistics hold no features."""
    device = next(generator.parameters()).device
    network, digest = feature_network(features, inception_path, cache_dir, device)
    resolution = resolution or generator.size
    real, statistics_path = dataset_statistics(dataset, resolution, num_samples, network, digest, cache_dir,
                                               batch_size, workers)
    fake = generated_features(generator, network, num_samples, batch_size, truncation)
    fake_mu, fake_sigma = mean_and_covariance(fake)
    results = {"fid": frechet_distance(real["mu"], real["sigma"], fake_mu, fake_sigma),
               "kid": None, "kid_std": None, "precision": None, "recall": None,
               "num_generated": len(fake), "num_real": None, "truncation": truncation, "resolution": resolution,
               "features": features, "statistics": statistics_path}
    if real["features"] is not None:
        results["num_real"] = len(real["features"])
        results["kid"], results["kid_std"] = kernel_inception_distance(real["features"], fake, kid_subsets,
                                                                       kid_subset_size, device=device)
        results["precision"], results["recall"] = precision_recall(*equal_sized(real["features"], fake),
                                                                   k=PRECISION_RECALL_K, device=device)
    return results


def dataset_argument(text):
    return text if text == DIGITS else cli.existing_path(text)


def parse_args(argv=None):
    parser = cli.CommandLineParser(prog="python -m training.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="our training or converted checkpoint, a run folder (its latest "
                                           "checkpoint), or any network file training.convert reads")
    parser.add_argument("--dataset", required=True, type=dataset_argument,
                        help=f"an image folder or zip, '{DIGITS}', or an .npz of statistics")
    parser.add_argument("--num-samples", type=cli.integer(PRECISION_RECALL_K + 1), default=50000,
                        help=f"N, more than k = {PRECISION_RECALL_K} for precision/recall (default: %(default)s)")
    parser.add_argument("--batch-size", type=cli.integer(1), default=50,
                        help="for the generator and Inception (default: %(default)s)")
    parser.add_argument("--truncation", type=cli.number(), default=1.0, help="psi (default: 1, no truncation)")
    parser.add_argument("--features", choices=FEATURES, default="inception",
                        help="the feature network: the FID Inception-v3, or the digits classifier for the digits "
                             "FID (default: %(default)s)")
    parser.add_argument("--inception",
                        help=f"the FID Inception weights (default: ${WEIGHTS_ENV}, else "
                             f"~/.cache/pixelfolder/pt_inception-2015-12-05-6726825d.pth)")
    parser.add_argument("--cache-dir", type=cli.output_folder, default=DEFAULT_CACHE_DIR,
                        help="where dataset statistics and the digits classifier are cached (default: %(default)s)")
    parser.add_argument("--resolution", type=cli.integer(1),
                        help="read dataset images at this size (default: the generator's)")
    parser.add_argument("--workers", type=cli.integer(0), default=cli.default_num_workers(),
                        help="image decoding processes (default: the CPU cores this process may use, less one, "
                             "at most 8: %(default)s)")
    parser.add_argument("--kid-subsets", type=cli.integer(1), default=100, help="(default: %(default)s)")
    parser.add_argument("--kid-subset-size", type=cli.integer(2), default=1000, help="(default: %(default)s)")
    parser.add_argument("--size", type=cli.network_size,
                        help="the resolution the checkpoint's networks must have (default: any)")
    parser.add_argument("--device", type=cli.device, default="auto",
                        help="'auto' (the GPU if there is one), 'cpu', 'cuda' or 'cuda:N' (default: auto)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        generator = load_generator(args.checkpoint, size=args.size, device=cli.resolved_device(args.device))
        results = evaluate(generator, args.dataset, args.inception, args.num_samples, args.batch_size,
                           args.truncation, args.resolution, args.cache_dir, args.workers, args.kid_subsets,
                           args.kid_subset_size, args.features)
    except (ValueError, OSError) as error:  # bad checkpoints, data, statistics or Inception weights
        cli.fail(error)
    print(json.dumps({"checkpoint": args.checkpoint, "dataset": args.dataset, **results}, indent=2))


if __name__ == "__main__":
    main()
