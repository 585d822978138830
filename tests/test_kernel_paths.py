"""The cases that reach every path of the GPU kernels (pixelfolder_ops.correctness.kernel_path_cases: more
elements than a launch has threads, every lane of a warp, several blocks per sum) on the cpu backend in
float32. CI runs this file in the CUDA emulation build (PIXELFOLDER_CUDA_EMULATION=1), where the cpu
backend is the CUDA kernels with the emulation's memory checks: a kernel that skips a grid-stride step
or a lane gives wrong values here, and one that reads out of bounds or races raises."""
import hashlib
import os
import subprocess
import sys

import pytest
import torch

from pixelfolder_ops import backend, correctness

REASON = backend._unavailable_reason("cpu")
needs_extension = pytest.mark.skipif(REASON is not None, reason=f"the cpu backend is unavailable: {REASON}")
# Built in each test, by name (as tests/test_selfcheck.py does): a case built at collection would be the
# builders of the collecting process.
CASE_NAMES = [case.name for case in correctness.kernel_path_cases()]
THREE_CHUNKS = "styled conv 3->36 49x45, unfold, three reduction chunks and two channel tiles"


def _case(name):
    return next(case for case in correctness.kernel_path_cases() if case.name == name)


@needs_extension
@pytest.mark.slow
@pytest.mark.parametrize("case_name", CASE_NAMES)
def test_kernel_path_case_within_tolerance(case_name):
    case = _case(case_name)
    for output, (error, tolerance) in correctness.check_case(case, "cpu", torch.float32, "cpu").items():
        assert error <= tolerance, f"{case.name}, {output}: error {error:.3g} > tolerance {tolerance:.3g}"


def outputs_digest(case_name):
    """A digest of the case's output and every input's gradient on the cpu backend in float32."""
    made, call = _case(case_name).make(torch.Generator().manual_seed(0))
    tensors = {name: t.float().requires_grad_(True) for name, t in made.items()}
    output = call(tensors, "cpu")
    grad = torch.randn(output.shape, generator=torch.Generator().manual_seed(1))
    digest = hashlib.sha256(output.detach().contiguous().numpy().tobytes())
    for gradient in torch.autograd.grad(output, list(tensors.values()), grad):
        digest.update(gradient.contiguous().numpy().tobytes())
    return digest.hexdigest()


@needs_extension
@pytest.mark.slow
def test_sums_over_three_blocks_give_the_same_bits_under_other_emulation_seeds():
    # In the emulation build the seed draws the order of blocks and of threads: three blocks adding into
    # one sum in their order would give other bits under another seed (two give the same: a + b = b + a).
    tests = os.path.dirname(os.path.abspath(__file__))
    code = (f"import sys; sys.path[:0] = [{tests!r}]; import test_kernel_paths; "
            f"print(test_kernel_paths.outputs_digest({THREE_CHUNKS!r}))")
    digests = set()
    for seed in (1, 2):
        environment = dict(os.environ, PIXELFOLDER_CUDA_EMULATION_SEED=str(seed))
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment,
                                cwd=os.path.dirname(tests))
        assert result.returncode == 0, result.stderr[-2000:]
        digests.add(result.stdout.split()[-1])
    assert len(digests) == 1
