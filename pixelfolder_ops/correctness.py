"""The correctness cases of every public op and the one tolerance rule, shared by ``python -m pixelfolder_ops``
and the test suite (every backend's tests draw their cases from here), so that what a user checks on their
GPU and what CI checks are the same.

A case is data: a call of a public op (its argument record, ``pixelfolder_ops/_protocol.py``) with the
shapes of the tensors it draws and its other arguments, the longest sum behind one value it computes,
and tags saying what it is for. The dtype, the memory layout and the device are parameters of running a
case, not parts of it. A backend's result, forward and every input's gradient, is compared with the
reference backend run in float64 on the same (rounded) inputs, within ``tolerance``.

The cases are PixelFolder-256's real layer shapes (stage 0, batch 2, small enough for a CPU), odd shapes
that exercise edges, every option of each op (up / down, shared noise, no noise or bias, a clamp that
saturates a good share of the outputs, ...), upfirdn2d's sweep of tap placements, and shapes that span
several blocks or tiles of the kernels' reductions.
"""
import contextlib
import dataclasses
import itertools
import math
from typing import Optional, Tuple

import torch

from ._protocol import op_name
from .fold import FoldArguments, UnfoldArguments, fold, unfold
from .fourier_embedding import FourierEmbeddingArguments, fourier_embedding
from .fused_leaky_relu import FusedLeakyReLUArguments, fused_leaky_relu
from .modulated_conv2d import ModulatedConv2dArguments, make_resample_kernel, modulated_conv2d
from .styled_conv2d import StyledConv2dArguments, styled_conv2d
from .to_rgb import ToRgbArguments, to_rgb
from .upfirdn2d import Upfirdn2dArguments, upfirdn2d

DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
# The dtypes each backend's kernels take (Triton's dot has no float64 path worth checking).
BACKEND_DTYPES = {"reference": DTYPES, "cpu": DTYPES, "cuda": DTYPES,
                  "triton": (torch.float32, torch.bfloat16, torch.float16)}
# How a case's 4-D tensors are laid out in memory: NCHW, channels-last, and a view that is neither (every
# other column of a wider tensor, with the batch and channel strides swapped).
LAYOUTS = ("contiguous", "channels_last", "strided")
# Safety factor over the first-order rounding-error estimate of ``tolerance``.
SAFETY = 8.0
# TF32 (cuDNN convs and cuBLAS matmuls on Ampere and later) keeps 10 mantissa bits of each factor.
TF32_UNIT_ROUNDOFF = 2.0 ** -11

# Tags: what a case is for. Test modules and the self-check pick cases by them.
LAYER = "layer"  # a PixelFolder-256 layer's shape
SMALL = "small"  # cheap enough for gradcheck, opcheck and Triton's interpreter
SECOND_ORDER = "second order"  # differentiated twice (the discriminator's R1 penalty): gradgradcheck
BLOCKS = "blocks"  # spans several blocks of the CUDA kernels' reductions
TILES = "tiles"  # spans several of the Triton kernels' tiles and chunks
# Sized to reach the CUDA kernels' large-launch paths (more elements than one launch's grid, every lane of
# a warp, more pixels than a block, several blocks per sum), in float32 only: run by the cuda backend and
# by the emulated CUDA build (PIXELFOLDER_CUDA_EMULATION=1, tests/test_kernel_paths.py), not by Triton.
CUDA_PATHS = "cuda paths"
# Too large for a CPU backend: run on GPUs only.
LARGE = "large"


def unit_roundoff(dtype):
    return torch.finfo(dtype).eps / 2


def is_16_bit(dtype):
    return torch.finfo(dtype).bits == 16


def tolerance(dtype, reduction, condition=1.0, tf32=False):
    """The largest normwise relative error (max |actual - oracle| / max |oracle|) a correct kernel
    may make in ``dtype`` when its longest sum has ``reduction`` terms and it amplifies the rounding
    of its inputs by ``condition``.

    Two sources: the inputs, intermediates and result are stored in ``dtype`` (a few roundings of at
    most the unit roundoff u each, independent of the sum's length), and the sums accumulate in
    float32 for the 16-bit types (else in ``dtype``), whose random-sign rounding errors grow like
    u * sqrt(n) relative to the sum. With ``tf32`` (float32 only) the products' factors are rounded to
    TF32 inside the kernel, which the oracle does not see: the stored values' u is TF32's."""
    accumulate = torch.float32 if is_16_bit(dtype) else dtype
    stored = max(unit_roundoff(dtype), TF32_UNIT_ROUNDOFF) if tf32 else unit_roundoff(dtype)
    return SAFETY * (stored * condition + unit_roundoff(accumulate) * math.sqrt(max(reduction, 1)))


