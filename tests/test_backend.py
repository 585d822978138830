"""What 'auto' measures, where and how (pixelfolder_ops.backend), with fake backends in place of the
kernels; the output layout rule every backend follows (pixelfolder_ops._layout); the gradient formula
the compiled backends share (pixelfolder_ops._gradients)."""
import threading
import time
import types

import pytest
import torch

import pixelfolder_ops as ops
from pixelfolder_ops import _gradients, _layout, backend, reference
from pixelfolder_ops.fold import FoldArguments

CPU, CUDA, META = torch.device("cpu"), torch.device("cuda", 1), torch.device("meta")


def counting_backend(calls, name, error=None, seconds=0.0):
    """A backend module whose fold records each call under ``name``, takes ``seconds`` (and raises
    ``error`` if given)."""
    def fold(args):
        calls.append(name)
        time.sleep(seconds)
        if error is not None:
            raise error
        return args.input
    return types.SimpleNamespace(fold=fold, unavailable_reason=lambda n: None)


@pytest.fixture
def every_backend_available(monkeypatch):
    monkeypatch.setattr(backend, "_unavailable_reason", lambda name: None)
    monkeypatch.delenv(backend.AUTO_ENV_VAR, raising=False)
    monkeypatch.delenv(backend.ENV_VAR, raising=False)


def test_auto_measures_on_a_gpu_only_unless_told(every_backend_available, monkeypatch):
    # The module docstring's rule: measure on CUDA, take the preference order on the CPU and elsewhere.
    assert backend._auto_measures(CUDA) is True
    assert backend._auto_measures(CPU) is False and backend._auto_measures(META) is False
    assert backend.auto_measures(CUDA) and not backend.auto_measures(CPU)
    monkeypatch.setenv(backend.AUTO_ENV_VAR, "measure")
    assert backend.auto_measures(CPU) and backend._auto_measures(META) is True
    monkeypatch.setenv(backend.AUTO_ENV_VAR, "preference")
    assert not backend.auto_measures(CUDA)


def test_auto_measures_only_when_auto_is_in_force_and_has_a_choice(every_backend_available, monkeypatch):
    with ops.use_backend("cuda"):
        assert not backend.auto_measures(CUDA)
    assert backend.auto_measures(CUDA)
    monkeypatch.setattr(backend, "_unavailable_reason", lambda name: None if name == "reference" else "not built")
    assert not backend.auto_measures(CUDA)  # the reference alone: nothing to choose between


def test_auto_on_a_gpu_measures_unasked_keeps_its_choice_and_measures_nothing_while_compiling(
        every_backend_available, monkeypatch):
    calls = []
    for name, seconds in (("cuda", 0.01), ("triton", 0.0), ("reference", 0.005)):
        monkeypatch.setitem(backend._modules, name, counting_backend(calls, name, seconds=seconds))
    # Meta tensors stand for a GPU's: auto treats their device as it treats CUDA.
    monkeypatch.setitem(backend._AUTO_PREFERENCE, "meta", backend._AUTO_PREFERENCE["cuda"])
    monkeypatch.setitem(backend._AUTO_MEASURES, "meta", True)
    x, y = FoldArguments(torch.zeros(1, 4, 2, 2, device="meta")), FoldArguments(torch.zeros(1, 4, 4, 4, device="meta"))
    assert backend._auto_backend("fold", x) == "triton"
    assert backend.auto_choices() == {("fold", "meta", "inference", backend._signature(x)): "triton"}
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    calls.clear()
    assert backend._auto_backend("fold", y) == "cuda"  # the preferred one, unmeasured
    assert backend._auto_backend("fold", x) == "triton" and calls == []  # measured before: kept
    assert len(backend.auto_choices()) == 1
    # A device type 'auto' has no preference for takes the reference.
    monkeypatch.delitem(backend._AUTO_PREFERENCE, "meta")
    assert backend._auto_candidates(META) == ["reference"]


