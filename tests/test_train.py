"""Training: the recipe's losses, EMA and Adam settings, exact resume, and the command line."""
import logging
import math
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import pixelfolder_ops as ops
from helpers import tiny_config, write_image
from training import cli
from training.checkpoint import LATEST, load_checkpoint
from training.config import parse_args
from training.distributed import DistributedContext
from training.ema import ema_decay, update_ema
from training.losses import d_logistic_loss, g_nonsaturating_loss, r1_penalty
from training.monitor import Monitor
from training.train import Trainer, lazy_adam_hyperparameters, main, seed_everything

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_defaults_are_the_papers_recipe():
    config = parse_args([])
    assert (config.batch, config.lr, config.beta1, config.beta2) == (32, 0.002, 0.0, 0.99)
    assert (config.r1_gamma, config.d_reg_every, config.ema_half_life, config.mixing) == (10.0, 16, 10000.0, 0.0)
    assert parse_args(["--no-hflip", "--r1-gamma", "5", "--variant", "Fold+DeConv"]).r1_gamma == 5.0
    # mirrored by default, except the digits (a mirrored digit is not a digit), unless asked for
    assert parse_args([]).hflip is True and parse_args(["--no-hflip"]).hflip is False
    assert parse_args(["--dataset", "digits"]).hflip is False
    assert parse_args(["--dataset", "digits", "--hflip"]).hflip is True


def test_lazy_adam_hyperparameters():
    config = parse_args([])
    d = lazy_adam_hyperparameters(config, 16)
    assert d["lr"] == pytest.approx(0.002 * 16 / 17)
    assert d["betas"] == pytest.approx((0.0, 0.99 ** (16 / 17)))
    assert lazy_adam_hyperparameters(config, 0) == {"lr": 0.002, "betas": (0.0, 0.99)}


def softplus(x):
    return math.log1p(math.exp(x))


def test_logistic_losses_known_values():
    zero = torch.zeros(4, 1)
    assert d_logistic_loss(zero, zero).item() == pytest.approx(2 * math.log(2))
    assert g_nonsaturating_loss(zero).item() == pytest.approx(math.log(2))
    real, fake = torch.tensor([[3.0], [-1.0]]), torch.tensor([[2.0], [0.5]])
    assert d_logistic_loss(real, fake).item() == pytest.approx(
        (softplus(-3) + softplus(1)) / 2 + (softplus(2) + softplus(0.5)) / 2)
    assert g_nonsaturating_loss(fake).item() == pytest.approx((softplus(-2) + softplus(-0.5)) / 2)


def test_r1_penalty_of_a_known_function():
    # D(x) = sum(a * x^2): dD/dx = 2 a x, so R1 = mean over the batch of sum(4 a^2 x^2).
    a = torch.tensor(1.5, requires_grad=True)
    x = torch.randn(3, 3, 4, 4).requires_grad_(True)
    penalty = r1_penalty((a * x ** 2).flatten(1).sum(1, keepdim=True), x)
    expected = (4 * a.detach() ** 2 * x.detach() ** 2).flatten(1).sum(1).mean()
    assert penalty.item() == pytest.approx(expected.item(), rel=1e-5)
    # The penalty keeps its graph: d(R1)/da = mean(sum(8 a x^2)).
    penalty.backward()
    assert a.grad.item() == pytest.approx((8 * 1.5 * x.detach() ** 2).flatten(1).sum(1).mean().item(), rel=1e-5)


def test_ema_halves_the_distance_every_half_life():
    assert ema_decay(32, 10000) == 0.5 ** (32 / 10000)
    model, ema = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    torch.nn.init.ones_(model.weight)
    torch.nn.init.zeros_(ema.weight)
    for _ in range(100):  # 100 steps of 50 images: one half-life of 5000 images
        update_ema(ema, model, ema_decay(50, 5000))
    assert torch.allclose(ema.weight, torch.full((2, 2), 0.5))