@dataclasses.dataclass(frozen=True)
class Draw:
    """A differentiable tensor drawn for a case: ``scale`` N(0, 1) + ``offset``, or uniform in
    +-``scale`` when ``uniform``."""
    shape: Tuple[int, ...]
    scale: float = 1.0
    offset: float = 0.0
    uniform: bool = False


@dataclasses.dataclass(frozen=True)
class Filter:
    """A fixed resampling filter (no gradient): ``make_resample_kernel(taps) * gain``."""
    taps: Tuple[int, ...] = (1, 3, 3, 1)
    gain: float = 1.0


@dataclasses.dataclass(frozen=True)
class Case:
    """One call of a public op: the op's argument record, its tensors (name -> Draw or Filter) and its
    other arguments (name -> value; the record's defaults for the rest)."""
    name: str
    record: type
    tensors: Tuple[Tuple[str, object], ...]
    options: Tuple[Tuple[str, object], ...] = ()
    reduction: int = 0  # the longest sum behind one value of the output or of a gradient
    condition: float = 1.0  # how much the op amplifies a relative change of its inputs
    exact: bool = False  # pure data movement: bit-exact in every dtype
    tags: frozenset = frozenset()
    dtypes: Optional[Tuple[torch.dtype, ...]] = None  # the only dtypes it runs in (None: every one)

    @property
    def op(self):
        return op_name(self.record)

    @property
    def differentiable(self):
        """The names of the tensors whose gradients are checked."""
        return tuple(name for name, spec in self.tensors if isinstance(spec, Draw))

    def option(self, name):
        """The value of a non-tensor argument: the case's, else the record's default."""
        return dict(self.options).get(name, self.record._field_defaults.get(name))

    def runs_in(self, dtype):
        return self.dtypes is None or dtype in self.dtypes

    def tolerance(self, dtype, tf32=False):
        return 0.0 if self.exact else tolerance(dtype, self.reduction, self.condition, tf32)

    def make(self, generator):
        """The drawn tensors, in float64 on the CPU, in the order of ``tensors``."""
        made = {}
        for name, spec in self.tensors:
            if isinstance(spec, Draw):
                if spec.uniform:
                    made[name] = (torch.rand(spec.shape, dtype=torch.float64, generator=generator) * 2 - 1) * spec.scale
                else:
                    made[name] = torch.randn(spec.shape, dtype=torch.float64, generator=generator) * spec.scale \
                        + spec.offset
        return made

    def inputs(self, dtype, device="cpu", layout="contiguous", seed=0):
        """Every tensor of the call in ``dtype`` on ``device``, 4-D ones in ``layout``; the drawn ones
        (drawn from ``seed``) require gradients."""
        made = self.make(torch.Generator().manual_seed(seed))
        tensors = {}
        for name, spec in self.tensors:
            if isinstance(spec, Filter):
                tensors[name] = make_resample_kernel(spec.taps, dtype, device) * spec.gain
            else:
                tensors[name] = arrange(made[name].to(device, dtype), layout).requires_grad_()
        return tensors

    def arguments(self, tensors, **overrides):
        """The op's argument record for these tensors, with ``overrides`` of its other arguments."""
        return self.record(**{**tensors, **dict(self.options), **overrides})

    def call(self, tensors, backend, **overrides):
        """The public op on ``backend`` (None: the one in force)."""
        return _PUBLIC_OPS[self.record](*self.arguments(tensors, **overrides), backend=backend)


_PUBLIC_OPS = {FoldArguments: fold, UnfoldArguments: unfold, FourierEmbeddingArguments: fourier_embedding,
               FusedLeakyReLUArguments: fused_leaky_relu, Upfirdn2dArguments: upfirdn2d,
               ModulatedConv2dArguments: modulated_conv2d, StyledConv2dArguments: styled_conv2d,
               ToRgbArguments: to_rgb}


