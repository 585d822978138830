"""Images as the generators make them, (N, 3, H, W) floats in [-1, 1], to and from 8-bit PNGs (Pillow)."""
import math

import numpy as np
import torch
from PIL import Image


def to_uint8(images):
    """(N, 3, H, W) in [-1, 1] -> (N, 3, H, W) uint8, clipped and rounded."""
    return ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def from_uint8(pixels):
    """(N, 3, H, W) uint8 -> floats in [-1, 1]."""
    return pixels.float() / 127.5 - 1


def save_image(image, path):
    """One (3, H, W) image in [-1, 1] as an 8-bit RGB file (format from the suffix)."""
    Image.fromarray(to_uint8(image[None])[0].permute(1, 2, 0).cpu().numpy()).save(path)


def save_grid(images, path, nrow=8, padding=0):
    """(N, 3, H, W) images in [-1, 1] tiled ``nrow`` to a row, row-major, ``padding`` black pixels
    around every tile; the last row is filled with black where N is not a multiple of ``nrow``."""
    pixels = to_uint8(images).permute(0, 2, 3, 1).cpu().numpy()
    count, height, width, _ = pixels.shape
    rows = math.ceil(count / nrow)
    grid = np.zeros((rows * (height + padding) + padding, nrow * (width + padding) + padding, 3), np.uint8)
    for index, tile in enumerate(pixels):
        row, column = divmod(index, nrow)
        top, left = padding + row * (height + padding), padding + column * (width + padding)
        grid[top:top + height, left:left + width] = tile
    Image.fromarray(grid).save(path)


def read_image(path, size):
    """(3, size, size) uint8 tensor from an image file: centre-cropped to a square, resized (Lanczos)
    to ``size`` where it is not that size already."""
    with Image.open(path) as image:
        image = image.convert("RGB")
        side = min(image.size)
        if image.width != image.height:
            left, top = (image.width - side) // 2, (image.height - side) // 2
            image = image.crop((left, top, left + side, top + side))
        if side != size:
            image = image.resize((size, size), Image.Resampling.LANCZOS)
        return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)