def params_and_optimizers(trainer):
    return {**{f"g.{k}": v for k, v in trainer.g_module.state_dict().items()},
            **{f"d.{k}": v for k, v in trainer.d_module.state_dict().items()},
            **{f"g_ema.{k}": v for k, v in trainer.g_ema.state_dict().items()},
            **{f"g_optim.{i}.{k}": v for i, s in trainer.g_optim.state_dict()["state"].items() for k, v in s.items()},
            **{f"d_optim.{i}.{k}": v for i, s in trainer.d_optim.state_dict()["state"].items() for k, v in s.items()}}


@pytest.mark.slow
def test_resume_is_exact(tmp_path):
    # 8 procedural images and their mirrors make 4 batches an epoch: 6 steps cross into the second
    # epoch; R1 runs every 2 steps and style mixing half the time.
    uninterrupted = Trainer(tiny_config(tmp_path / "a", steps=6))
    expected = [uninterrupted.train_step() for _ in range(6)]

    # The first half through run(), which also samples and checkpoints every step.
    Trainer(tiny_config(tmp_path / "b", steps=3, sample_every=1, checkpoint_every=1)).run()
    resumed = Trainer(tiny_config(tmp_path / "b", steps=6, resume=str(tmp_path / "b")))
    assert resumed.step == 3
    for losses in expected[3:]:
        got = resumed.train_step()
        assert got.keys() == losses.keys()
        for name in losses:
            assert torch.equal(got[name], losses[name]), name
    want, have = params_and_optimizers(uninterrupted), params_and_optimizers(resumed)
    assert want.keys() == have.keys()
    for name in want:
        assert torch.equal(want[name], have[name]), name
    assert resumed.data.state_dict() == uninterrupted.data.state_dict() == {"epoch": 1, "batch": 2}


@pytest.mark.slow
def test_the_main_process_samples_at_the_start_every_sample_every_steps_and_at_the_end(tmp_path, capsys):
    Trainer(tiny_config(tmp_path, steps=3, sample_every=2, n_samples=4)).run()
    assert "| 3/3 [" in capsys.readouterr().err  # the progress bar counts to --steps
    assert sorted(os.listdir(tmp_path / "samples")) == ["step-0000000.png", "step-0000002.png", "step-0000003.png"]
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(tmp_path / "tensorboard"))


@pytest.mark.slow
def test_another_process_writes_nothing_and_names_the_checkpoint_rank_0_writes(tmp_path):
    out = tmp_path / "run"
    trainer = Trainer(tiny_config(out, steps=1, sample_every=1))
    # Made rank 1 once built (no process group needed): it neither logs, samples nor saves.
    trainer.context = DistributedContext(rank=1, world_size=1)
    trainer.run()
    assert trainer.step == 1 and not os.path.exists(out)
    assert trainer.last_checkpoint == (str(out / LATEST), 1)


@pytest.mark.slow
def test_losses_are_reported_every_log_every_steps_and_at_the_end_as_means_since_the_last_report(tmp_path,
                                                                                                   monkeypatch):
    reports = []
    monkeypatch.setattr(Monitor, "log", lambda monitor, step, means: reports.append((step, means)))
    trainer = Trainer(tiny_config(tmp_path, steps=5, log_every=2))
    step, losses = trainer.train_step, []
    trainer.train_step = lambda: losses.append(step()) or losses[-1]
    returned = trainer.run()
    assert [step for step, _ in reports] == [2, 4, 5]
    for (first, last), (_, means) in zip([(0, 2), (2, 4), (4, 5)], reports):
        window = losses[first:last]
        expected = {name: sum(float(step_losses[name]) for step_losses in window if name in step_losses)
                    / sum(name in step_losses for step_losses in window) for name in set().union(*window)}
        assert means == pytest.approx(expected, rel=1e-6)
    assert returned is reports[-1][1]


