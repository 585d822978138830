"""The correctness cases of every public op, shared by ``python -m pixelfolder_ops`` and the test suite
(tests/test_selfcheck.py), so that what a user checks on their GPU and what CI checks are the same.

Each case calls a public op at one shape: PixelFolder-256's real layer shapes (stage 0, batch 2, small
enough for a CPU) and odd shapes that exercise edges. A backend's result, forward and every input's
gradient, is compared with the reference backend run in float64 on the same (rounded) inputs.
"""
import contextlib
import dataclasses
import math
from typing import Callable

import torch

from .fold import fold, unfold
from .fourier_embedding import fourier_embedding
from .fused_leaky_relu import fused_leaky_relu
from .modulated_conv2d import make_resample_kernel, modulated_conv2d
from .styled_conv2d import styled_conv2d
from .to_rgb import to_rgb
from .upfirdn2d import upfirdn2d

DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
# The dtypes each backend's kernels take (Triton's dot has no float64 path worth checking).
BACKEND_DTYPES = {"reference": DTYPES, "cpu": DTYPES, "cuda": DTYPES,
                  "triton": (torch.float32, torch.bfloat16, torch.float16)}
# Safety factor over the first-order rounding-error estimate of ``tolerance``.
SAFETY = 8.0

def unit_roundoff(dtype):
    return torch.finfo(dtype).eps / 2


def is_16_bit(dtype):
    return torch.finfo(dtype).bits == 16


def tolerance(dtype, reduction, condition=1.0, exact=False):
    """The largest normwise relative error (max |actual - oracle| / max |oracle|) a correct kernel
    may make in ``dtype`` when its longest sum has ``reduction`` terms and it amplifies the rounding
    of its inputs by ``condition``.

    Two sources: the inputs, intermediates and result are stored in ``dtype`` (a few roundings of at
    most the unit roundoff u each, independent of the sum's length), and the sums accumulate in
    float32 for the 16-bit types (else in ``dtype``), whose random-sign rounding errors grow like
    u * sqrt(n) relative to the sum. Pure data movement (``exact``) must be bit-exact."""
    if exact:
        return 0.0
    accumulate = torch.float32 if is_16_bit(dtype) else dtype
    return SAFETY * (unit_roundoff(dtype) * condition + unit_roundoff(accumulate) * math.sqrt(max(reduction, 1)))


@dataclasses.dataclass(frozen=True)
class Case:
    """One call of a public op. ``make(generator)`` returns the float64 tensors the call takes (all
    of them differentiable) and the call itself: ``call(tensors, backend)``."""
    name: str
    op: str
    make: Callable
    reduction: int  # the longest sum behind one value of the output or of a gradient
    condition: float = 1.0  # how much the op amplifies a relative change of its inputs
    exact: bool = False
    # Ends in a leaky ReLU: ``call(t, backend, slope, scale)`` with slope = scale = 1 gives the
    # pre-activation, in the output's layout.
    activated: bool = False

    def tolerance(self, dtype):
        return tolerance(dtype, self.reduction, self.condition, self.exact)


def _randn(generator, *shape):
    return torch.randn(*shape, dtype=torch.float64, generator=generator)


def _fold_case(name, shape, inverse=False):
    function = unfold if inverse else fold

    def make(g):
        return {"input": _randn(g, *shape)}, lambda t, backend: function(t["input"], backend=backend)
    return Case(name, function.__name__, make, reduction=0, exact=True)


def _fourier_case(name, channels, height, width):
    # PixelFolder's initialisation: B uniform in +-sqrt(9/2), b PyTorch's conv-bias default for two
    # inputs (+-1/sqrt(2)); |B [x, y] + b| then stays below 2 sqrt(9/2) + 1/sqrt(2), the factor by which
    # sin's argument (made from rounded coordinates and weights) amplifies their rounding.
    weight_bound, bias_bound = math.sqrt(9 / 2), 1 / math.sqrt(2)

    def make(g):
        tensors = {"weight": (torch.rand(channels, 2, dtype=torch.float64, generator=g) * 2 - 1) * weight_bound,
                   "bias": (torch.rand(channels, dtype=torch.float64, generator=g) * 2 - 1) * bias_bound}
        return tensors, lambda t, backend: fourier_embedding(t["weight"], t["bias"], height, width, backend=backend)
    # The weight's gradient sums over every position.
    return Case(name, "fourier_embedding", make, reduction=height * width,
                condition=2 * weight_bound + bias_bound)