def timed_backend(name, forward_seconds, backward_seconds, calls):
    """A backend module whose fold is the identity, with a forward and a backward of the given durations."""
    class Identity(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            time.sleep(forward_seconds)
            return x.clone()

        @staticmethod
        def backward(ctx, grad):
            calls.append((name, "backward"))
            time.sleep(backward_seconds)
            return grad

    def fold(args):
        calls.append((name, "forward"))
        return Identity.apply(args.input)
    return types.SimpleNamespace(fold=fold, unavailable_reason=lambda n: None)


def test_auto_times_the_backward_too_when_the_inputs_require_gradients(every_backend_available, monkeypatch):
    # cuda: the faster forward, with a slow backward; triton: a slower forward, a fast backward.
    calls = []
    monkeypatch.setitem(backend._modules, "cuda", timed_backend("cuda", 0.0, 0.05, calls))
    monkeypatch.setitem(backend._modules, "triton", timed_backend("triton", 0.01, 0.0, calls))
    monkeypatch.setitem(backend._AUTO_PREFERENCE, "cpu", ("cuda", "triton"))
    monkeypatch.setitem(backend._AUTO_MEASURES, "cpu", True)
    x = torch.ones(1, 4, 2, 2)
    assert backend._auto_backend("fold", FoldArguments(x)) == "cuda"  # inference: the forward alone
    assert ("cuda", "backward") not in calls
    calls.clear()
    trained = x.clone().requires_grad_()
    assert backend._auto_backend("fold", FoldArguments(trained)) == "triton"  # training: forward and backward
    assert calls.count(("cuda", "backward")) == calls.count(("cuda", "forward")) == 4
    with torch.no_grad():  # no gradient will be taken: the inference choice
        assert backend._auto_backend("fold", FoldArguments(trained)) == "cuda"
    assert sorted(mode for _, _, mode, _ in backend.auto_choices()) == ["inference", "training"]
    assert trained.grad is None  # measuring accumulates no gradient into the caller's tensors


def test_the_backend_chosen_in_one_thread_is_that_threads(every_backend_available):
    ops.set_backend("reference")
    seen = []
    thread = threading.Thread(target=lambda: seen.append(ops.get_backend()))
    thread.start()
    thread.join()
    assert seen == ["auto"] and ops.get_backend() == "reference"


def test_a_backends_reason_is_asked_of_its_module_once(monkeypatch):
    asked = []
    monkeypatch.setattr(backend, "_reasons", {})
    monkeypatch.setitem(backend._modules, "cuda", types.SimpleNamespace(
        unavailable_reason=lambda name: asked.append(name) or "no GPU here"))
    assert backend._unavailable_reason("cuda") == "no GPU here" == backend._unavailable_reason("cuda")
    assert asked == ["cuda"]
    monkeypatch.setitem(backend._modules, "triton", ImportError("No module named 'triton'"))
    assert backend._unavailable_reason("triton") == ("its module pixelfolder_ops.triton cannot be imported "
                                                     "(No module named 'triton')")
    # Modules are imported on first use, and an import that fails is kept as its error.
    monkeypatch.setattr(backend, "_modules", {})
    monkeypatch.setitem(backend._MODULES, "triton", "pixelfolder_ops.no_such_backend")
    assert backend._backend_module("reference") is reference
    assert isinstance(backend._backend_module("triton"), ImportError)
    with pytest.raises(ValueError, match=r"^pixelfolder_ops: unknown backend 'fast'; expected one of auto, "
                                         r"reference, cpu, cuda, triton$"):
        ops.set_backend("fast")


def test_adopted_choices_are_keyed_by_this_process_device():
    theirs = {("fold", "cuda:0", "training", ((2, 3, 4, 4),)): "triton", ("to_rgb", "cuda:0", "inference", ()): "cuda"}
    backend.adopt_auto_choices(theirs, CUDA)
    assert backend.auto_choices() == {("fold", "cuda:1", "training", ((2, 3, 4, 4),)): "triton",
                                      ("to_rgb", "cuda:1", "inference", ()): "cuda"}


def test_a_signature_describes_tensors_by_shape_dtype_and_strides_inside_tuples():
    x = torch.zeros(2, 3, 4, 5)
    signature = backend._signature((x, (1, 2), [x.transpose(2, 3)], None, 0.2))
    assert signature == (((2, 3, 4, 5), torch.float32, (60, 20, 5, 1)), (1, 2),
                         (((2, 3, 5, 4), torch.float32, (60, 20, 1, 5)),), None, 0.2)
    assert backend._signature(((1, 2),)) != backend._signature(((2, 1),))


def test_nothing_is_measured_while_compiling_or_capturing_a_cuda_graph(monkeypatch):
    capturing = False
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: capturing)
    assert backend._can_measure(CPU) and backend._can_measure(CUDA)
    capturing = True
    assert not backend._can_measure(CUDA) and backend._can_measure(CPU)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert not backend._can_measure(CPU)