@pytest.mark.parametrize("gamma, lazy", [(0.0, False), (0.5, True)])
@pytest.mark.slow
def test_r1_and_its_lazy_adam_settings_are_on_exactly_when_gamma_is_positive(tmp_path, gamma, lazy):
    trainer = Trainer(tiny_config(tmp_path, r1_gamma=gamma, d_reg_every=2, beta1=0.5))
    c = 2 / 3 if lazy else 1  # k / (k + 1) for R1 every k = 2 steps
    for group in trainer.d_optim.param_groups:
        assert group["lr"] == pytest.approx(0.002 * c) and group["betas"] == pytest.approx((0.5 ** c, 0.99 ** c))
    assert ["r1" in trainer.train_step() for _ in range(2)] == [lazy, False]


def test_the_ema_generator_is_in_eval_mode_and_takes_no_gradients(tmp_path):
    trainer = Trainer(tiny_config(tmp_path))
    assert not trainer.g_ema.training and not any(p.requires_grad for p in trainer.g_ema.parameters())


def test_sample_grids_take_the_same_z_and_noise_for_every_model_at_a_seed(tmp_path):
    # From their own generator, seeded with --seed: not from the RNGs the weights' initialisation used.
    narrow, wide = (Trainer(tiny_config(tmp_path / name, seed=3, width=width, n_samples=5))
                    for name, width in (("narrow", 0.03), ("wide", 0.06)))
    assert narrow.sample_z.shape == (5, 32) and torch.equal(narrow.sample_z, wide.sample_z)
    assert [noise.shape for noise in narrow.sample_noise] == [shape for shape in narrow.g_ema.noise_shapes(5)]
    assert all(torch.equal(a, b) for a, b in zip(narrow.sample_noise, wide.sample_noise))
    assert not torch.equal(narrow.sample_z, Trainer(tiny_config(tmp_path / "other", seed=4, n_samples=5)).sample_z)


@pytest.mark.parametrize("num_workers", [None, 0])
def test_the_data_stream_is_the_runs_seeded_order_in_batches_per_process(tmp_path, num_workers):
    trainer = Trainer(tiny_config(tmp_path, num_workers=num_workers, seed=5))
    stream = trainer.data
    assert (stream.sampler.seed, stream.sampler.rank, stream.sampler.num_replicas, stream.batch_size) == (5, 0, 1, 4)
    assert stream.loader.num_workers == (cli.default_num_workers() if num_workers is None else 0)
    assert stream.loader.pin_memory is False  # pinned for a CUDA device only
    assert len(trainer.dataset) == 16  # the 8 procedural images and their mirrors


def test_the_batch_must_split_evenly_over_the_processes(tmp_path):
    with pytest.raises(ValueError) as error:
        Trainer(tiny_config(tmp_path, batch=5), DistributedContext(world_size=2))
    assert str(error.value) == "--batch 5 must be a multiple of the number of processes (2)"


def test_the_trainer_sets_the_backend_asked_for(tmp_path):
    Trainer(tiny_config(tmp_path, backend="reference"))
    assert ops.get_backend() == "reference"


def test_resume_auto_starts_fresh_without_a_checkpoint(tmp_path):
    assert Trainer(tiny_config(tmp_path, steps=1, resume="auto")).step == 0


def test_settings_that_cannot_train_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="PixelFolder ablation"):
        tiny_config(tmp_path, model="StyleGAN2", variant="Fold+DeConv").validate()
    with pytest.raises(ValueError, match="style mixing"):
        tiny_config(tmp_path, model="CIPS").validate()
    with pytest.raises(ValueError, match="--official-data-flow applies to PixelFolder only"):
        tiny_config(tmp_path, model="StyleGAN2", official_data_flow=True).validate()
    with pytest.raises(ValueError, match="minibatch-stddev group"):
        Trainer(tiny_config(tmp_path, batch=6))


def test_training_reports_the_unreadable_images_it_skipped(tmp_path, caplog):
    for index in range(2):
        write_image(tmp_path / "images" / f"{index}.png", 16, 16, seed=index)
    (tmp_path / "images" / "broken.jpg").write_bytes(b"garbage")
    caplog.set_level(logging.INFO)
    trainer = Trainer(tiny_config(tmp_path / "run", dataset=str(tmp_path / "images")))
    assert len(trainer.dataset) == 4  # two images and their mirrors
    assert "skipped 1 unreadable image file(s)" in caplog.text and "broken.jpg" in caplog.text


