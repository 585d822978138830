"""The cases that reach every path of the GPU kernels (the CUDA_PATHS cases of pixelfolder_ops.correctness:
more elements than a launch has threads, every lane of a warp, several blocks per sum) on the cpu backend
in float32. CI runs this file in the CUDA emulation build (PIXELFOLDER_CUDA_EMULATION=1), where the cpu
backend is the CUDA kernels with the emulation's memory checks: a kernel that skips a grid-stride step
or a lane gives wrong values here, and one that reads out of bounds or races raises."""
import pytest
import torch

from pixelfolder_ops import correctness

pytestmark = [pytest.mark.slow, pytest.mark.needs_backend("cpu")]
CASE_NAMES = [case.name for case in correctness.kernel_path_cases()]
THREE_CHUNKS = "styled conv 3->36 49x45, unfold, three reduction chunks and two channel tiles"


@pytest.mark.parametrize("case_name", CASE_NAMES)
def test_kernel_path_case_within_tolerance(case_name, assert_matches_reference):
    assert_matches_reference(case_name, "cpu", torch.float32)


def test_sums_over_three_blocks_give_the_same_bits_under_other_emulation_seeds(digests_under_emulation_seeds):
    # In the emulation build the seed draws the order of blocks and of threads: three blocks adding into
    # one sum in their order would give other bits under another seed (two give the same: a + b = b + a).
    assert len(digests_under_emulation_seeds([THREE_CHUNKS], "cpu", ("contiguous",))) == 1
