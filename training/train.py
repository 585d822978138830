"""Train a generator of models/ against the StyleGAN2 discriminator with the PixelFolder paper's
recipe (StyleGAN2's): non-saturating logistic loss, lazy R1 (gamma 10 every 16 D steps), Adam
(lr 0.002, betas (0, 0.99), D's scaled for lazy regularization), a generator EMA with a 10k-image
half-life, batch 32. Every setting is a flag (``--help``); see training/config.py.

    python -m training.train --dataset procedural --size 32 --width 0.25 --out runs/shapes
    python -m training.train --dataset data/ffhq-lmdb --size 256 --out runs/ffhq --resume auto
    torchrun --nproc_per_node 8 -m training.train --dataset data/ffhq-lmdb --size 256 --out runs/ffhq

A run folder gets checkpoint-latest.pt / checkpoint-previous.pt, samples/step-NNNNNNN.png and
tensorboard/. A resumed run continues exactly where its checkpoint left off (same losses and
weights as an uninterrupted run on the same machine and number of processes).
"""
from training import extras

if __name__ == "__main__":
    extras.require("train")  # before the imports that need it

import contextlib
import copy
import dataclasses
import logging
import os
import random
import signal
import threading

import numpy as np
import torch

import pixelfolder_ops as ops
from models import to_channels_last
from training import cli
from training.checkpoint import (LATEST, capture_rng_state, find_checkpoint, load_checkpoint, remove_stale_temporaries,
                                 restore_rng_state, save_checkpoint)
from training.config import RESUMABLE_CHANGES, TrainConfig, explicit_settings, flag, parse_args, resumed_config
from training.data import BatchStream, ImageFolderDataset, make_dataset
from training.distributed import (DistributedContext, all_gather_objects, all_reduce_max, barrier,
                                  distributed_context, launched_rank, resolve_device, wrap_ddp)
from training.ema import ema_decay, update_ema
from training.losses import d_logistic_loss, g_nonsaturating_loss, r1_penalty
from training.monitor import Monitor, RunningMeans
from training.networks import build_discriminator, build_generator

logger = logging.getLogger(__name__)


def lazy_adam_hyperparameters(config, regularize_every):
    """StyleGAN2's Adam settings for a network regularized every k steps: it takes k + 1 optimizer
    steps per k, so lr is scaled by c = k / (k + 1) and betas raised to c (c = 1 for k = 0: none)."""
    c = regularize_every / (regularize_every + 1) if regularize_every else 1.0
    return {"lr": config.lr * c, "betas": (config.beta1 ** c, config.beta2 ** c)}


class TrainingDiverged(RuntimeError):
    """A loss or a weight stopped being finite: the run stops, and writes no checkpoint."""


