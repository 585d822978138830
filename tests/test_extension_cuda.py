"""The "cuda" backend: every CUDA source compiles with nvcc (no GPU needed), and on a GPU the cases of
pixelfolder_ops.correctness, every one (the GPU-sized ones too) in every dtype and layout, forward and
every gradient against the reference in float64 on the same GPU; TF32 convs within TF32's accuracy; the
same bits every run; gradcheck, opcheck, torch.compile and the models."""
import glob
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

import models
from pixelfolder_ops import correctness, extension
from pixelfolder_ops.correctness import BLOCKS, CUDA_PATHS, SECOND_ORDER, SMALL
from pixelfolder_ops.extension import LIBRARY

from benchmarks.kernel_resources import nvcc_command, nvcc_path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CUDA_SOURCES = sorted(glob.glob(os.path.join(ROOT, "csrc", "cuda", "*.cu")))
NVCC = nvcc_path()
BACKEND = DEVICE = "cuda"
needs_cuda = pytest.mark.needs_backend(BACKEND)


@pytest.mark.slow
@pytest.mark.skipif(not NVCC or not os.path.exists(NVCC), reason="nvcc is not installed")
def test_every_cuda_source_compiles(tmp_path):
    assert CUDA_SOURCES

    def compile_one(source):
        output = tmp_path / (os.path.basename(source) + ".o")
        result = subprocess.run(nvcc_command(source, str(output)), capture_output=True, text=True)
        return source, result.returncode, result.stdout + result.stderr

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        failures = [f"{source}:\n{log}" for source, code, log in pool.map(compile_one, CUDA_SOURCES) if code]
    assert not failures, "\n\n".join(failures)


names = correctness.case_names


def first_of_each_op():
    """The first small case of each op: together they call every op of the extension (tested below)."""
    return [names(SMALL, op=op)[0] for op in correctness.cases_by_op()]


@needs_cuda
def test_cuda_backend_is_available():
    assert "cuda" in extension.build_info()["backends"]


@needs_cuda
@pytest.mark.parametrize("case, dtype, layout", [
    pytest.param(case.name, dtype, layout, id=f"{case.name}-{str(dtype)[6:]}-{layout}")
    for case in correctness.cases() for dtype in correctness.backend_dtypes(BACKEND, DEVICE) if case.runs_in(dtype)
    for layout in correctness.LAYOUTS])
def test_matches_the_reference(case, dtype, layout, assert_matches_reference):
    assert_matches_reference(case, BACKEND, dtype, DEVICE, layout)


@needs_cuda
@pytest.mark.parametrize("case", [name for name in names() if correctness.find(name).op in
                                  ("modulated_conv2d", "styled_conv2d", "to_rgb")])
def test_convs_in_tf32_within_tf32_accuracy(case, assert_matches_reference):
    # TF32 (cuDNN's default for convs) rounds both factors of every product to 10 mantissa bits.
    assert_matches_reference(case, BACKEND, torch.float32, DEVICE, tf32=True)


@pytest.fixture
def deterministic_cudnn():
    saved = torch.backends.cudnn.deterministic
    torch.backends.cudnn.deterministic = True
    yield
    torch.backends.cudnn.deterministic = saved


@needs_cuda
@pytest.mark.parametrize("case", names(BLOCKS) + names(CUDA_PATHS))
def test_backward_gives_the_same_bits_twice(case, digest_of_the_backward, exact_float32, deterministic_cudnn):
    # Over several reduction blocks (32 channels x 1024 pixels each) in every direction, NCHW and
    # channels-last: every reduction of ours is deterministic (cuDNN's convs are when told to be).
    assert digest_of_the_backward([case], BACKEND, device=DEVICE) == \
        digest_of_the_backward([case], BACKEND, device=DEVICE)


@needs_cuda
@pytest.mark.parametrize("case", names(SMALL))
def test_gradcheck(case, gradchecks):
    gradchecks(case, BACKEND, DEVICE)


@needs_cuda
@pytest.mark.parametrize("case", names(SECOND_ORDER))
def test_gradgradcheck(case, gradchecks):
    gradchecks(case, BACKEND, DEVICE, second_order=True)


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", names(SMALL))
def test_opcheck(case, dtype, opchecks):
    opchecks(case, BACKEND, "pixelfolder_ops", dtype, DEVICE)


@needs_cuda
def test_opcheck_reaches_every_op_of_the_extension(opchecks, monkeypatch):
    monkeypatch.setattr(torch.library, "opcheck", lambda *args, **kwargs: None)  # the calls alone
    checked = set().union(*(opchecks(case, BACKEND, "pixelfolder_ops", device=DEVICE) for case in first_of_each_op()))
    assert checked == {f"pixelfolder_ops::{name}" for name in LIBRARY._arguments}


@needs_cuda
@pytest.mark.parametrize("case", first_of_each_op())
def test_compiles_to_one_graph(case, compiles_to_one_graph, exact_float32):
    compiles_to_one_graph(case, BACKEND, DEVICE, "inductor")


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
@needs_cuda
def test_cuda_ops_refuse_tensors_on_another_gpu():
    # Same device type, another index: a kernel launched on cuda:0 must not read cuda:1 memory.
    upfirdn = correctness.find("upfirdn2d odd 5x7 up 2")
    tensors = upfirdn.inputs(torch.float32, "cuda:0")
    with pytest.raises(RuntimeError, match=r"upfirdn2d: argument 'kernel' must be on cuda:0 .*got cuda:1"):
        LIBRARY.call("upfirdn2d", upfirdn.arguments({**tensors, "kernel": tensors["kernel"].to("cuda:1")}),
                     up=[2, 2], down=[1, 1], pad=[2, 1, 2, 1])
    conv = correctness.find("modulated conv odd 3x3 9->4 5x7")
    tensors = conv.inputs(torch.float32, "cuda:0")
    with pytest.raises(RuntimeError, match=r"modulated_conv2d: argument 'styles' must be on cuda:0 .*got cuda:1"):
        LIBRARY.call("modulated_conv2d", conv.arguments({**tensors, "styles": tensors["styles"].to("cuda:1")}),
                     resample_kernel=None)


@needs_cuda
def test_pixelfolder_matches_the_reference(assert_model_matches_reference, exact_float32):
    torch.manual_seed(0)
    generator = models.PixelFolder(64, width=0.125).to(DEVICE)
    assert_model_matches_reference(generator, BACKEND, torch.randn(2, 512, device=DEVICE),
                                   noise=generator.make_noise(2, device=DEVICE))


@needs_cuda
@pytest.mark.parametrize("r1", [False, True], ids=["loss", "R1 penalty"])
def test_discriminator_matches_the_reference(r1, assert_model_matches_reference, exact_float32):
    torch.manual_seed(0)
    assert_model_matches_reference(models.Discriminator(32, width=0.125).to(DEVICE), BACKEND,
                                   torch.randn(2, 3, 32, 32, device=DEVICE), r1=r1)
