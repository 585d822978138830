"""Convert a folder of images into LMDB datasets, one per size, in the official PixelFolder layout.

    python -m training.prepare_data IMAGES --out data/ffhq-lmdb --sizes 256 1024 [--format png|jpeg]
                                    [--quality 95] [--workers 4]

IMAGES is searched recursively for png/jpg/jpeg/webp files, taken in sorted order. Each image is
centre-cropped to a square and resized (Lanczos) to every size, and stored encoded (PNG by default:
lossless; the official repository stores JPEG at quality 85) in OUT/<size>/ under the key
f"{index:07d}" (utf-8), with b"length" holding the count as a decimal string. Files that cannot be
read are skipped (indices stay contiguous) and counted; an image smaller than a size is an error.
Train on the result with ``python -m training.train --dataset OUT --size SIZE``.
"""
from training import extras

if __name__ == "__main__":
    extras.require("train")  # before the imports that need it

import argparse
import functools
import io
import multiprocessing
import os
import sys

import lmdb
from PIL import Image
from tqdm import tqdm

from training.data import UNREADABLE_IMAGE_ERRORS, list_image_files, lmdb_key, probe_image, too_small_error
from training.images import read_image

COMMIT_EVERY = 1000  # images per write transaction


def encode(pixels, image_format, quality):
    """A (3, H, W) uint8 tensor as PNG or JPEG bytes."""
    buffer = io.BytesIO()
    image = Image.fromarray(pixels.permute(1, 2, 0).numpy())
    image.save(buffer, format=image_format.upper(), **({"quality": quality} if image_format == "jpeg" else {}))
    return buffer.getvalue()


def convert_image(path, sizes, image_format, quality):
    """(encoded image per size, None), or (None, reason) for a file that cannot be read."""
    try:
        width, height = probe_image(path)
        resized = [read_image(path, size) for size in sizes]
    except UNREADABLE_IMAGE_ERRORS as error:
        return None, str(error)
    if min(width, height) < max(sizes):
        raise too_small_error(path, width, height, max(sizes))
    return [encode(pixels, image_format, quality) for pixels in resized], None


def prepare_lmdb(source, out, sizes, image_format="png", quality=95, workers=1):
    """Write OUT/<size>/ for every size; returns (images written, [(skipped path, reason)])."""
    files = list_image_files(source)
    folders = {size: os.path.join(out, str(size)) for size in sizes}
    for folder in folders.values():
        if os.path.isdir(folder) and os.listdir(folder):
            raise FileExistsError(f"{folder} exists already and is not empty: remove it or choose another --out")
    convert = functools.partial(convert_image, sizes=sizes, image_format=image_format, quality=quality)
    for folder in folders.values():
        os.makedirs(folder, exist_ok=True)
    environments = {size: lmdb.open(folder, map_size=1 << 40, readahead=False) for size, folder in folders.items()}
    written, skipped = 0, []
    pool = multiprocessing.Pool(workers) if workers > 1 else None
    try:
        results = pool.imap(convert, files, chunksize=8) if pool else map(convert, files)
        transactions = {size: env.begin(write=True) for size, env in environments.items()}
        for path, (encoded, reason) in tqdm(zip(files, results), total=len(files), unit="image"):
            if encoded is None:
                skipped.append((path, reason))
                continue
            for size, data in zip(sizes, encoded):
                transactions[size].put(lmdb_key(written), data)
            written += 1
            if written % COMMIT_EVERY == 0:
                for size, env in environments.items():
                    transactions[size].commit()
                    transactions[size] = env.begin(write=True)
        for transaction in transactions.values():
            transaction.put(b"length", str(written).encode("utf-8"))
            transaction.commit()
    finally:
        if pool:
            pool.terminate()
        for env in environments.values():
            env.close()
    if written == 0:
        raise ValueError(f"none of the {len(files)} image files under {source} can be read "
                         f"(first: {skipped[0][0]}: {skipped[0][1]})")
    return written, skipped


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m training.prepare_data", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("source", help="folder of images (searched recursively)")
    parser.add_argument("--out", required=True, help="output folder: one LMDB per size in OUT/<size>/")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256], help="resolutions to write")
    parser.add_argument("--format", dest="image_format", choices=("png", "jpeg"), default="png",
                        help="how images are stored")
    parser.add_argument("--quality", type=int, default=95, help="JPEG quality")
    parser.add_argument("--workers", type=int, default=1, help="processes decoding and resizing images")
    args = parser.parse_args(argv)
    try:
        written, skipped = prepare_lmdb(args.source, args.out, args.sizes, args.image_format, args.quality,
                                        args.workers)
    except (ValueError, OSError) as error:
        sys.exit(f"error: {error}")
    print(f"wrote {written} images at sizes {', '.join(map(str, args.sizes))} to {args.out}")
    if skipped:
        print(f"skipped {len(skipped)} unreadable file(s):", file=sys.stderr)
        for path, reason in skipped:
            print(f"  {path}: {reason}", file=sys.stderr)


if __name__ == "__main__":
    main()