def arrange(tensor, layout):
    """``tensor`` (a new one with its values) in ``layout`` when it is 4-D, else contiguous."""
    if tensor.dim() != 4 or layout == "contiguous":
        return tensor.contiguous()
    if layout == "channels_last":
        return tensor.contiguous(memory_format=torch.channels_last)
    if layout == "strided":
        batch, channels, height, width = tensor.shape
        wide = tensor.new_zeros(channels, batch, height, 2 * width)
        view = wide[..., ::2].transpose(0, 1)
        view.copy_(tensor)
        return view
    raise ValueError(f"arrange: argument 'layout' must be one of {', '.join(LAYOUTS)}, got {layout!r}")


# --------------------------------------------------------------------------------------------- the cases

def _case(name, record, tensors, options=None, reduction=0, tags=(), **properties):
    return Case(name, record, tuple(tensors.items()), tuple((options or {}).items()), reduction,
                tags=frozenset(tags), **properties)


def _fold_case(name, shape, inverse=False, tags=()):
    return _case(name, UnfoldArguments if inverse else FoldArguments, {"input": Draw(shape)}, exact=True, tags=tags)


def _fourier_case(name, channels, height, width, tags=()):
    # PixelFolder's initialisation: B uniform in +-sqrt(9/2), b PyTorch's conv-bias default for two
    # inputs (+-1/sqrt(2)); |B [x, y] + b| then stays below 2 sqrt(9/2) + 1/sqrt(2), the factor by which
    # sin's argument (made from rounded coordinates and weights) amplifies their rounding.
    weight_bound, bias_bound = math.sqrt(9 / 2), 1 / math.sqrt(2)
    tensors = {"weight": Draw((channels, 2), weight_bound, uniform=True),
               "bias": Draw((channels,), bias_bound, uniform=True)}
    # The weight's gradient sums over every position.
    return _case(name, FourierEmbeddingArguments, tensors, {"height": height, "width": width},
                 reduction=height * width, condition=2 * weight_bound + bias_bound, tags=tags)


