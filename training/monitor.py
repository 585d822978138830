"""What a run shows while it trains: a progress bar with the losses and images/s, TensorBoard
scalars, and sample grids. Only rank 0 shows anything."""
import math
import os
import time

import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from training.distributed import all_reduce_sum
from training.images import save_grid


class RunningMeans:
    """Per-loss means since the last ``pop``, over steps and over all processes (a loss such as r1
    that is not computed every step is averaged over the steps that have it)."""

    def __init__(self):
        self.sums, self.counts = {}, {}

    def add(self, losses):
        for name, value in losses.items():
            self.sums[name] = self.sums.get(name, 0) + value.detach().float()
            self.counts[name] = self.counts.get(name, 0) + 1

    def pop(self, context):
        """The means as floats; every process must call it at the same step (one all-reduce)."""
        names = sorted(self.sums)
        totals = torch.stack([self.sums[name] for name in names] +
                             [torch.tensor(float(self.counts[name]), device=self.sums[name].device) for name in names])
        totals = all_reduce_sum(totals, context).tolist()
        self.sums, self.counts = {}, {}
        return {name: totals[i] / totals[len(names) + i] for i, name in enumerate(names)}


class Monitor:
    """Rank 0's progress bar, TensorBoard writer (``out/tensorboard``) and sample grids
    (``out/samples/step-NNNNNNN.png``)."""

    def __init__(self, out, start_step, total_steps, images_per_step):
        self.samples_folder = os.path.join(out, "samples")
        os.makedirs(self.samples_folder, exist_ok=True)
        self.writer = SummaryWriter(os.path.join(out, "tensorboard"))
        self.bar = tqdm(initial=start_step, total=total_steps, dynamic_ncols=True, smoothing=0.1, unit="step")
        self.images_per_step = images_per_step
        self.last_step, self.last_time = start_step, time.perf_counter()
        self.shown = {}  # the latest value of every loss, r1 included between the steps that compute it

    def step(self):
        self.bar.update(1)

    def log(self, step, means):
        now = time.perf_counter()
        images_per_second = self.images_per_step * (step - self.last_step) / (now - self.last_time)
        self.last_step, self.last_time = step, now
        self.shown.update({name: f"{value:.3f}" for name, value in means.items()})
        self.bar.set_postfix({**self.shown, "img/s": f"{images_per_second:.1f}"})
        for name, value in means.items():
            self.writer.add_scalar(f"train/{name}", value, step)
        self.writer.add_scalar("train/images_per_second", images_per_second, step)

    def save_samples(self, images, step):
        path = os.path.join(self.samples_folder, f"step-{step:07d}.png")
        save_grid(images, path, nrow=math.ceil(math.sqrt(len(images))), padding=2)
        return path

    def close(self):
        self.bar.close()
        self.writer.close()