def test_each_candidate_runs_once_untimed_then_three_timed_times(every_backend_available, monkeypatch):
    calls, synchronized = [], []
    monkeypatch.setitem(backend._modules, "cuda", counting_backend(calls, "cuda"))
    monkeypatch.setitem(backend._modules, "triton", counting_backend(calls, "triton"))
    monkeypatch.setattr(torch.cuda, "synchronize", synchronized.append)
    assert backend._fastest("fold", ["cuda", "triton"], CUDA, FoldArguments(torch.zeros(1, 4, 2, 2))) in ("cuda", "triton")
    assert calls == ["cuda"] * 4 + ["triton"] * 4
    # Around each timed call, on the device measured (the GPU runs asynchronously).
    assert synchronized == [CUDA] * 12
    synchronized.clear()
    backend._fastest("fold", ["cuda"], CPU, FoldArguments(torch.zeros(1, 4, 2, 2)))
    assert synchronized == []


def test_when_no_candidate_can_run_the_preferred_ones_error_is_raised(every_backend_available, monkeypatch):
    calls = []
    monkeypatch.setitem(backend._modules, "cuda", counting_backend(calls, "cuda", RuntimeError("no float64 here")))
    monkeypatch.setitem(backend._modules, "triton", counting_backend(calls, "triton", RuntimeError("no 5x5 here")))
    with pytest.raises(RuntimeError, match="no float64 here"):
        backend._fastest("fold", ["cuda", "triton"], CUDA, FoldArguments(torch.zeros(1, 4, 2, 2)))


@pytest.mark.parametrize("make, expected", [
    (lambda: torch.zeros(2, 3, 4, 5), torch.contiguous_format),
    (lambda: torch.zeros(2, 3, 4, 5).contiguous(memory_format=torch.channels_last), torch.channels_last),
    (lambda: torch.zeros(1, 3, 4, 5).contiguous(memory_format=torch.channels_last), torch.channels_last),
    # One channels-last image broadcast over the batch (batch stride 0) keeps that image's layout.
    (lambda: torch.zeros(1, 3, 4, 5).contiguous(memory_format=torch.channels_last).expand(2, -1, -1, -1),
     torch.channels_last),
    # Neither layout (height and width swapped): the kernels write NCHW.
    (lambda: torch.zeros(2, 3, 5, 4).transpose(2, 3), torch.contiguous_format),
    # One channel, or 1x1 images, are both layouts at once: NCHW.
    (lambda: torch.zeros(2, 1, 4, 5).contiguous(memory_format=torch.channels_last), torch.contiguous_format),
    (lambda: torch.zeros(0, 3, 4, 5).contiguous(memory_format=torch.channels_last), torch.contiguous_format),
    (lambda: torch.zeros(3, 4, 5).transpose(0, 2), torch.contiguous_format),
    (lambda: torch.tensor(1.0), torch.contiguous_format),
])
def test_output_layout_rule(make, expected):
    assert ops.output_memory_format(make()) == expected


def test_empty_outputs_take_one_tensors_dtype_and_device_and_the_others_layout():
    channels_last = torch.zeros(2, 3, 4, 5, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    nchw = torch.zeros(2, 3, 4, 5, dtype=torch.float16)
    out = _layout.empty((2, 6, 8, 10), nchw, layout_of=channels_last)
    assert out.shape == (2, 6, 8, 10) and out.dtype == torch.float16 and out.device == nchw.device
    assert out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous()
    own = _layout.empty((2, 6, 8, 10), channels_last)
    assert own.dtype == torch.float64 and own.is_contiguous(memory_format=torch.channels_last)
    assert _layout.empty((2, 6, 8, 10), nchw).is_contiguous()
    assert _layout.empty((2, 6, 8, 10), nchw.to("meta")).device.type == "meta"  # not the default device


def test_the_shared_1x1_modulated_conv_backward_is_autograds():
    # out[b] = (weight[:, :, 0, 0] * styles[b]) @ x[b], written with einsum and differentiated by autograd.
    generator = torch.Generator().manual_seed(0)
    x, weight, styles, grad_output = (torch.randn(*shape, dtype=torch.float64, generator=generator)
                                      for shape in ((2, 5, 3, 4), (3, 5, 1, 1), (2, 5), (2, 3, 3, 4)))
    tensors = [t.requires_grad_() for t in (x, weight, styles)]
    out = torch.einsum("oi,bi,bihw->bohw", weight[:, :, 0, 0], styles, x)
    expected = torch.autograd.grad(out, tensors, grad_output)
    for actual, oracle in zip(_gradients.modulated_1x1_conv_backward(grad_output, x, weight, styles), expected):
        assert actual.shape == oracle.shape
        torch.testing.assert_close(actual, oracle, rtol=1e-12, atol=1e-12)
