"""The Triton backend on the cases of pixelfolder_ops.correctness: every op's output and every gradient
against the reference in float64, gradcheck, opcheck of its ops, torch.compile, the same bits every run,
the output layout rule, and PixelFolder.

On a machine without CUDA the kernels run on the CPU under Triton's interpreter (TRITON_INTERPRET=1, set
by conftest.py before any kernel is imported), on the small cases and those that span several of its
tiles (64 x 64 x 64); there bfloat16 is left out (the interpreter computes bfloat16 tl.dot wrongly) and
tested on CUDA, with PixelFolder's layer shapes.
"""
import pytest
import torch

import models
from pixelfolder_ops import correctness
from pixelfolder_ops.correctness import BLOCKS, CUDA_PATHS, LARGE, LAYER, SECOND_ORDER, SMALL, TILES

pytestmark = [pytest.mark.needs_backend("triton"), pytest.mark.usefixtures("exact_float32")]
BACKEND = "triton"
ON_CUDA = torch.cuda.is_available()
DEVICE = "cuda" if ON_CUDA else "cpu"
DTYPES = correctness.backend_dtypes(BACKEND, DEVICE)


# The ops this backend runs on its own kernels: fused_leaky_relu, upfirdn2d and the resampling convs
# (modulated_conv2d's up / down, styled_conv2d's up) are the reference's, tested in test_ops.py.
OWN_OPS = ("fold", "unfold", "fourier_embedding", "modulated_conv2d", "styled_conv2d", "to_rgb")


def on_triton_kernels(case):
    return case.op in OWN_OPS and case.option("up") in (None, 1) and case.option("down") in (None, 1)


def names(*tags, op=None):
    """The cases that run this backend's kernels; under the interpreter neither a layer's nor a GPU's
    shapes, nor those sized for the CUDA kernels' blocks."""
    too_large = {CUDA_PATHS} if ON_CUDA else {CUDA_PATHS, LARGE, LAYER, BLOCKS}
    return [case.name for case in correctness.cases() if on_triton_kernels(case) and not too_large & case.tags
            and set(tags) <= case.tags and op in (None, case.op)]


def first_of_each_op():
    return [names(SMALL, op=op)[0] for op in OWN_OPS]


# The kernels that compute float64 in float64 (gradcheck needs it): the Fourier embedding computes in
# float32 whatever its dtype.
FLOAT64_OPS = ("fold", "unfold", "modulated_conv2d", "styled_conv2d", "to_rgb")


def runs():
    """Every case in every dtype in NCHW, in every layout in float32, the tiles in float64 too. Under the
    interpreter, whose time goes by the tile, by default only every small case in every dtype and the
    first of each op in every layout; the rest (the tiles: seconds each) is slow."""
    first = first_of_each_op()
    for name in names():
        case = correctness.find(name)
        for dtype in (*DTYPES, torch.float64):
            for layout in correctness.LAYOUTS:
                if dtype == torch.float64 and (TILES not in case.tags or case.op not in FLOAT64_OPS
                                               or layout != "contiguous"):
                    continue
                if layout != "contiguous" and dtype != torch.float32:
                    continue
                default = ON_CUDA or (dtype != torch.float64 and SMALL in case.tags
                                      and (layout == "contiguous" or name in first))
                yield pytest.param(name, dtype, layout, id=f"{name}-{str(dtype)[6:]}-{layout}",
                                   marks=() if default else pytest.mark.slow)


# The ops it takes from the reference: entry points that must run, in float32 (the reference's own
# accuracy is tested in test_ops.py).
@pytest.mark.parametrize("case", [case.name for case in correctness.cases()
                                  if SMALL in case.tags and not on_triton_kernels(case)])
def test_the_ops_it_takes_from_the_reference_run(case, assert_matches_reference):
    assert_matches_reference(case, BACKEND, torch.float32, DEVICE)


@pytest.mark.parametrize("case, dtype, layout", list(runs()))
def test_matches_the_reference(case, dtype, layout, assert_matches_reference):
    assert_matches_reference(case, BACKEND, dtype, DEVICE, layout)


def layout_runs():
    for name in first_of_each_op():
        if correctness.find(name).op == "fourier_embedding":  # made from a grid, always NCHW
            continue
        for layout in correctness.LAYOUTS:
            yield name, layout


# Its own kernels' outputs follow the layout rule (pixelfolder_ops._layout).
@pytest.mark.parametrize("case, layout", list(layout_runs()))
def test_outputs_follow_the_layout_rule(case, layout, assert_follows_the_layout_rule):
    assert_follows_the_layout_rule(case, BACKEND, layout, DEVICE)


@pytest.mark.parametrize("case", [name for name in first_of_each_op() if correctness.find(name).op in FLOAT64_OPS])
def test_gradcheck(case, gradchecks):
    gradchecks(case, BACKEND, DEVICE)


@pytest.mark.parametrize("case", [name for name in names(SECOND_ORDER) if correctness.find(name).op in FLOAT64_OPS])
def test_gradgradcheck(case, gradchecks):
    gradchecks(case, BACKEND, DEVICE, second_order=True)


def test_styled_conv2d_second_order_is_a_clear_error(second_order_error):
    second_order_error(names(SMALL, op="styled_conv2d")[0], BACKEND, DEVICE)


@pytest.mark.slow
def test_backward_gives_the_same_bits_twice(digest_of_the_backward):
    cases, layouts = ["styled conv 80->72 9x11 (tiles)"], ("contiguous",)
    assert digest_of_the_backward(cases, BACKEND, device=DEVICE, layouts=layouts) == \
        digest_of_the_backward(cases, BACKEND, device=DEVICE, layouts=layouts)


@pytest.mark.parametrize("case", first_of_each_op())
def test_opcheck(case, opchecks):
    # Schema, fake kernel, autograd registration and dispatch agree with the real kernel, for every op of
    # the backend the case calls.
    opchecks(case, BACKEND, "pixelfolder_triton", device=DEVICE)


def test_opcheck_reaches_every_op_of_the_backend(opchecks, monkeypatch):
    from pixelfolder_ops.triton._library import LIBRARY

    monkeypatch.setattr(torch.library, "opcheck", lambda *args, **kwargs: None)  # the calls alone
    checked = set().union(*(opchecks(case, BACKEND, "pixelfolder_triton", device=DEVICE)
                            for case in first_of_each_op()))
    assert checked == {f"pixelfolder_triton::{name}" for name in LIBRARY._arguments}


@pytest.mark.parametrize("case", first_of_each_op())
def test_compiles_to_one_graph(case, compiles_to_one_graph):
    # AOT autograd without a C++ build on the CPU; Inductor on a GPU.
    compiles_to_one_graph(case, BACKEND, DEVICE, "inductor" if ON_CUDA else "aot_eager")


@pytest.mark.slow
@pytest.mark.parametrize("size,batch", [(16, 2), (64, 1)])
def test_pixelfolder_matches_the_reference(size, batch, assert_model_matches_reference):
    torch.manual_seed(0)
    generator = models.PixelFolder(size, width=0.125).to(DEVICE)
    z = torch.randn(batch, 512, generator=torch.Generator().manual_seed(0)).to(DEVICE)
    noise = [n.to(DEVICE) for n in generator.make_noise(batch, generator=torch.Generator().manual_seed(1),
                                                           device="cpu")]
    assert_model_matches_reference(generator, BACKEND, z, noise=noise)