def _leaky_case(name, shape, bias=True, tags=(), **options):
    tensors = {"input": Draw(shape)}
    if bias:
        tensors["bias"] = Draw((shape[1],))
    # The bias gradient sums over every position but the channel.
    return _case(name, FusedLeakyReLUArguments, tensors, options,
                 reduction=math.prod(shape) // shape[1] if bias else 0, tags=tags)


def _upfirdn_case(name, shape, kernel_shape, up, down, pad, tags=()):
    up_x, up_y = (up, up) if isinstance(up, int) else up
    tensors = {"input": Draw(shape), "kernel": Draw(kernel_shape, 1 / math.sqrt(math.prod(kernel_shape)))}
    # The kernel's gradient sums over every (up-sampled) input pixel, an output value over the taps.
    return _case(name, Upfirdn2dArguments, tensors, {"up": up, "down": down, "pad": pad},
                 reduction=max(math.prod(shape) * up_x * up_y, math.prod(kernel_shape)), tags=tags)


def _positions(shape, up=1):
    return shape[0] * shape[2] * shape[3] * up * up


def _conv_tensors(shape, out_channels, taps):
    batch, in_channels = shape[:2]
    return {"input": Draw(shape), "weight": Draw((out_channels, in_channels, taps, taps)),
            "styles": Draw((batch, in_channels), 0.5, 1.0)}  # styles around 1, as a trained affine gives


def _conv_condition(options):
    """A demodulated conv's output does not change when an image's styles are scaled together, so their
    gradient is orthogonal to them: a sum whose terms cancel (the terms' magnitudes add up to 3 to 20
    times the result's on these shapes). A backend that rounds the terms to 16 bits, as the reference
    does, has that rounding amplified: 10.6 u in float16 on "modulated conv odd up 2" (1.3 times the
    tolerance at condition 1; the compiled kernels keep the terms in float32)."""
    return 2.0 if options.get("demodulate", True) else 1.0


def _modconv_case(name, shape, out_channels, taps, tags=(), **options):
    in_channels, up = shape[1], options.get("up", 1)
    # An output value and its demodulation sum C_in k^2 terms, an input gradient value C_out k^2, a
    # weight gradient value one term per output position.
    return _case(name, ModulatedConv2dArguments, _conv_tensors(shape, out_channels, taps), options,
                 reduction=max(in_channels * taps * taps, out_channels * taps * taps, _positions(shape, up)),
                 condition=_conv_condition(options), tags=tags)


def _styled_case(name, shape, out_channels, taps=3, noise="per image", bias=True, tags=(), **options):
    """``noise``: "per image", "shared" (one map for the batch) or None."""
    batch, in_channels, height, width = shape
    up = options.get("up", 1)
    tensors = _conv_tensors(shape, out_channels, taps)
    if noise is not None:
        tensors["noise"] = Draw((batch if noise == "per image" else 1, 1, height * up, width * up))
        tensors["noise_strength"] = Draw((1,))
    if bias:
        tensors["bias"] = Draw((out_channels,))
    # The noise strength's gradient sums over every output value, the bias's over every position.
    return _case(name, StyledConv2dArguments, tensors, options,
                 reduction=max(in_channels * taps * taps, out_channels * taps * taps,
                               _positions(shape, up) * out_channels), condition=_conv_condition(options), tags=tags)


def _to_rgb_case(name, shape, skip="up", tags=(), **options):
    """``skip``: "up" (half the size, x2-upsampled), "add" (the same size, added) or None."""
    batch, in_channels, height, width = shape
    tensors = {**_conv_tensors(shape, 3, 1), "bias": Draw((3,))}
    if skip == "up":
        tensors.update(skip=Draw((batch, 3, height // 2, width // 2)), skip_kernel=Filter(gain=4))
    elif skip == "add":
        tensors["skip"] = Draw((batch, 3, height, width))
    # The input's and the styles' gradients sum over the channels, the weight's over the positions.
    return _case(name, ToRgbArguments, tensors, options, reduction=max(in_channels, _positions(shape)), tags=tags)


# The per-channel reductions of the CUDA backward (csrc/cuda/channel_tiles.cuh) take 32 channels and 1024
# pixels per block: 36 channels and 33 x 35 pixels need two of each, both partly filled.
SEVERAL_BLOCKS = dict(shape=(2, 3, 33, 35), out_channels=36)


def _upfirdn_sweep():
    """Every tap placement the kernels' per-axis runs must cover: factors 1 to 3 (the same on both axes,
    or up along x and down along y), even and odd kernel sizes, pads that crop (negative) or reach past
    the input."""
    kernels = [((4, 4), (2, 1, 2, 1)), ((3, 5), (-1, 3, 2, -2)), ((1, 2), (0, 0, 4, 1))]
    for up, down, (kernel_shape, pad) in itertools.product((1, 2, 3), (1, 2, 3), kernels):
        for up_pair, down_pair in dict.fromkeys([((up, up), (down, down)), ((up, 1), (1, down))]):
            yield _upfirdn_case(f"upfirdn2d sweep up {up_pair} down {down_pair}, kernel {kernel_shape[0]}x"
                                f"{kernel_shape[1]}, pad {pad}", (2, 3, 7, 6), kernel_shape, up_pair, down_pair,
                                pad)


def _styled_option_grid():
    """Every combination of noise (none, per image, shared), bias and unfolding."""
    for noise, bias, unfold_output in itertools.product((None, "per image", "shared"), (True, False), (False, True)):
        words = [f"{noise} noise" if noise else "no noise", "bias" if bias else "no bias"]
        if unfold_output:
            words.append("unfold")
        yield _styled_case(f"styled conv odd 3->8 5x7, {', '.join(words)}", (2, 3, 5, 7), 8, noise=noise, bias=bias,
                           unfold_output=unfold_output, tags=(SMALL,))


def cases():
    """Every case, in the order the self-check reports them. PixelFolder-256, stage 0 (R_0 = 16),
    batch 2, first for each op: the positional branch's fold, the two StyledConvs and the ToRGB of fold
    0, the RGB skip's x2 up-sampling; then odd shapes and options, then shapes that span the kernels'
    blocks and tiles.

    Built on each call, not once at import: cheap, and a process forked after the import (a mutation
    run's) then checks the builders it runs, not those of its parent."""
    return (
        _fold_case("fold 32ch 16x16 (positional branch)", (2, 32, 16, 16), tags=(LAYER,)),
        _fold_case("fold odd 3ch 6x10", (2, 3, 6, 10), tags=(SMALL, SECOND_ORDER)),
        _fold_case("fold 3ch 2x2", (1, 3, 2, 2), tags=(SMALL,)),
        # Under Triton's interpreter a block is 1024 elements: several, the last partly filled.
        _fold_case("fold 32ch 14x2, batch 3", (3, 32, 14, 2), tags=(SMALL, TILES)),
        _fold_case("unfold 512ch 4x4 (StyledConv A)", (2, 512, 4, 4), inverse=True, tags=(LAYER,)),
        _fold_case("unfold odd 8ch 3x5", (2, 8, 3, 5), inverse=True, tags=(SMALL, SECOND_ORDER)),
        _fourier_case("fourier 512ch 16x16 (stage 0)", 512, 16, 16, tags=(LAYER,)),
        _fourier_case("fourier odd 6ch 5x7", 6, 5, 7, tags=(SMALL,)),
        _fourier_case("fourier 32ch 1x3 (one row)", 32, 1, 3, tags=(SMALL,)),
        # More pixels than the 256 threads of the CUDA backward's block: every step of its shared-memory
        # reduction counts.
        _fourier_case("fourier 4ch 24x20", 4, 24, 20, tags=(BLOCKS,)),
        _leaky_case("leaky relu 512ch 8x8", (2, 512, 8, 8), tags=(LAYER,)),
        _leaky_case("leaky relu odd 5ch 3x7, slope 0.1 gain 1.5", (2, 5, 3, 7), negative_slope=0.1, scale=1.5,
                    tags=(SMALL, SECOND_ORDER)),
        _leaky_case("leaky relu odd 2-D 3x7, no bias, slope 0.1 gain 1.5", (3, 7), bias=False, negative_slope=0.1,
                    scale=1.5, tags=(SMALL, SECOND_ORDER)),
        # Over half of the outputs saturate at +0.5, a few at -0.5.
        _leaky_case("leaky relu odd 6ch 5x7, clamp 0.5", (2, 6, 5, 7), clamp=0.5, tags=(SMALL, SECOND_ORDER)),
        _upfirdn_case("upfirdn2d RGB skip 8x8 up 2", (2, 3, 8, 8), (4, 4), 2, 1, (2, 1), tags=(LAYER,)),
        _upfirdn_case("upfirdn2d odd 5x7 down 2", (2, 3, 5, 7), (3, 3), 1, 2, (1, 1), tags=(SMALL, SECOND_ORDER)),
        _upfirdn_case("upfirdn2d odd 5x7 up 2", (2, 3, 5, 7), (4, 4), 2, 1, (2, 1, 2, 1), tags=(SMALL,)),
        _upfirdn_case("upfirdn2d odd 6x5 up (3, 1) down (1, 2), 3x5 kernel, crop", (1, 2, 6, 5), (3, 5), (3, 1), (1, 2),
                      (-1, 2, 3, -2), tags=(SMALL, SECOND_ORDER)),
        *_upfirdn_sweep(),
        _modconv_case("modulated conv 3x3 512->512 4x4", (2, 512, 4, 4), 512, 3, tags=(LAYER,)),
        _modconv_case("modulated conv odd 3x3 9->4 5x7", (2, 9, 5, 7), 4, 3, tags=(SMALL,)),
        _modconv_case("modulated conv odd up 2, no demod", (2, 3, 5, 4), 4, 3, demodulate=False, up=2, tags=(SMALL,)),
        _modconv_case("modulated conv odd up 2", (2, 3, 5, 4), 4, 3, up=2, tags=(SMALL,)),
        _modconv_case("modulated conv odd down 2, 3->8", (2, 3, 6, 4), 8, 3, down=2, tags=(SMALL,)),
        _modconv_case("modulated conv odd down 2, no demod", (2, 3, 6, 4), 4, 3, demodulate=False, down=2,
                      tags=(SMALL,)),
        _modconv_case("modulated conv odd 1x1 3->3 4x4, no demod", (2, 3, 4, 4), 3, 1, demodulate=False,
                      tags=(SMALL,)),
        _modconv_case("modulated conv 16->32 5x7, no demod", (2, 16, 5, 7), 32, 3, demodulate=False, tags=(SMALL,)),
        _styled_case("styled conv A 512->512 4x4, unfold", (2, 512, 4, 4), 512, unfold_output=True, tags=(LAYER,)),
        _styled_case("styled conv B 128->512 8x8", (2, 128, 8, 8), 512, tags=(LAYER,)),
        *_styled_option_grid(),
        _styled_case("styled conv odd up 2, shared noise", (2, 3, 3, 4), 4, noise="shared", up=2, tags=(SMALL,)),
        _styled_case("styled conv odd up 2, no noise", (2, 8, 4, 4), 8, noise=None, up=2, tags=(SMALL,)),
        # Slope 0 (ReLU): the backward reads the slope from the saved output, and needs the conv only
        # where the output is positive.
        _styled_case("styled conv 16->16 7x5, slope 0 gain 1, unfold", (2, 16, 7, 5), 16, negative_slope=0.0,
                     gain=1.0, unfold_output=True, tags=(SMALL,)),
        _styled_case("styled conv 16->16 7x5, slope 0 gain 2, no demod, shared noise, no bias", (2, 16, 7, 5), 16,
                     noise="shared", bias=False, negative_slope=0.0, gain=2.0, demodulate=False, tags=(SMALL,)),
        _styled_case("styled conv 16->16 7x5, gain 1.4, no demod, no noise, unfold", (2, 16, 7, 5), 16, noise=None,
                     gain=1.4, demodulate=False, unfold_output=True, tags=(SMALL,)),
        _styled_case("styled conv 16->16 7x5, gain 1.4, no bias", (2, 16, 7, 5), 16, bias=False, gain=1.4,
                     tags=(SMALL,)),
        # A third of the outputs saturate at +1; with clamp 0.5, half at +0.5 and a fifth at -0.5.
        _styled_case("styled conv odd 3->8 5x7, clamp 1, unfold", (2, 3, 5, 7), 8, clamp=1.0, unfold_output=True,
                     tags=(SMALL,)),
        _styled_case("styled conv odd up 2, shared noise, clamp 0.5", (2, 3, 3, 4), 4, noise="shared", up=2,
                     clamp=0.5, tags=(SMALL,)),
        _styled_case("styled conv 16->16 7x5, slope 0, no bias, clamp 0.5", (2, 16, 7, 5), 16, bias=False,
                     negative_slope=0.0, clamp=0.5, tags=(SMALL,)),
        *(_styled_case(f"styled conv 3->36 33x35 (several blocks), {noise} noise" + (", unfold" * unfold_output),
                       **SEVERAL_BLOCKS, noise=noise, unfold_output=unfold_output, tags=(BLOCKS,))
          for noise, unfold_output in itertools.product(("per image", "shared"), (False, True))),
        _styled_case("styled conv 3->36 33x35 (several blocks), no noise, clamp 1", **SEVERAL_BLOCKS, noise=None,
                     clamp=1.0, tags=(BLOCKS,)),
        # Triton's tiles (64 x 64 x 64 under the interpreter) and the weight gradient's pixel chunks (three,
        # of whole pixel tiles): two K chunks, two channel tiles and two pixel tiles per image and a chunk
        # boundary inside an image; a 1x1 conv unfolding two channel tiles per quadrant; 512 input
        # channels; 66 channels per sub-pixel (two tiles per quadrant) with a chunk spanning two images.
        _styled_case("styled conv 80->72 9x11 (tiles)", (2, 80, 9, 11), 72, tags=(TILES,)),
        _styled_case("styled conv 1x1 64->128 3x2, no noise, no bias, unfold (tiles)", (2, 64, 3, 2), 128, taps=1,
                     noise=None, bias=False, unfold_output=True, tags=(TILES,)),
        _styled_case("styled conv 512->32 2x2, shared noise (tiles)", (1, 512, 2, 2), 32, noise="shared",
                     tags=(TILES,)),
        _styled_case("styled conv 16->264 3x5, batch 4, no noise, unfold (tiles)", (4, 16, 3, 5), 264, noise=None,
                     unfold_output=True, tags=(TILES,)),
        _styled_case("styled conv 3->32 5x7, batch 1, shared noise, unfold", (1, 3, 5, 7), 32, noise="shared",
                     unfold_output=True, tags=(SMALL,)),
        # PixelFolder's layer shapes at training batches, odd sizes included: for GPUs.
        _styled_case("styled conv 512->512 8x8, batch 32, unfold", (32, 512, 8, 8), 512, unfold_output=True,
                     tags=(LARGE,)),
        _styled_case("styled conv 128->512 33x17, batch 4, shared noise, unfold", (4, 128, 33, 17), 512,
                     noise="shared", unfold_output=True, tags=(LARGE,)),
        _styled_case("styled conv 256->128 31x31, batch 8", (8, 256, 31, 31), 128, tags=(LARGE,)),
        _to_rgb_case("to_rgb 512ch 8x8 + skip", (2, 512, 8, 8), tags=(LAYER,)),
        _to_rgb_case("to_rgb odd 5ch 3x5, no skip", (2, 5, 3, 5), skip=None, tags=(SMALL,)),
        _to_rgb_case("to_rgb odd 5ch 6x4 + skip", (2, 5, 6, 4), tags=(SMALL, SECOND_ORDER)),
        _to_rgb_case("to_rgb 3ch 5x5, skip added", (1, 3, 5, 5), skip="add", tags=(SMALL,)),
        # The layer's own output, before the skip, saturates in about two thirds of its values (both signs).
        _to_rgb_case("to_rgb odd 5ch 6x4 + skip, clamp 1", (2, 5, 6, 4), clamp=1.0, tags=(SMALL, SECOND_ORDER)),
        _to_rgb_case("to_rgb odd 5ch 3x5, no skip, clamp 1", (2, 5, 3, 5), skip=None, clamp=1.0, tags=(SMALL,)),
        # Triton's tiles: 64 and 128 channels are two and four channel tiles under the interpreter.
        _to_rgb_case("to_rgb 64ch 7x7, batch 5, no skip (tiles)", (5, 64, 7, 7), skip=None, tags=(TILES,)),
        _to_rgb_case("to_rgb 128ch 2x2 + skip (tiles)", (1, 128, 2, 2), tags=(TILES,)),
        _to_rgb_case("to_rgb 32ch 6x6 + skip, clamp 4", (2, 32, 6, 6), clamp=4.0, tags=(SMALL,)),
        *_kernel_path_cases(),
    )


def _kernel_path_cases():
    """Cases that reach the paths of the GPU kernels (csrc/cuda) the others leave out, run in float32 only
    (the largest are tens of MB): more elements than one launch has threads (65,536 blocks x 256), so
    that each grid-stride loop takes a second step; reductions over every lane of a warp, over more pixels
    than a block has threads and over several blocks per sum. The CUDA emulation (csrc/README.md) runs
    them on the CPU with its memory checks (tests/test_kernel_paths.py)."""
    cases = (
        # fold_kernel's second grid-stride step, forward (fold) and backward (unfold): 2^24 + 16,384 elements.
        _fold_case("fold 4ch 2050x2048, more elements than a launch's threads", (1, 4, 2050, 2048)),
        # fused_leaky_relu_kernel's and its backward kernel's second step.
        _leaky_case("leaky relu 16ch 1025x1024, more elements than a launch's threads", (1, 16, 1025, 1024)),
        # upfirdn2d_kernel's second step, forward and input gradient (the same size; a 1x1 FIR keeps the
        # reference's float64 convolutions short).
        _upfirdn_case("upfirdn2d 16ch 1025x1024 1x1, more elements than a launch's threads", (1, 16, 1025, 1024),
                      (1, 1), 1, 1, (0, 0)),
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
    return tuple(dataclasses.replace(case, tags=frozenset({CUDA_PATHS}), dtypes=(torch.float32,)) for case in cases)


def kernel_path_cases():
    """The cases of ``cases()`` that reach the GPU kernels' large-launch paths (tagged CUDA_PATHS)."""
    return tuple(case for case in cases() if CUDA_PATHS in case.tags)


def cases_by_op(selected=None):
    """{op name: its cases} of ``selected`` (default: every case), the ops in their order."""
    grouped = {}
    for case in cases() if selected is None else selected:
        grouped.setdefault(case.op, []).append(case)
    return grouped


def case_names(*tags, op=None, leave_out=()):
    """The names of the cases with every one of ``tags`` and none of ``leave_out``, of ``op`` when given."""
    return [case.name for case in cases() if set(tags) <= case.tags and not set(leave_out) & case.tags
            and op in (None, case.op)]


# What a CPU leaves out of the table: a GPU's shapes, and the kernel paths' (tests/test_kernel_paths.py).
NOT_ON_A_CPU = (LARGE, CUDA_PATHS)


def find(name):
    """The case called ``name``."""
    for case in cases():
        if case.name == name:
            return case
    raise KeyError(name)


# ------------------------------------------------------------------------------------------ running a case

def relative_error(actual, oracle):
    """max |actual - oracle| / max |oracle|, in float64 (inf for a non-finite value or a wrong shape)."""
    if actual is None or oracle is None or actual.shape != oracle.shape:
        return math.inf
    actual, oracle = actual.double().cpu(), oracle.double().cpu()
    if not torch.isfinite(actual).all():
        return math.inf
    scale = oracle.abs().max().item()
    return (actual - oracle).abs().max().item() / (scale if scale > 0 else 1.0)


# The fields of the leaky ReLU of the ops that end in one: (slope, gain).
_ACTIVATIONS = {FusedLeakyReLUArguments: ("negative_slope", "scale"), StyledConv2dArguments: ("negative_slope", "gain")}
# What leaves only the value a clamp cuts, where the op adds something after it (ToRGB's skip).
_BEFORE_THE_CLAMP = {ToRgbArguments: {"skip": None, "skip_kernel": None}}


def kinks(case):
    """Where the gradient of ``case``'s op jumps: [(overrides, at)], the op called with ``overrides``
    giving a value whose gradient jumps where |value| = ``at``: the leaky ReLU's pre-activation at 0,
    and the clamp's input at the clamp."""
    found = []
    if case.record in _ACTIVATIONS:
        slope, gain = _ACTIVATIONS[case.record]
        found.append(({slope: 1.0, gain: 1.0, "clamp": None}, 0.0))
    clamp = case.option("clamp")
    if clamp is not None:
        found.append(({"clamp": None, **_BEFORE_THE_CLAMP.get(case.record, {})}, clamp))
    return found


def output_gradient(case, oracle_inputs, dtype, seed):
    """A random output gradient, rounded to ``dtype`` so that backend and oracle see the same values.
    Zero where a value is within rounding distance of a kink (``kinks``): there the side a kernel takes
    is decided by its rounding, and a flip would change the gradient by a whole share of it (1 - slope
    of it at the leaky ReLU, all of it at the clamp) whatever the kernel's accuracy."""
    with torch.no_grad():
        output = case.call(oracle_inputs, "reference")
        grad_output = torch.randn(output.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        grad_output = grad_output.to(dtype).double().to(output.device)
        for overrides, at in kinks(case):
            value = case.call(oracle_inputs, "reference", **overrides)
            band = SAFETY * unit_roundoff(dtype) * value.abs().max()
            grad_output = grad_output * ((value.abs() - at).abs() > band)
    return grad_output


def forward_backward(case, tensors, backend, grad_output):
    """The output and the gradient of every drawn input for ``grad_output`` (cast to the output's dtype)."""
    differentiable = [tensors[name] for name in case.differentiable]
    output = case.call(tensors, backend)
    grads = torch.autograd.grad(output, differentiable, grad_output.to(output.device, output.dtype),
                                allow_unused=True)
    return output.detach(), dict(zip(case.differentiable, grads))


def check_case(case, backend, dtype, device, layout="contiguous", seed=0, tf32=False):
    """``backend``'s forward result and every input's gradient in ``dtype`` on ``device`` (4-D tensors
    in ``layout``), against the reference in float64 on the same rounded inputs: {"forward": (error,
    tolerance), "grad <name>": (error, tolerance), ...}, each error the normwise relative one. ``tf32``:
    the backend's float32 convs and matmuls run in TF32 (else in float32)."""
    inputs = case.inputs(dtype, device, layout, seed)
    oracle_inputs = {name: t.detach().double().requires_grad_(t.requires_grad) for name, t in inputs.items()}
    with tf32_mode(False):
        grad_output = output_gradient(case, oracle_inputs, dtype, seed + 1)
        expected, expected_grads = forward_backward(case, oracle_inputs, "reference", grad_output)
    with tf32_mode(tf32):
        output, grads = forward_backward(case, inputs, backend, grad_output)
    errors = {"forward": relative_error(output, expected)}
    for name, expected_grad in expected_grads.items():
        errors[f"grad {name}"] = relative_error(grads[name], expected_grad)
    return {name: (error, case.tolerance(dtype, tf32)) for name, error in errors.items()}


def backend_dtypes(name, device):
    """The dtypes ``name``'s kernels are checked in on ``device``: under Triton's interpreter (the CPU)
    bfloat16 is left out, since it computes bfloat16 tl.dot wrongly."""
    dtypes = BACKEND_DTYPES[name]
    if name == "triton" and torch.device(device).type == "cpu":
        dtypes = tuple(dtype for dtype in dtypes if dtype != torch.bfloat16)
    return dtypes


@contextlib.contextmanager
def tf32_mode(enabled):
    """cuDNN convs and cuBLAS matmuls in TF32 (``enabled``) or in float32 inside the block."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved

