"""training.train's entry points and a process's own set-up: main() logs as the process's rank
should; main() and train() run the Trainer in the distributed context made for the --device flag; a
Trainer seeds its process's draws, wraps its networks for DDP and compiles them. (Two real processes:
test_train_distributed.py.)"""
import contextlib
import logging
import random

import numpy as np

import pytest
import torch

import training.train as train_module
from helpers import command_line, tiny_config
from training.checkpoint import LATEST, load_checkpoint
from training.distributed import DistributedContext


@contextlib.contextmanager
def bare_root_logger():
    """The root logger without handlers (pytest's, which make basicConfig do nothing) for the block."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    root.handlers.clear()
    try:
        yield
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)


@pytest.mark.parametrize("rank, info_shown", [("0", True), ("1", False)])
def test_rank_0_logs_bare_messages_and_the_other_ranks_errors_only(monkeypatch, capsys, rank, info_shown):
    monkeypatch.setenv("RANK", rank)
    with bare_root_logger():
        with pytest.raises(SystemExit):
            train_module.main(["--size", "2048"])  # a bad flag: main stops once logging is set up
        capsys.readouterr()
        logger = logging.getLogger("training.train")
        logger.info("an info line")
        logger.error("an error line")
        assert capsys.readouterr().err == ("an info line\n" if info_shown else "") + "an error line\n"


@pytest.mark.parametrize("entry", ["main", "train"])
def test_the_trainer_runs_in_the_context_made_for_the_device_flag(tmp_path, monkeypatch, entry):
    made = DistributedContext(device=torch.device("cpu"))
    asked_for, received = [], []

    @contextlib.contextmanager
    def context_for(device):
        asked_for.append(device)
        yield made

    class RecordingTrainer(train_module.Trainer):
        def __init__(self, config, context=None):
            received.append(context)
            super().__init__(config, context)

    monkeypatch.setattr(train_module, "distributed_context", context_for)
    monkeypatch.setattr(train_module, "Trainer", RecordingTrainer)
    if entry == "main":
        train_module.main(command_line(tmp_path, steps=1, device="cpu"))
    else:
        assert train_module.train(tiny_config(tmp_path, steps=1, device="cpu")).step == 1
    assert asked_for == ["cpu"] and len(received) == 1 and received[0] is made
    assert load_checkpoint(str(tmp_path / LATEST))["step"] == 1


def test_a_trainer_made_without_a_context_runs_alone_on_the_device_flags_device(tmp_path, monkeypatch):
    asked_for = []

    def resolve(preference, local_rank=0):
        asked_for.append(preference)
        return torch.device("cpu")

    monkeypatch.setattr(train_module, "resolve_device", resolve)
    trainer = train_module.Trainer(tiny_config(tmp_path, device="cpu"))
    assert asked_for == ["cpu"] and trainer.context == DistributedContext(rank=0, world_size=1)


@pytest.mark.parametrize("compile", [False, True])
def test_ddp_and_compile_wrap_the_networks_and_auto_measures_before_compiling(tmp_path, monkeypatch, compile):
    wrapped, compiled, asked, measured = [], [], [], []

    def wrap(module, context, find_unused_parameters=False):
        wrapped.append((module, find_unused_parameters))
        return "ddp", module

    def compile_model(model, **options):
        compiled.append((model, options))
        return "compiled", model

    def auto_measures(device):
        asked.append(device)
        return True

    monkeypatch.setattr(train_module, "wrap_ddp", wrap)
    monkeypatch.setattr(torch, "compile", compile_model)
    monkeypatch.setattr(train_module.ops.backend, "auto_measures", auto_measures)
    monkeypatch.setattr(train_module.Trainer, "_measure_auto_backends", lambda trainer: measured.append(trainer))
    trainer = train_module.Trainer(tiny_config(tmp_path, compile=compile))
    g, d = trainer.g_module, trainer.d_module
    # PixelFolder's stage 0 owns a conv_merge its forward never uses: G's DDP must allow unused parameters.
    assert wrapped == [(g, True), (d, False)] and trainer.d_ddp == ("ddp", d)
    if compile:  # fixed shapes; 'auto' measures first, eagerly (it measures nothing while compiling)
        assert compiled == [(("ddp", g), {"dynamic": False}), (("ddp", d), {"dynamic": False})]
        assert (trainer.g_train, trainer.d_train) == (("compiled", ("ddp", g)), ("compiled", ("ddp", d)))
        assert asked == [torch.device("cpu")] and measured == [trainer]
    else:  # eager, in one process: 'auto' measures as it goes, nothing to do first
        assert compiled == [] and (trainer.g_train, trainer.d_train) == (("ddp", g), ("ddp", d))
        assert asked == [] and measured == []


def test_each_process_draws_from_the_seed_plus_its_rank_and_reads_its_share_of_the_data(tmp_path, monkeypatch):
    # Rank 1 of 2, without a process group: DDP left out.
    monkeypatch.setattr(train_module, "wrap_ddp", lambda module, context, find_unused_parameters=False: module)
    monkeypatch.setenv("PIXELFOLDER_OPS_AUTO", "preference")
    trainer = train_module.Trainer(tiny_config(tmp_path, seed=5, batch=8), DistributedContext(rank=1, world_size=2))
    drawn = torch.rand(3), random.random(), np.random.rand()
    torch.manual_seed(6)
    random.seed(6)
    np.random.seed(6)
    assert torch.equal(drawn[0], torch.rand(3)) and drawn[1:] == (random.random(), np.random.rand())
    assert (trainer.data.sampler.rank, trainer.data.sampler.num_replicas, trainer.data.batch_size) == (1, 2, 4)
