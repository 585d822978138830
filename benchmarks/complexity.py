"""Parameter and multiply-accumulate counts, in the two conventions the paper's tables mix.

fvcore: one MAC per multiply-add of every convolution and linear layer as traced, FIR filters
(upfirdn2d's depthwise convolutions) included; a transposed conv counts input pixels x weight size.
This is what fvcore gives on the official code (PixelFolder 23.75, StyleGAN2 45.37 at 256).

paper: the convention behind the paper's StyleGAN2 figure (83.77): each transposed (up-sampling)
conv counts as a 3x3 conv at its output resolution (4x fvcore's count) and FIR filters count 0.
"""
import torch

import pixelfolder_ops


def count_params(model):
    return sum(p.numel() for p in model.parameters())


def _is_fir_filter(inputs):
    from fvcore.nn.jit_handles import get_shape

    # The reference upfirdn2d filters every channel as its own image with a (1, 1, kh, kw) weight;
    # no other convolution in these models has one input and one output channel.
    weight_shape = get_shape(inputs[1])
    return weight_shape[0] == 1 and weight_shape[1] == 1


def _paper_conv_macs(inputs, outputs):
    from fvcore.nn.jit_handles import conv_flop_jit
    if _is_fir_filter(inputs):
        return 0
    macs = conv_flop_jit(inputs, outputs)  # a Counter keyed by operator
    if inputs[6].toIValue():  # transposed
        for key in macs:
            macs[key] *= 4
    return macs


def count_gmacs(model, style_dim=512, convention="fvcore", batch=1):
    """GMACs of one call of ``model(z)`` on ``batch`` images (float32, on the CPU)."""
    if convention not in ("fvcore", "paper"):
        raise ValueError(f"count_gmacs: argument 'convention' must be 'fvcore' or 'paper', got {convention!r}")
    from fvcore.nn import FlopCountAnalysis  # imported here: the GPU machines may lack fvcore
    param = next(model.parameters())
    was_training = model.training
    model.eval()
    try:
        z = torch.randn(batch, style_dim, device=param.device, dtype=param.dtype)
        analysis = FlopCountAnalysis(model, (z,))
        if convention == "paper":
            analysis = analysis.set_op_handle("aten::_convolution", _paper_conv_macs)
        analysis.unsupported_ops_warnings(False)
        analysis.uncalled_modules_warnings(False)
        # fvcore's tracer sees the convolutions of the reference ops, not those inside compiled ones.
        with pixelfolder_ops.use_backend("reference"):
            return analysis.total() / 1e9
    finally:
        model.train(was_training)


def gmacs_per_image_and_call(model, style_dim=512):
    """(GMACs per image, GMACs per call whatever the batch) of ``model(z)``: a call on B images performs
    ``B * per_image + per_call``. per_call is what a model computes once per call and broadcasts over the
    batch (PixelFolder's positional branch, unless it runs the official data flow); 0 for the others."""
    one, two = count_gmacs(model, style_dim), count_gmacs(model, style_dim, batch=2)
    return two - one, 2 * one - two
