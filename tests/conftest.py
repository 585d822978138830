"""Shared test set-up, and the checks every backend's op tests run on the cases of
pixelfolder_ops.correctness (test_extension.py for cpu, test_extension_cuda.py for cuda, test_triton.py).

``@pytest.mark.needs_backend("cpu")`` (or on a module, ``pytestmark = ...``) skips a test when that
backend cannot run here; without a name it reads the test's ``backend`` parameter. The question is asked
when the test runs, never at import or collection: asking about cpu or cuda loads the compiled extension
(building it on first use), which ``pytest --collect-only`` must not do.
"""
import copy
import hashlib
import os
import subprocess
import sys

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

if not torch.cuda.is_available():
    # Without a GPU the Triton kernels run under Triton's interpreter. A kernel is made for one mode when
    # its module is imported, so the switch must be on before any test module imports one.
    os.environ["TRITON_INTERPRET"] = "1"

import pixelfolder_ops  # noqa: E402
from pixelfolder_ops import correctness  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "needs_backend(*names): skips the test, when it runs, if a named backend "
                                       "(default: the test's 'backend' parameter) cannot run here")


def pytest_runtest_setup(item):
    for marker in item.iter_markers("needs_backend"):
        names = marker.args or (item.callspec.params["backend"],)
        for name in names:
            reason = pixelfolder_ops.backend._unavailable_reason(name)
            if reason is not None:
                pytest.skip(f"the {name} backend is unavailable: {reason}")


@pytest.fixture(autouse=True)
def default_backend():
    """Each test starts with the default backend choice and no measured choices of 'auto',
    whatever an earlier one set."""
    pixelfolder_ops.set_backend(None)
    pixelfolder_ops.backend.clear_auto_choices()
    yield
    pixelfolder_ops.set_backend(None)
    pixelfolder_ops.backend.clear_auto_choices()


# ------------------------------------------------------------------------------- checks on the cases

def _assert_matches_reference(case_name, backend, dtype, device="cpu", layout="contiguous", tf32=False, seed=0):
    """``backend``'s output and every gradient of the case, against the reference in float64 on the same
    rounded inputs, each within the case's tolerance."""
    case = correctness.find(case_name)
    results = correctness.check_case(case, backend, dtype, device, layout, seed, tf32)
    failures = [f"{output}: error {error:.3g} > tolerance {tolerance:.3g}"
                for output, (error, tolerance) in results.items() if not error <= tolerance]
    assert not failures, f"{case.name} on {backend} in {dtype}, {layout}: " + "; ".join(failures)


@pytest.fixture
def assert_matches_reference():
    return _assert_matches_reference


@pytest.fixture
def assert_follows_the_layout_rule():
    """assert_follows_the_layout_rule(case_name, backend, layout, device): the case's output, made from
    4-D tensors in ``layout``, is laid out by the rule of pixelfolder_ops._layout: channels-last exactly
    when the first 4-D tensor is."""
    from pixelfolder_ops import _layout

    def check(case_name, backend, layout, device="cpu"):
        case = correctness.find(case_name)
        tensors = case.inputs(torch.float32, device, layout)
        first = next(tensor for tensor in tensors.values() if tensor.dim() == 4)
        output = case.call(tensors, backend)
        # (An output of one pixel per channel is both.)
        assert output.is_contiguous(memory_format=_layout.memory_format(first)), output.stride()
    return check


def _differentiable_call(case, backend, device, dtype=torch.float64, layout="contiguous"):
    """The case's op on ``backend`` as a function of its drawn tensors, and those tensors."""
    tensors = case.inputs(dtype, device, layout)
    names = case.differentiable

    def call(*drawn):
        return case.call({**tensors, **dict(zip(names, drawn))}, backend)
    return call, [tensors[name] for name in names]


@pytest.fixture
def gradchecks():
    """gradchecks(case_name, backend, device, second_order=False, fast_mode=True): gradcheck in float64
    (gradgradcheck too with ``second_order``) of the case's op on ``backend``; ``fast_mode`` checks a
    random projection of the Jacobian, else all of it."""
    def check(case_name, backend, device="cpu", second_order=False, fast_mode=True):
        call, inputs = _differentiable_call(correctness.find(case_name), backend, device)
        assert torch.autograd.gradcheck(call, inputs, fast_mode=fast_mode)
        if second_order:
            assert torch.autograd.gradgradcheck(call, inputs, fast_mode=fast_mode)
    return check


@pytest.fixture
def second_order_error():
    """second_order_error(case_name, backend, device): differentiating the case's op twice on ``backend``
    is a clear error, not a wrong number."""
    def check(case_name, backend, device="cpu"):
        call, inputs = _differentiable_call(correctness.find(case_name), backend, device, torch.float32)
        (grad,) = torch.autograd.grad(call(*inputs).square().sum(), inputs[0], create_graph=True)
        with pytest.raises(RuntimeError, match="supports first-order gradients only"):
            grad.sum().backward()
    return check