class StopRequests:
    """While entered (in the main thread): the first SIGINT (Ctrl-C) or SIGTERM (how clusters preempt
    jobs) is kept in ``signal`` for the training loop, which saves and stops at the end of its step; a
    second Ctrl-C raises KeyboardInterrupt at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signal = None
        self._previous_handlers = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # signal handlers can be set only there
            self._previous_handlers = {number: signal.signal(number, self._handle) for number in self.SIGNALS}
        return self

    def __exit__(self, *exception):
        for number, handler in self._previous_handlers.items():
            signal.signal(number, handler)

    def _handle(self, number, frame):
        if self.signal is None:
            self.signal = number
            logger.warning(f"{signal.Signals(number).name}: stopping at the end of this step, after writing a "
                           f"checkpoint (Ctrl-C again to quit at once, without one)")
        elif number == signal.SIGINT:
            raise KeyboardInterrupt


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


class Trainer:
    """One process's share of a run: ``run()`` trains to ``config.steps``, logging, sampling and
    checkpointing on the way; ``train_step()`` is one step (D, lazy R1, G, EMA)."""

    def __init__(self, config, context=None):
        config.validate()
        self.config = config
        self.context = context or DistributedContext(device=resolve_device(config.device))
        device, rank, world_size = self.context.device, self.context.rank, self.context.world_size
        if config.batch % world_size:
            raise ValueError(f"--batch {config.batch} must be a multiple of the number of processes ({world_size})")
        self.batch_per_process = config.batch // world_size
        ops.set_backend(config.backend)

        torch.manual_seed(config.seed)  # the same initial weights in every process
        self.g_module = build_generator(config).to(device)
        self.d_module = build_discriminator(config).to(device)
        group = self.d_module.stddev_group
        if group is not None and self.batch_per_process > group and self.batch_per_process % group:
            raise ValueError(f"the batch per process ({self.batch_per_process}) must be a multiple of the "
                             f"discriminator's minibatch-stddev group ({group}) or smaller than it")
        if config.channels_last:
            to_channels_last(self.g_module)
            to_channels_last(self.d_module)
        self.g_ema = copy.deepcopy(self.g_module).eval().requires_grad_(False)
        self.d_reg_every = config.d_reg_every if config.r1_gamma > 0 else 0
        self.g_optim = torch.optim.Adam(self.g_module.parameters(), **lazy_adam_hyperparameters(config, 0))
        self.d_optim = torch.optim.Adam(self.d_module.parameters(),
                                        **lazy_adam_hyperparameters(config, self.d_reg_every))
        # PixelFolder's first stage owns a conv_merge its forward never uses (official checkpoints have it).
        g_ddp = wrap_ddp(self.g_module, self.context, find_unused_parameters=True)
        self.d_ddp = wrap_ddp(self.d_module, self.context)
        if (config.compile or self.context.distributed) and ops.backend.auto_measures(device):
            self._measure_auto_backends()
        # Shapes never change during training, and tracing the ops with symbolic shapes fails.
        self.g_train = torch.compile(g_ddp, dynamic=False) if config.compile else g_ddp
        self.d_train = torch.compile(self.d_ddp, dynamic=False) if config.compile else self.d_ddp
        self.ema_decay = ema_decay(config.batch, config.ema_half_life)

        self.dataset = make_dataset(config.dataset, config.size, config.hflip, config.seed, config.procedural_images)
        num_workers = cli.default_num_workers() if config.num_workers is None else config.num_workers
        self.data = BatchStream(self.dataset, self.batch_per_process, rank, world_size, config.seed, num_workers,
                                pin_memory=device.type == "cuda")
        if self.context.is_main:
            self._report_dataset()
        # Fixed z and noise for the sample grids, from their own generator: sampling draws nothing
        # from the RNGs that training uses.
        sample_rng = torch.Generator().manual_seed(config.seed)
        self.sample_z = torch.randn(config.n_samples, config.style_dim, generator=sample_rng).to(device)
        self.sample_noise = [noise.to(device) for noise in
                             self.g_ema.make_noise(config.n_samples, device="cpu", generator=sample_rng)]
        seed_everything(config.seed + rank)  # each process draws its own z and noise
        self.step = 0
        self.last_checkpoint = None  # (path, step) of the checkpoint this run last wrote or resumed from
        self.stopped_by = None  # the signal that stopped run(), if one did
        if self.context.is_main:
            remove_stale_temporaries(config.out)
        checkpoint_path = find_checkpoint(config.resume, config.out) if config.resume else None
        if checkpoint_path is not None:
            self.load(checkpoint_path)

    def _measure_auto_backends(self):
        """Eager G and D forwards at the training shapes, so that the 'auto' backend measures its choices
        before torch.compile traces (it measures nothing while compiling): G without gradients, as the
        D step runs it, then G and D with them (auto times those ops forward and backward, and keeps
        training choices apart). With several processes, all then take rank 0's choices. Its z and noise
        come from their own generator: the training RNGs are untouched; no gradient is accumulated."""
        rng = torch.Generator().manual_seed(0)
        device = self.context.device
        z = torch.randn(self.batch_per_process, self.config.style_dim, generator=rng).to(device)
        noise = [n.to(device) for n in self.g_module.make_noise(self.batch_per_process, device="cpu", generator=rng)]
        with self._autocast():
            with torch.no_grad():
                self.g_module(z, noise=noise)
            images = self.g_module(z, noise=noise)
            if self.config.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            self.d_module(images)
        if self.context.distributed:
            chosen_by_rank0 = all_gather_objects(ops.backend.auto_choices(), self.context)[0]
            ops.backend.adopt_auto_choices(chosen_by_rank0, device)

    def _report_dataset(self):
        source = getattr(self.dataset, "dataset", self.dataset)  # behind MirroredDataset
        logger.info(f"dataset {self.config.dataset}: {len(source)} images at {self.config.size}x{self.config.size}"
                    + (" (and their mirrors)" if self.config.hflip else ""))
        if isinstance(source, ImageFolderDataset):
            source.report_skipped()

    def _autocast(self):
        return torch.autocast(self.context.device.type, dtype=torch.bfloat16, enabled=self.config.amp == "bf16")

    def _latent_codes(self):
        """z for one batch, or two (style mixing) with probability ``config.mixing``."""
        def draw():
            return torch.randn(self.batch_per_process, self.config.style_dim, device=self.context.device)
        if self.config.mixing > 0 and random.random() < self.config.mixing:
            return [draw(), draw()]
        return draw()

    def train_step(self):
        """One step: D on a real batch and a fake one, R1 every d_reg_every steps, G, EMA. Returns
        this process's losses as detached tensors (r1 only on the steps that compute it)."""
        real = next(self.data).to(self.context.device, non_blocking=True)
        if self.config.channels_last:
            real = real.contiguous(memory_format=torch.channels_last)
        losses = self._discriminator_step(real)
        if self.d_reg_every and self.step % self.d_reg_every == 0:
            losses["r1"] = self._r1_step(real)
        losses["g"] = self._generator_step()
        update_ema(self.g_ema, self.g_module, self.ema_decay)
        self.step += 1
        return losses

    def _discriminator_step(self, real):
        self.g_module.requires_grad_(False)
        self.d_module.requires_grad_(True)
        with torch.no_grad(), self._autocast():
            fake = self.g_train(self._latent_codes())
        with self._autocast():
            fake_pred, real_pred = self.d_train(fake), self.d_train(real)
        loss = d_logistic_loss(real_pred.float(), fake_pred.float())
        self.d_optim.zero_grad(set_to_none=True)
        loss.backward()
        self.d_optim.step()
        return {"d": loss.detach(), "real_score": real_pred.detach().float().mean(),
                "fake_score": fake_pred.detach().float().mean()}

    def _r1_step(self, real):
        real = real.detach().requires_grad_(True)
        with self._autocast():
            real_pred = self.d_ddp(real)  # eager: torch.compile has no double backward
        penalty = r1_penalty(real_pred, real)
        self.d_optim.zero_grad(set_to_none=True)
        # 0 * D(x) adds the last bias, which R1's gradient does not reach, to the graph: DDP needs
        # a gradient for every parameter.
        (self.config.r1_gamma / 2 * penalty * self.d_reg_every + 0 * real_pred.float().sum()).backward()
        self.d_optim.step()
        return penalty.detach()

    def _generator_step(self):
        self.g_module.requires_grad_(True)
        self.d_module.requires_grad_(False)
        with self._autocast():
            fake_pred = self.d_train(self.g_train(self._latent_codes()))
        loss = g_nonsaturating_loss(fake_pred.float())
        self.g_optim.zero_grad(set_to_none=True)
        loss.backward()
        self.g_optim.step()
        return loss.detach()

    @torch.no_grad()
    def sample(self):
        """The EMA generator's images for the fixed sample z and noise."""
        with self._autocast():
            return self.g_ema(self.sample_z, noise=self.sample_noise).float()

    def run(self):
        """Train until ``config.steps``, logging, sampling and checkpointing on the way; returns the last
        reported loss means (None if there was nothing to do). SIGINT or SIGTERM stops it at the end of
        a step, after a checkpoint (``stopped_by`` is then the signal); a non-finite loss or weight
        raises TrainingDiverged, with no checkpoint written."""
        config = self.config
        if self.step >= config.steps:
            logger.info(f"the run is at step {self.step} already, --steps is {config.steps}: nothing to do")
            return None
        monitor = Monitor(config.out, self.step, config.steps, config.batch) if self.context.is_main else None
        means, reported, self.stopped_by = RunningMeans(), None, None
        try:
            with StopRequests() as requests:
                if monitor is not None and self.step == 0:
                    monitor.save_samples(self.sample(), 0)
                while self.step < config.steps and self.stopped_by is None:
                    losses = self.train_step()
                    means.add(losses)
                    self.stopped_by = self._agree_on_stop(requests.signal, losses)
                    final = self.step == config.steps or self.stopped_by is not None
                    if monitor is not None:
                        monitor.step()
                    if self.step % config.log_every == 0 or final:
                        reported = means.pop(self.context)
                        if monitor is not None:
                            monitor.log(self.step, reported)
                    if monitor is not None and (self.step % config.sample_every == 0 or final):
                        monitor.save_samples(self.sample(), self.step)
                    if self.step % config.checkpoint_every == 0 or final:
                        self.save()
        finally:
            if monitor is not None:
                monitor.close()
        if self.context.is_main and self.stopped_by is not None:
            logger.warning(f"stopped by {self.stopped_by.name} at step {self.step}, checkpoint written to "
                           f"{self.last_checkpoint[0]}; continue with: python -m training.train --resume auto "
                           f"--out {config.out}")
        elif self.context.is_main:
            logger.info(f"finished at step {self.step}; the checkpoint is {self.last_checkpoint[0]}")
        return reported

    def _agree_on_stop(self, signal_number, losses):
        """The signal every process stops for (None: go on), agreed by all of them on this step (the
        highest signal number any received); TrainingDiverged where a loss of any process is not finite."""
        flags = torch.stack([torch.tensor(float(signal_number or 0), device=self.context.device),
                             torch.stack([~torch.isfinite(loss).all() for loss in losses.values()]).any().float()])
        signal_number, diverged = all_reduce_max(flags, self.context).tolist()
        if diverged:
            shown = ", ".join(f"{name}={float(loss):.4g}" for name, loss in losses.items())
            raise TrainingDiverged(f"training diverged at step {self.step}: a loss is not finite ({shown}, in "
                                   f"process {self.context.rank} of {self.context.world_size}). {self._what_next()}")
        return signal.Signals(int(signal_number)) if signal_number else None

    def _what_next(self):
        """What to do after a divergence, naming the last good checkpoint."""
        lower = f"a lower --lr (now {self.config.lr:g}; try {self.config.lr / 2:g})"
        if self.last_checkpoint is None:
            return f"No checkpoint was written: start again with {lower}."
        path, step = self.last_checkpoint
        return (f"No checkpoint was written after step {step}: {path} holds the last good weights; resume from it "
                f"with {lower}: python -m training.train --resume {path} --lr {self.config.lr / 2:g}")

    def _nonfinite_tensors(self):
        """The names of the weights and optimizer states that are not all finite."""
        named = [(f"{network}.{name}", tensor) for network, module in
                 (("g", self.g_module), ("d", self.d_module), ("g_ema", self.g_ema))
                 for name, tensor in module.state_dict().items() if tensor.is_floating_point()]
        named += [(f"{network}_optim.{index}.{name}", tensor) for network, optimizer in
                  (("g", self.g_optim), ("d", self.d_optim))
                  for index, state in optimizer.state_dict()["state"].items()
                  for name, tensor in state.items() if torch.is_tensor(tensor) and tensor.is_floating_point()]
        finite = torch.stack([torch.isfinite(tensor).all() for _, tensor in named]).tolist()
        return [name for (name, _), ok in zip(named, finite) if not ok]

    def save(self):
        """Write the checkpoint (rank 0) unless a weight is not finite (TrainingDiverged: the last good
        checkpoint stays); every process must call it: it gathers their RNG states."""
        nonfinite = self._nonfinite_tensors()  # the same in every process: DDP keeps the weights equal
        if nonfinite:
            more = f" and {len(nonfinite) - 3} more" if len(nonfinite) > 3 else ""
            raise TrainingDiverged(f"training diverged at step {self.step}: {', '.join(nonfinite[:3])}{more} "
                                   f"are not finite. {self._what_next()}")
        rng = all_gather_objects(capture_rng_state(self.context.device), self.context)
        path = os.path.join(self.config.out, LATEST)
        if self.context.is_main:
            path = save_checkpoint({"config": dataclasses.asdict(self.config), "step": self.step,
                                    "g": self.g_module.state_dict(), "d": self.d_module.state_dict(),
                                    "g_ema": self.g_ema.state_dict(), "g_optim": self.g_optim.state_dict(),
                                    "d_optim": self.d_optim.state_dict(), "data": self.data.state_dict(),
                                    "rng": rng}, self.config.out)
        barrier(self.context)  # no process leaves (and may exit) before the checkpoint is written
        self.last_checkpoint = (path, self.step)

    def load(self, path):
        """Continue from the checkpoint at ``path`` (of the same networks, else ValueError), saying which
        of this run's settings differ from the checkpoint's."""
        config, context = self.config, self.context
        checkpoint = load_checkpoint(path, config.architecture())
        converted = "source" in checkpoint  # training.convert's: networks and no run to continue
        saved = dataclasses.asdict(TrainConfig.from_dict(checkpoint["config"]))
        changed = {name: (saved[name], value) for name, value in dataclasses.asdict(config).items()
                   if name != "resume" and saved[name] != value}
        if context.is_main and not converted:
            for name, (old, new) in changed.items():
                logger.info(f"{flag(name)} {new} overrides the checkpoint's {old}")
            if set(changed) - set(RESUMABLE_CHANGES):
                logger.warning("the run will not continue as the original would have: "
                               + ", ".join(flag(name) for name in changed if name not in RESUMABLE_CHANGES)
                               + " changed")
        # A converted checkpoint (training.convert) has what its source had: at least g_ema.
        fresh = []
        self.g_ema.load_state_dict(checkpoint["g_ema"])
        self.g_module.load_state_dict(checkpoint.get("g") or checkpoint["g_ema"])
        if checkpoint.get("d") is not None:
            self.d_module.load_state_dict(checkpoint["d"])
        else:
            fresh.append("D is freshly initialised (the checkpoint has none)")
        for module in (self.g_module, self.g_ema):
            if module.latent_avg is not None:  # a converted network's average w: training does not track it
                module.latent_avg = None
        optimizers = ((self.g_optim, "g_optim", 0), (self.d_optim, "d_optim", self.d_reg_every))
        for optimizer, name, regularize_every in optimizers:
            if checkpoint.get(name) is not None:
                optimizer.load_state_dict(checkpoint[name])
            else:
                fresh.append(f"{name[0].upper()}'s Adam states are fresh")
            for group in optimizer.param_groups:  # this run's lr and betas
                group.update(lazy_adam_hyperparameters(config, regularize_every))
        if "data" in checkpoint:
            self.data.load_state_dict(checkpoint["data"])
        self.step = checkpoint["step"]
        self.last_checkpoint = (path, self.step)
        if context.is_main and converted:
            logger.info(f"fine-tuning the networks converted from {checkpoint['source'].get('file')} "
                        f"({checkpoint['source'].get('format')}): " + "; ".join(
                            fresh + ["truncation centres on the mean w again (training does not track the "
                                     "source's average w)", "the data starts from the beginning"]))
        if not converted:  # from a converted checkpoint, this run's own seed draws from here on
            if len(checkpoint["rng"]) == context.world_size:
                restore_rng_state(checkpoint["rng"][context.rank], context.device)
            elif context.is_main:
                logger.warning(f"the checkpoint was written by {len(checkpoint['rng'])} processes and this run "
                               f"has {context.world_size}: its random draws start afresh")
        if context.is_main:
            logger.info(f"resumed from {path} at step {self.step}")