def _leaky_case(name, shape, slope=0.2, scale=math.sqrt(2)):
    def make(g):
        tensors = {"input": _randn(g, *shape), "bias": _randn(g, shape[1])}
        return tensors, lambda t, backend, slope=slope, scale=scale: fused_leaky_relu(
            t["input"], t["bias"], slope, scale, backend=backend)
    # The bias gradient sums over every position but the channel.
    return Case(name, "fused_leaky_relu", make, reduction=math.prod(shape) // shape[1], activated=True)


def _upfirdn_case(name, shape, taps, up, down, pad):
    def make(g):
        tensors = {"input": _randn(g, *shape), "kernel": _randn(g, taps, taps) / taps}
        return tensors, lambda t, backend: upfirdn2d(t["input"], t["kernel"], up, down, pad, backend=backend)
    # The kernel's gradient sums over every output position.
    return Case(name, "upfirdn2d", make, reduction=math.prod(shape) * up * up)


def _positions(shape, up=1):
    return shape[0] * shape[2] * shape[3] * up * up


def _modconv_case(name, shape, out_channels, taps, demodulate=True, up=1, down=1):
    batch, in_channels = shape[:2]

    def make(g):
        tensors = {"input": _randn(g, *shape), "weight": _randn(g, out_channels, in_channels, taps, taps),
                   "styles": _randn(g, batch, in_channels) * 0.5 + 1}

        def call(t, backend):
            return modulated_conv2d(t["input"], t["weight"], t["styles"], demodulate, up, down, backend=backend)
        return tensors, call
    # An output value and its demodulation sum C_in k^2 terms, an input gradient value C_out k^2, a
    # weight gradient value one term per output position.
    return Case(name, "modulated_conv2d", make,
                reduction=max(in_channels * taps * taps, out_channels * taps * taps, _positions(shape, up)))


def _styled_case(name, shape, out_channels, unfold_output, up=1, shared_noise=False):
    batch, in_channels = shape[:2]

    def make(g):
        out_h, out_w = shape[2] * up, shape[3] * up
        tensors = {"input": _randn(g, *shape), "weight": _randn(g, out_channels, in_channels, 3, 3),
                   "styles": _randn(g, batch, in_channels) * 0.5 + 1,
                   "noise": _randn(g, 1 if shared_noise else batch, 1, out_h, out_w),
                   "noise_strength": _randn(g, 1), "bias": _randn(g, out_channels)}

        def call(t, backend, slope=0.2, scale=math.sqrt(2)):
            return styled_conv2d(t["input"], t["weight"], t["styles"], t["noise"], t["noise_strength"], t["bias"],
                                 up=up, negative_slope=slope, gain=scale, unfold_output=unfold_output,
                                 backend=backend)
        return tensors, call
    return Case(name, "styled_conv2d", make,
                reduction=max(in_channels * 9, out_channels * 9, _positions(shape, up) * out_channels), activated=True)


def _to_rgb_case(name, shape, with_skip):
    batch, in_channels, height, width = shape

    def make(g):
        tensors = {"input": _randn(g, *shape), "weight": _randn(g, 3, in_channels, 1, 1),
                   "styles": _randn(g, batch, in_channels) * 0.5 + 1, "bias": _randn(g, 3)}
        if with_skip:
            tensors["skip"] = _randn(g, batch, 3, height // 2, width // 2)

        def call(t, backend):
            kernel = make_resample_kernel([1, 3, 3, 1], t["input"].dtype, t["input"].device) * 4 if with_skip else None
            return to_rgb(t["input"], t["weight"], t["styles"], t["bias"], t.get("skip"), kernel, backend=backend)
        return tensors, call
    return Case(name, "to_rgb", make, reduction=max(in_channels, _positions(shape)))


def cases():
    """Every case, in the order the self-check reports them. PixelFolder-256, stage 0 (R_0 = 16),
    batch 2: the positional branch's fold, the two StyledConvs and the ToRGB of fold 0, the RGB skip's
    x2 up-sampling; then odd shapes.

    Built on each call, not once at import: cheap, and a process forked after the import (a mutation
    run's) then checks the builders it runs, not those of its parent."""
    return (
        _fold_case("fold 32ch 16x16 (positional branch)", (2, 32, 16, 16)),
        _fold_case("fold odd 3ch 6x10", (2, 3, 6, 10)),
        _fold_case("unfold 512ch 4x4 (StyledConv A)", (2, 512, 4, 4), inverse=True),
        _fold_case("unfold odd 8ch 3x5", (2, 8, 3, 5), inverse=True),
        _fourier_case("fourier 512ch 16x16 (stage 0)", 512, 16, 16),
        _fourier_case("fourier odd 6ch 5x7", 6, 5, 7),
        _leaky_case("leaky relu 512ch 8x8", (2, 512, 8, 8)),
        _leaky_case("leaky relu odd 5ch 3x7, slope 0.1 gain 1.5", (2, 5, 3, 7), slope=0.1, scale=1.5),
        _upfirdn_case("upfirdn2d RGB skip 8x8 up 2", (2, 3, 8, 8), 4, 2, 1, (2, 1)),
        _upfirdn_case("upfirdn2d odd 5x7 down 2", (2, 3, 5, 7), 3, 1, 2, (1, 1)),
        _modconv_case("modulated conv 3x3 512->512 4x4", (2, 512, 4, 4), 512, 3),
        _modconv_case("modulated conv odd 3x3 9->4 5x7", (2, 9, 5, 7), 4, 3),
        _modconv_case("modulated conv odd up 2, no demod", (2, 3, 5, 4), 4, 3, demodulate=False, up=2),
        _modconv_case("modulated conv odd down 2, 3->8", (2, 3, 6, 4), 8, 3, down=2),
        _styled_case("styled conv A 512->512 4x4, unfold", (2, 512, 4, 4), 512, unfold_output=True),
        _styled_case("styled conv B 128->512 8x8", (2, 128, 8, 8), 512, unfold_output=False),
        _styled_case("styled conv odd 3->8 5x7, unfold", (2, 3, 5, 7), 8, unfold_output=True),
        _styled_case("styled conv odd up 2, shared noise", (2, 3, 3, 4), 4, unfold_output=False, up=2,
                     shared_noise=True),
        _to_rgb_case("to_rgb 512ch 8x8 + skip", (2, 512, 8, 8), with_skip=True),
        _to_rgb_case("to_rgb odd 5ch 3x5, no skip", (2, 5, 3, 5), with_skip=False),
    )


def kernel_path_cases():
    """Cases that reach the paths of the GPU kernels (csrc/cuda) that ``cases()`` leaves out, run in
    float32 only (the largest are tens of MB): more elements than one launch has threads (65,536 blocks x
    256), so that each grid-stride loop takes a second step; reductions over every lane of a warp, over
    more pixels than a block has threads and over several blocks per sum. The CUDA emulation
    (csrc/README.md) runs them on the CPU with its memory checks; tests/test_kernel_paths.py."""
    return (
        # fold_kernel's second grid-stride step, forward (fold) and backward (unfold): 2^24 + 16,384 elements.
        _fold_case("fold 4ch 2050x2048, more elements than a launch's threads", (1, 4, 2050, 2048)),
        # fused_leaky_relu_kernel's and its backward kernel's second step.
        _leaky_case("leaky relu 16ch 1025x1024, more elements than a launch's threads", (1, 16, 1025, 1024)),
        # upfirdn2d_kernel's second step, forward and input gradient (the same size; a 1x1 FIR keeps the
        # reference's float64 convolutions short).
        _upfirdn_case("upfirdn2d 16ch 1025x1024 1x1, more elements than a launch's threads", (1, 16, 1025, 1024),
                      1, 1, 1, (0, 0)),
        # fourier_embedding_kernel's second step; the backward's block loops over 1,049,600 pixels.
        _fourier_case("fourier 16ch 1025x1024, more elements than a launch's threads", 16, 1025, 1024),
        # demod_kernel's second step: one warp per (image, output channel), 524,290 > 2^24 / 32 of them.
        # (Two input channels: with one, demodulation cancels the style and its gradient is rounding.)
        _modconv_case("modulated conv 1x1 2->262145 1x1, more warps than a launch's threads", (2, 2, 1, 1), 262145, 1),
        # epilogue_kernel's second step, stored unfolded; the backward reduces 1,025 chunks per channel.
        _styled_case("styled conv 2->16 1025x1024, unfold, more elements than a launch's threads", (1, 2, 1025, 1024),
                     16, unfold_output=True),
        # demod_kernel's warp sum over 40 input channels: every lane, 8 of them twice.
        _modconv_case("modulated conv 3x3 40->8 6x5, every lane of the demodulation's warp", (2, 40, 6, 5), 8, 3),
        # The backward's per-channel sums over three 1,024-pixel chunks (three blocks per sum, so their
        # order would show in the bits) and two 32-channel tiles, the second partly filled.
        _styled_case("styled conv 3->36 49x45, unfold, three reduction chunks and two channel tiles", (2, 3, 49, 45),
                     36, unfold_output=True),
    )


def cases_by_op():
    """{op name: its cases}, the ops in the order of ``cases()``."""
    grouped = {}
    for case in cases():
        grouped.setdefault(case.op, []).append(case)
    return grouped


def relative_error(actual, oracle):
    """max |actual - oracle| / max |oracle|, in float64 (inf for a non-finite value or a wrong shape)."""
    if actual is None or oracle is None or actual.shape != oracle.shape:
        return math.inf
    actual, oracle = actual.double().cpu(), oracle.double().cpu()
    if not torch.isfinite(actual).all():
        return math.inf
    scale = oracle.abs().max().item()
    return (actual - oracle).abs().max().item() / (scale if scale > 0 else 1.0)


def _forward_backward(call, tensors, backend, grad_output):
    """The output and every input's gradient for ``grad_output`` (float64, cast to the output's dtype)."""
    tensors = {name: t.detach().requires_grad_(True) for name, t in tensors.items()}
    output = call(tensors, backend)
    grads = torch.autograd.grad(output, list(tensors.values()), grad_output.to(output.device, output.dtype),
                                allow_unused=True)
    return output.detach(), dict(zip(tensors, grads))


def _errors(call, inputs, backend, oracle, grad_output):
    output, grads = _forward_backward(call, inputs, backend, grad_output)
    expected, expected_grads = oracle
    errors = {"forward": relative_error(output, expected)}
    for name, expected_grad in expected_grads.items():
        errors[f"grad {name}"] = relative_error(grads[name], expected_grad)
    return errors


def _output_gradient(case, call, oracle_inputs, dtype, seed):
    """A random output gradient, rounded to ``dtype`` so that backend and oracle see the same values.
    Behind a leaky ReLU it is zero where the pre-activation is within rounding distance of 0: there the
    slope a 16-bit kernel takes is decided by its rounding, and a flip would change the gradient by
    (1 - slope) x the gradient whatever the kernel's accuracy."""
    with torch.no_grad():
        output = call(oracle_inputs, "reference")
        grad_output = torch.randn(output.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        grad_output = grad_output.to(dtype).double().to(output.device)
        if case.activated:
            pre_activation = call(oracle_inputs, "reference", slope=1.0, scale=1.0)
            band = SAFETY * unit_roundoff(dtype) * pre_activation.abs().max()
            grad_output = grad_output * (pre_activation.abs() > band)
    return grad_output


def check_case(case, backend, dtype, device, seed=0):
    """``backend``'s forward result and every input's gradient in ``dtype`` on ``device``, against the
    reference in float64 on the same rounded inputs: {"forward": (error, tolerance), "grad <name>":
    (error, tolerance), ...}, each error the normwise relative one."""
    made, call = case.make(torch.Generator().manual_seed(seed))
    inputs = {name: t.to(device, dtype) for name, t in made.items()}
    oracle_inputs = {name: t.double() for name, t in inputs.items()}
    with tf32(False):
        grad_output = _output_gradient(case, call, oracle_inputs, dtype, seed + 1)
        oracle = _forward_backward(call, oracle_inputs, "reference", grad_output)
        errors = _errors(call, inputs, backend, oracle, grad_output)
    return {name: (error, case.tolerance(dtype)) for name, error in errors.items()}


@contextlib.contextmanager
def tf32(enabled):
    """cuDNN convs and cuBLAS matmuls in TF32 (``enabled``) or in float32 inside the block; the
    float32 tolerances assume float32."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