def backward_digest(case_names, backend, dtype=torch.float32, device="cpu", layouts=("contiguous", "channels_last")):
    """A digest of the output and every gradient of the named cases, in each layout, for the cases' output
    gradient: two runs that differ in one bit give another digest."""
    digest = hashlib.sha256()
    for name in case_names:
        case = correctness.find(name)
        for layout in layouts:
            tensors = case.inputs(dtype, device, layout)
            grad_output = torch.randn(case.call(tensors, "reference").shape, dtype=torch.float64,
                                      generator=torch.Generator().manual_seed(1))
            output, grads = correctness.forward_backward(case, tensors, backend, grad_output)
            for tensor in (output, *grads.values()):
                digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@pytest.fixture
def exact_float32():
    """float32 convs and matmuls without TF32, so that float32 is compared at float32's precision."""
    with correctness.tf32_mode(False):
        yield


@pytest.fixture
def digest_of_the_backward():
    return backward_digest


def _digests_under_emulation_seeds(case_names, backend, layouts, seeds=(1, 2)):
    """The set of backward_digest's digests, one run each in a new process under each emulation seed (the
    seed of the block and thread order the emulation build draws once per process)."""
    tests = os.path.dirname(os.path.abspath(__file__))
    code = f"import conftest; print(conftest.backward_digest({list(case_names)!r}, {backend!r}, layouts={layouts!r}))"
    digests = set()
    for seed in seeds:
        environment = dict(os.environ, PIXELFOLDER_CUDA_EMULATION_SEED=str(seed),
                           PYTHONPATH=os.pathsep.join([tests, os.path.dirname(tests), os.environ.get("PYTHONPATH", "")]))
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment,
                                cwd=os.path.dirname(tests))
        assert result.returncode == 0, result.stderr[-2000:]
        digests.add(result.stdout.split()[-1])
    return digests


@pytest.fixture
def digests_under_emulation_seeds():
    return _digests_under_emulation_seeds


class _OpCalls(TorchDispatchMode):
    """Records every call of an op of ``namespace`` (torch.ops.<namespace>.*), those the ops make of each
    other inside their kernels included: {"op", "args", "kwargs"}, the tensors cloned. While
    ``differentiating``, a call not made inside another op keeps the tensors' requires_grad (those of
    the inputs the case differentiates), so that opcheck tests its autograd formula; no other does."""

    # The dispatch keys below the Python one: an op's own kernel, run with this mode still active, so
    # that the calls it makes through the dispatcher are recorded too.
    _KERNEL_KEYS = torch._C._dispatch_keyset_full_after(torch._C.DispatchKey.Python)

    def __init__(self, namespace):
        super().__init__()
        self.namespace, self.calls, self.depth, self.differentiating = namespace, [], 0, True

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func.namespace != self.namespace:
            return func(*args, **kwargs)

        def keep(value):
            if isinstance(value, torch.Tensor):
                return value.detach().clone().requires_grad_(
                    value.requires_grad and value.is_floating_point() and self.depth == 0 and self.differentiating)
            if isinstance(value, (list, tuple)):
                return type(value)(keep(v) for v in value)
            if isinstance(value, dict):
                return {key: keep(v) for key, v in value.items()}
            return value
        self.calls.append({"op": func, "args": keep(args), "kwargs": keep(kwargs)})
        tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
        self.depth += 1
        try:
            with self:
                return func.redispatch(torch._C._dispatch_keys(tensors[0]) & self._KERNEL_KEYS, *args, **kwargs)
        finally:
            self.depth -= 1


def op_calls(case_name, backend, namespace, dtype=torch.float32, device="cpu"):
    """Every call of an op of ``namespace`` the case makes on ``backend``, forward and backward (and the
    backward's backward for a second-order case)."""
    case = correctness.find(case_name)
    tensors = case.inputs(dtype, device)
    inputs = [tensors[name] for name in case.differentiable]
    second_order = correctness.SECOND_ORDER in case.tags
    recorder = _OpCalls(namespace)
    with recorder:
        output = case.call(tensors, backend)
        recorder.differentiating = second_order
        # Differentiable in the output gradient too: a backward linear in it (fold's) depends on nothing else.
        grad_output = torch.ones_like(output).requires_grad_(second_order)
        grads = torch.autograd.grad(output, inputs, grad_output, create_graph=second_order)
        if second_order:
            recorder.differentiating = False
            torch.autograd.grad(sum(g.square().sum() for g in grads), [*inputs, grad_output], allow_unused=True)
    return recorder.calls