def train(config):
    """Run ``config`` in this process (joining torchrun's process group if it started us); returns
    the Trainer."""
    with distributed_context(config.device) as context:
        trainer = Trainer(config, context)
        trainer.run()
    return trainer


def configure(argv=None):
    """The TrainConfig of the command line ``argv``. To resume, the checkpoint's settings with those given
    on the command line instead, ``resume`` the checkpoint file found, and ``out`` its folder unless
    --out is given (the folder the run was started with may be relative to another directory)."""
    config = parse_args(argv)
    path = find_checkpoint(config.resume, config.out) if config.resume else None
    if path is None:
        return dataclasses.replace(config, resume=None)
    explicit = {"out": os.path.dirname(path) or ".", **explicit_settings(argv)}
    return dataclasses.replace(resumed_config(load_checkpoint(path, mmap=True)["config"], explicit), resume=path)


def main(argv=None):
    # Other processes of a torchrun launch show errors only: rank 0 says the rest once.
    logging.basicConfig(level=logging.INFO if launched_rank() == 0 else logging.ERROR, format="%(message)s")
    with contextlib.ExitStack() as stack:
        try:
            try:
                config = configure(argv)
                config.validate()
                context = stack.enter_context(distributed_context(config.device))
                trainer = Trainer(config, context)
            except (ValueError, OSError, ops.BackendUnavailableError) as error:
                cli.fail(error)  # bad settings, data or checkpoints: the message says what is wrong
            trainer.run()
        except TrainingDiverged as error:
            cli.fail(error)
        except KeyboardInterrupt:
            cli.fail("interrupted by Ctrl-C: nothing was written since the last checkpoint", 128 + signal.SIGINT)
    if trainer.stopped_by is not None:
        raise SystemExit(128 + trainer.stopped_by)

if __name__ == "__main__":
    main()
