"""What several test modules share (no test module imports another): a tiny training run, images on
disk, small generators of every kind, the official data flow's building blocks, and a fresh Python with
Triton compiling."""
import functools
import json
import math
import os
import subprocess
import sys

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

import models

from training.checkpoint import LATEST
from training.config import TrainConfig, flag
from training.train import Trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ------------------------------------------------------------------------------ a tiny training run

# A PixelFolder of 16 channels everywhere at 16x16: a step takes milliseconds on the CPU.
TINY = dict(dataset="procedural", procedural_images=8, size=16, width=0.03, style_dim=32, n_mlp=2, batch=4,
            num_workers=0, d_reg_every=2, mixing=0.5, log_every=1, sample_every=1000, checkpoint_every=1000)


def tiny_config(out, **overrides):
    return TrainConfig(**{**TINY, "out": str(out), **overrides})


def command_line(out, **overrides):
    """The training.train arguments of the tiny test run in ``out``."""
    settings = {**TINY, "out": str(out), **overrides}
    argv = []
    for name, value in settings.items():
        argv += ([flag(name)] if value is True else [f"--no-{flag(name)[2:]}"] if value is False
                 else [flag(name), str(value)])
    return argv


def our_checkpoint(out, **overrides):
    """A checkpoint of this package's trainer after one step, and its EMA generator."""
    trainer = Trainer(tiny_config(out, steps=1, **overrides))
    trainer.run()
    return os.path.join(out, LATEST), trainer.g_ema.eval()


def write_image(path, width, height, seed=0, image_format=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format=image_format)


# ------------------------------------------------------------------ small generators of every kind
GENERATORS = {
    "PixelFolder": lambda: models.PixelFolder(16, width=0.125),
    "StyleGAN2": lambda: models.StyleGAN2Generator(16, width=0.125),
    "CIPS": lambda: models.CIPS(16, width=0.125),
    "INR-GAN": lambda: models.INRGAN(32, width=0.125, input_size=8),
}
# PixelFolder's ablations (the paper's Table 3), by their table names.
ABLATIONS = {name: functools.partial(models.PixelFolder.variant, name, size=16, width=0.125)
             for name in models.VARIANTS if name != "PixelFolder"}


def noisy(generator, strength=0.5):
    """``generator`` with every noise strength set to ``strength`` (zero at initialisation), so that its
    noise counts."""
    for module in generator.modules():
        if isinstance(module, models.layers.NoiseInjection):
            module.weight.data.fill_(strength)
    return generator


def tiny_generator(name):
    """A small generator whose noise strengths are not zero (as after training), so noise counts."""
    torch.manual_seed(0)
    generator = {**GENERATORS, **ABLATIONS}[name]().eval()
    with torch.no_grad():
        for parameter_name, parameter in generator.named_parameters():
            if parameter_name.endswith("noise.weight"):
                parameter.normal_(0, 0.5)
    return generator


def official_state(state):
    """A generator's state dict as official checkpoints hold it: without our constant noise."""
    return {key: value for key, value in state.items() if not key.startswith("noises.")}


def official_checkpoint(path):
    """An official-layout PixelFolder checkpoint at 16x16 written to ``path``; returns the path as a string."""
    torch.manual_seed(0)
    generator = official_state(models.PixelFolder(16).state_dict())
    torch.save({"g": generator, "g_ema": generator, "d": models.Discriminator(16).state_dict()}, path)
    return str(path)


# ----------------------------------------------------------------- the official data flow, by hand
# F.* calls, written from the design (docs/design.md, section 4); nothing from models/.

SQRT2 = math.sqrt(2)


def lrelu(x, bias):
    return F.leaky_relu(x + bias.view(1, -1, *[1] * (x.dim() - 2)), 0.2) * SQRT2


def equal_conv(x, weight, padding=0):
    """A conv with the equalized-lr scale 1 / sqrt(fan_in)."""
    return F.conv2d(x, weight / math.sqrt(weight[0].numel()), padding=padding)


def blur(x, pad, gain=1.0):
    """upfirdn2d without resampling: pad (before, after) on both axes, then the [1, 3, 3, 1] kernel's
    outer product normalised to sum 1 (symmetric: correlation and convolution agree), times ``gain``."""
    k = torch.tensor([1.0, 3.0, 3.0, 1.0], dtype=x.dtype)
    k = torch.outer(k, k) / 64 * gain
    batch, channels, height, width = x.shape
    # Every channel as an image of its own: a plain conv, whose float64 double backward is fast.
    x = F.pad(x.reshape(batch * channels, 1, height, width), (pad[0], pad[1], pad[0], pad[1]))
    out = F.conv2d(x, k.view(1, 1, 4, 4))
    return out.view(batch, channels, *out.shape[-2:])


# ---------------------------------------------------------------------- Triton compiling, not interpreted

def in_fresh_python(code):
    """The JSON that ``code`` prints, run with benchmarks.kernel_resources imported as ``kr`` and Triton
    compiling (TRITON_INTERPRET unset)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-c", "import json, torch\nfrom benchmarks import kernel_resources as kr\n"
                             + code], capture_output=True, text=True, cwd=ROOT, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])