def test_cli_reports_bad_data_without_a_traceback(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--dataset", str(tmp_path / "missing"), "--size", "16", "--out", str(tmp_path / "run")])
    assert exit_info.value.code == 1
    error = capsys.readouterr().err
    # One line naming the folder and what is wrong with it.
    assert error.startswith(f"error: data folder {tmp_path / 'missing'} does not exist or is not a folder")
    assert error.count("\n") == 1 and error.endswith("\n")


@pytest.mark.slow
def test_cli_short_run_writes_a_checkpoint_and_sample_grids(tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "training.train", "--dataset", "procedural", "--size", "16", "--width", "0.03",
               "--style-dim", "32", "--n-mlp", "2", "--batch", "4", "--num-workers", "0", "--steps", "3",
               "--sample-every", "2", "--n-samples", "4", "--out", str(out)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    checkpoint = load_checkpoint(str(out / LATEST))
    assert checkpoint["step"] == 3 and checkpoint["config"]["size"] == 16
    samples = sorted(os.listdir(out / "samples"))
    assert samples == ["step-0000000.png", "step-0000002.png", "step-0000003.png"]
    with Image.open(out / "samples" / samples[-1]) as grid:  # 2 x 2 tiles of 16 px, 2 px apart
        assert grid.size == (2 * 16 + 3 * 2, 2 * 16 + 3 * 2)
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(out / "tensorboard"))


@pytest.mark.slow
def test_compiled_training_lets_auto_measure_before_tracing(tmp_path, monkeypatch):
    # torch.compile traces on the first step, where 'auto' measures nothing: the trainer runs one
    # eager forward first, so that the compiled graphs hold measured choices.
    monkeypatch.setenv("PIXELFOLDER_OPS_AUTO", "measure")
    Trainer(tiny_config(tmp_path, compile=False))
    assert ops.backend.auto_choices() == {}
    with monkeypatch.context() as patch:  # nothing to measure: no extra forward either
        patch.setenv("PIXELFOLDER_OPS_AUTO", "preference")
        patch.setattr(Trainer, "_measure_auto_backends", lambda self: pytest.fail("measured without need"))
        Trainer(tiny_config(tmp_path, compile=True))
    Trainer(tiny_config(tmp_path, compile=True))
    chosen = {op for op, _, mode, _ in ops.backend.auto_choices() if mode == "training"}
    assert {"styled_conv2d", "to_rgb", "fused_leaky_relu"} <= chosen


@pytest.mark.parametrize("hflip, said", [(True, " (and their mirrors)"), (False, "")])
def test_the_dataset_is_reported_with_its_size_and_mirroring(tmp_path, caplog, hflip, said):
    caplog.set_level(logging.INFO)
    Trainer(tiny_config(tmp_path, hflip=hflip))
    assert f"dataset procedural: 8 images at 16x16{said}" in [record.getMessage() for record in caplog.records]


@pytest.mark.parametrize("amp, dtype", [("bf16", torch.bfloat16), ("none", torch.float32)])
def test_bf16_amp_runs_matrix_products_in_bfloat16_and_none_in_float32(tmp_path, amp, dtype):
    trainer = Trainer(tiny_config(tmp_path, amp=amp))
    a = torch.randn(4, 4)
    with trainer._autocast():
        assert (a @ a).dtype == dtype


def test_a_seed_gives_the_same_draws_of_every_generator_however_large():
    """Seeds of 2 ** 32 and more too, which numpy's global generator does not take as they are."""
    def draws(seed):
        seed_everything(seed)
        return random.random(), np.random.rand(), torch.rand(1).item()
    first, same, other = draws(2 ** 32 + 5), draws(2 ** 32 + 5), draws(2 ** 32 + 6)
    assert first == same and all(a != b for a, b in zip(first, other))
