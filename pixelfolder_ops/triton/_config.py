"""What every Triton kernel here shares: interpreter detection, autotune configs and dot precision."""
import os

import torch
import triton

# Read once, as triton.jit does when it decorates the kernels: the interpreter runs them on the CPU.
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


def autotune_configs(gpu_configs, interpreter_config):
    """Hopper-sized tiles on a GPU; one small tile under the interpreter, where tuning only costs time.

    Each config is (meta-parameters, num_warps, num_stages)."""
    if INTERPRET:
        return [triton.Config(interpreter_config)]
    return [triton.Config(meta, num_warps=warps, num_stages=stages) for meta, warps, stages in gpu_configs]


def dot_precision(dtype):
    """tl.dot's input precision: float32 convs follow PyTorch's cuDNN TF32 switch, as the reference's do."""
    if dtype == torch.float32 and not torch.backends.cudnn.allow_tf32:
        return "ieee"
    return "tf32"

