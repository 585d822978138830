"""One process per GPU under torchrun (NCCL on GPUs, gloo on the CPU), or a single process.

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE (and the rendezvous address); without them training
runs in this process alone.
"""
import contextlib
import os
import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self):
        """Rank 0 logs and writes checkpoints."""
        return self.rank == 0

    @property
    def distributed(self):
        return self.world_size > 1


def launched_rank():
    """This process's rank as torchrun set it (0 without torchrun), before any process group exists."""
    return int(os.environ.get("RANK", 0))


def resolve_device(preference, local_rank=0):
    """'auto': this process's GPU if there is one, else the CPU; 'cuda': the GPU (training.cli.device
    checks that there is one); 'cpu'."""
    if preference == "cuda" or (preference == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


@contextlib.contextmanager
def distributed_context(device="auto"):
    """The context of this process; joins the process group for the block when torchrun started it."""
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    if world_size == 1:
        yield DistributedContext(device=resolve_device(device))
        return
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    resolved = resolve_device(device, local_rank)
    if resolved.type == "cuda":
        torch.cuda.set_device(resolved)
    dist.init_process_group("nccl" if resolved.type == "cuda" else "gloo", rank=rank, world_size=world_size)
    try:
        yield DistributedContext(rank, world_size, resolved)
    finally:
        dist.destroy_process_group()


def wrap_ddp(module, context, find_unused_parameters=False):
    """``module`` in DistributedDataParallel when there are several processes, else as is."""
    if not context.distributed:
        return module
    # D's last layer has a (1, C) weight whose gradient comes with strides (1, 1): the same layout
    # as the bucket's (1, C) view, which DDP's stride check flags all the same.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    device_ids = [context.device] if context.device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=device_ids, find_unused_parameters=find_unused_parameters)


def all_reduce_sum(tensor, context):
    """The sum of ``tensor`` over all processes (in place)."""
    if context.distributed:
        dist.all_reduce(tensor)
    return tensor


def all_reduce_max(tensor, context):
    """The elementwise maximum of ``tensor`` over all processes (in place)."""
    if context.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor


def barrier(context):
    """Wait until every process is here."""
    if context.distributed:
        dist.barrier()


def all_gather_objects(obj, context):
    """[obj of rank 0, obj of rank 1, ...] on every process."""
    if not context.distributed:
        return [obj]
    gathered = [None] * context.world_size
    dist.all_gather_object(gathered, obj)
    return gathered
