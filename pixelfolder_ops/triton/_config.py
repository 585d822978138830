"""What every Triton kernel here shares: interpreter detection, autotune configs, dot precision and the
accumulator's type."""
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


def smallest_block(gpu_configs, interpreter_config, name):
    """The smallest value of one block size over the configs the autotuner may pick: workspaces with a slot
    per tile are sized for it before the launch chooses a config."""
    configs = [interpreter_config] if INTERPRET else [meta for meta, _, _ in gpu_configs]
    return min(config[name] for config in configs)


def dot_precision(dtype):
    """tl.dot's input precision: float32 convs follow PyTorch's cuDNN TF32 switch, as the reference's do;
    float64 dots are exact FMA products."""
    if dtype == torch.float64 or (dtype == torch.float32 and not torch.backends.cudnn.allow_tf32):
        return "ieee"
    return "tf32"


def accumulator_dtype(dtype):
    """The type of the sums (the kernels pick the same): float64 for float64 tensors (gradcheck needs it),
    float32 otherwise."""
    return torch.float64 if dtype == torch.float64 else torch.float32