@pytest.fixture
def opchecks():
    """opchecks(case_name, backend, namespace, dtype, device): torch.library.opcheck of every op of
    ``namespace`` the case calls (its internal ops included) with the arguments it was called with:
    schema, fake kernel, autograd registration and dispatch agree with the real kernel. Returns the
    names of the ops checked."""
    def check(case_name, backend, namespace, dtype=torch.float32, device="cpu"):
        calls = op_calls(case_name, backend, namespace, dtype, device)
        assert calls, f"{case_name} calls no op of {namespace} on {backend}"
        for call in calls:
            torch.library.opcheck(call["op"], call["args"], call["kwargs"])
        return {call["op"].name() for call in calls}
    return check


@pytest.fixture
def compiles_to_one_graph():
    """compiles_to_one_graph(case_name, backend, device, compiler): the case's op traced whole by
    torch.compile (fullgraph; AOT autograd runs the fake kernels and the autograd formulas), forward and
    backward, within the case's float32 tolerance of the eager result (Inductor may fuse the ATen ops of
    a backward formula differently; data movement stays exact)."""
    def check(case_name, backend, device="cpu", compiler="aot_eager"):
        torch._dynamo.reset()
        case = correctness.find(case_name)
        call, inputs = _differentiable_call(case, backend, device, torch.float32)
        compiled = torch.compile(call, fullgraph=True, backend=compiler)
        expected = call(*inputs)
        output = compiled(*inputs)
        grad_output = torch.randn(expected.shape, generator=torch.Generator().manual_seed(1)).to(expected)
        assert correctness.relative_error(output, expected) <= case.tolerance(torch.float32)
        for grad, expected_grad in zip(torch.autograd.grad(output, inputs, grad_output),
                                       torch.autograd.grad(expected, inputs, grad_output)):
            assert correctness.relative_error(grad, expected_grad) <= case.tolerance(torch.float32)
    return check


# ------------------------------------------------------------------------------------------ the models

def _largest_activation(model, *inputs, **kwargs):
    """The number of values of the model's largest activation: every sum a layer makes (a conv's weight
    gradient over the positions, the noise strength's over every value) has at most that many terms."""
    sizes = []
    hooks = [module.register_forward_hook(lambda module, args, output: sizes.append(
        output.numel() if isinstance(output, torch.Tensor) else 0)) for module in model.modules()]
    try:
        with torch.no_grad():
            model(*inputs, **kwargs)
    finally:
        for hook in hooks:
            hook.remove()
    return max(sizes)


def model_tolerance(model, *inputs, **kwargs):
    """The tolerance (correctness.tolerance) of a float32 model's output and gradients: that of its
    longest sum."""
    return correctness.tolerance(torch.float32, _largest_activation(model, *inputs, **kwargs))


@pytest.fixture
def tolerance_of_the_model():
    return model_tolerance


def _model_results(model, backend, inputs, kwargs, r1):
    """The model's output, and the gradient with respect to every parameter (as one vector) of the mean
    square of the output, or with ``r1`` of the R1 penalty: the squared gradient of the summed output
    with respect to the (first) input, differentiated twice as the discriminator's lazy R1 step does."""
    parameters = list(model.parameters())
    with pixelfolder_ops.use_backend(backend):
        if r1:
            image = inputs[0].detach().requires_grad_()
            output = model(image, *inputs[1:], **kwargs)
            (grad,) = torch.autograd.grad(output.sum(), image, create_graph=True)
            grads = torch.autograd.grad(grad.square().sum(), parameters, allow_unused=True)
        else:
            output = model(*inputs, **kwargs)
            grads = torch.autograd.grad(output.square().mean(), parameters, allow_unused=True)
    return output.detach(), torch.cat([(torch.zeros_like(p) if g is None else g).flatten().double()
                                       for p, g in zip(parameters, grads)])


@pytest.fixture
def assert_model_matches_reference():
    """assert_model_matches_reference(model, backend, *inputs, r1=False, **kwargs): the float32 model's
    output and parameter gradient (``_model_results``) on ``backend``, against the reference in float64
    (a copy of the model, the same inputs), each within the model's tolerance (normwise, the gradient as
    one vector: a small parameter's gradient on its own can be ill-conditioned, as the R1 penalty's
    biases are). Pass the noise of a generator: float64 draws other values."""
    def double(value):
        if isinstance(value, torch.Tensor):
            return value.double()
        if isinstance(value, dict):
            return {key: double(v) for key, v in value.items()}
        return [double(v) for v in value] if isinstance(value, (list, tuple)) else value

    def check(model, backend, *inputs, r1=False, **kwargs):
        tolerance = model_tolerance(model, *inputs, **kwargs)
        output, grads = _model_results(model, backend, inputs, kwargs, r1)
        expected, expected_grads = _model_results(copy.deepcopy(model).double(), "reference", double(inputs),
                                                  double(kwargs), r1)
        assert correctness.relative_error(output, expected) <= tolerance
        assert correctness.relative_error(grads, expected_grads) <= tolerance
    return check
