"""Training on two gloo processes (DistributedDataParallel on the CPU) keeps both in step, on the
same backends, and stops both at the same step when one is signalled."""
import os
import pickle
import signal
import socket

import pytest
import torch
import torch.multiprocessing as mp

from pixelfolder_ops import backend
from helpers import tiny_config
from training.checkpoint import LATEST, load_checkpoint
from training.train import Trainer, train


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def train_one_rank(rank, port, out):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    # 'auto' measures, and each process would choose differently: rank 0 the last candidate, rank 1
    # the first. The trainer must make them agree (on rank 0's).
    os.environ["PIXELFOLDER_OPS_AUTO"] = "measure"
    backend._fastest = lambda op, candidates, device, args, training: candidates[-1 if rank == 0 else 0]
    trainer = train(tiny_config(out, batch=8, steps=3, device="cpu"))
    with open(os.path.join(out, f"auto-rank{rank}.pkl"), "wb") as f:
        pickle.dump(backend.auto_choices(), f)
    weights = {"g": trainer.g_module.state_dict(), "d": trainer.d_module.state_dict(),
               "g_ema": trainer.g_ema.state_dict()}
    torch.save(weights, os.path.join(out, f"weights-rank{rank}.pt"))


@pytest.mark.slow
def test_two_gloo_processes_end_with_identical_weights(tmp_path):
    initial = tiny_config(tmp_path).architecture()
    mp.spawn(train_one_rank, args=(free_port(), str(tmp_path)), nprocs=2)
    rank0, rank1 = (torch.load(tmp_path / f"weights-rank{rank}.pt", weights_only=True) for rank in (0, 1))
    for network in ("g", "d", "g_ema"):
        for name, value in rank0[network].items():
            assert torch.equal(value, rank1[network][name]), f"{network}.{name}"
    # Rank 1 runs every signature on rank 0's choice (rank 0 alone also measured its sample grids).
    choices = [pickle.loads((tmp_path / f"auto-rank{rank}.pkl").read_bytes()) for rank in (0, 1)]
    assert choices[1] and all(choices[0][key] == name for key, name in choices[1].items())
    assert set(choices[1].values()) == {"reference"}
    # Rank 0 alone wrote the checkpoint; it holds both processes' RNG states (different streams).
    checkpoint = load_checkpoint(str(tmp_path / LATEST), initial)
    assert checkpoint["step"] == 3 and len(checkpoint["rng"]) == 2
    assert not torch.equal(checkpoint["rng"][0]["torch"], checkpoint["rng"][1]["torch"])


def train_until_rank1_is_signalled(rank, port, out):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    step = Trainer.train_step

    def step_then_signal_rank1(self):
        losses = step(self)
        if rank == 1 and self.step == 2:  # as a cluster preempting one node first would
            os.kill(os.getpid(), signal.SIGTERM)
        return losses

    Trainer.train_step = step_then_signal_rank1
    trainer = train(tiny_config(out, batch=8, steps=50, device="cpu"))
    with open(os.path.join(out, f"stopped-rank{rank}.pkl"), "wb") as f:
        pickle.dump((trainer.step, trainer.stopped_by), f)


@pytest.mark.slow
def test_a_signal_to_one_process_stops_all_of_them_at_the_same_step(tmp_path):
    mp.spawn(train_until_rank1_is_signalled, args=(free_port(), str(tmp_path)), nprocs=2)
    stopped = [pickle.loads((tmp_path / f"stopped-rank{rank}.pkl").read_bytes()) for rank in (0, 1)]
    assert stopped == [(2, signal.SIGTERM), (2, signal.SIGTERM)]
    assert load_checkpoint(str(tmp_path / LATEST))["step"] == 2
