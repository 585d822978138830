"""Gradient formulas that more than one backend's autograd uses."""
import math
import struct

import torch


def modulated_1x1_conv_backward(grad_output, input, weight, styles):
    """Gradients of out[b] = W'[b] x[b] for input, weight and styles, where W'[b] = weight[:, :, 0, 0] *
    styles[b] is (C_out, C_in) and x[b] is the image's (C_in, H*W) pixels (ToRGB's conv).

    One GEMM per image gives the input's gradient, one the modulated weight's, each reading or writing
    the C_in-channel tensor once; the weight's and styles' follow from W'[b]'s. ATen ops only, so the
    result differentiates again."""
    out_channels, in_channels = weight.shape[:2]
    grad = grad_output.flatten(2)
    flat_weight = weight.view(1, out_channels, in_channels)
    grad_input = torch.bmm((flat_weight * styles.unsqueeze(1)).transpose(1, 2), grad).view(input.shape)
    grad_modulated_weight = torch.bmm(grad, input.flatten(2).transpose(1, 2))
    grad_weight = (grad_modulated_weight * styles.unsqueeze(1)).sum(0).view(weight.shape)
    grad_styles = (grad_modulated_weight * flat_weight).sum(1)
    return grad_input, grad_weight, grad_styles


def save_to_rgb_context(ctx, args, outputs):
    """What a ToRGB backward keeps from ``outputs`` (the output, and with a clamp and a skip the clamped
    layer output before the skip, else empty): where the clamp cut is read from the clamped layer
    output, which without a skip is the output itself."""
    output, clamped = outputs
    ctx.mark_non_differentiable(clamped)  # kept for the backward only
    ctx.clamp = args.clamp
    ctx.skip_size = None if args.skip is None else args.skip.shape[-2:]
    ctx.save_for_backward(args.input, args.weight, args.styles, args.skip_kernel,
                          output if args.clamp is not None and args.skip is None else clamped)


def to_rgb_layer_gradients(ctx, grad_output, input, weight, styles, clamped):
    """The gradients of ToRGB's input, weight, styles and bias (the skip's is the caller's): an output the
    clamp saturated has none."""
    if ctx.clamp is not None:
        grad_output = grad_output * (clamped.abs() < stored_clamp(ctx.clamp, clamped.dtype))
    grad_input, grad_weight, grad_styles = modulated_1x1_conv_backward(grad_output, input, weight, styles)
    return {"input": grad_input, "weight": grad_weight, "styles": grad_styles, "bias": grad_output.sum((0, 2, 3))}


def demodulation_backward(grad_weight, grad_styles, grad_t, weight, styles):
    """The weight's and styles' gradients of a modulated conv, in their dtypes: those of its conv
    (``grad_weight``, ``grad_styles``) plus, when demodulating, the demodulation's share. d = rsqrt(t + eps)
    with t[b, o] = sum_i styles[b, i]^2 sum_k weight[o, i, k]^2, and ``grad_t`` = d(loss)/dt (B, C_out) in
    the compute type (None without demodulation)."""
    if grad_t is not None:
        s, w = styles.to(grad_t.dtype), weight.to(grad_t.dtype)
        grad_styles = grad_styles.add(s.mul(grad_t.mm(w.square().sum((2, 3)))), alpha=2)
        grad_weight = grad_weight.add(w.mul(grad_t.t().mm(s.square()).view(*weight.shape[:2], 1, 1)), alpha=2)
    return grad_weight.to(weight.dtype).contiguous(), grad_styles.to(styles.dtype)


def noise_gradients(grad_noise_map, noise, noise_strength):
    """The gradients of ``noise`` (B or 1, 1, H, W) and ``noise_strength`` when the pre-activation is
    conv + noise_strength * noise (the noise broadcast over the channels, and over the batch when it has
    one image): ``grad_noise_map`` (B, 1, H, W) is the pre-activation's gradient summed over channels."""
    grad_strength = (grad_noise_map * noise).sum().reshape(noise_strength.shape).to(noise_strength.dtype)
    grad_noise = grad_noise_map * noise_strength
    if noise.shape[0] == 1:  # shared by the batch
        grad_noise = grad_noise.sum(0, keepdim=True)
    return grad_noise.to(noise.dtype), grad_strength


def stored_clamp(clamp, dtype):
    """The value a kernel stores for an output of ``dtype`` that the clamp saturated: the clamp in the
    compute type (float32 for 16-bit types), rounded to ``dtype``; inf without a clamp. A backward that
    tells saturated outputs from the stored ones compares with this, not with ``clamp``. Plain Python, so
    that it runs the same traced or not."""
    if clamp is None:
        return math.inf
    if dtype == torch.float64:
        return float(clamp)
    value = struct.unpack("f", struct.pack("f", clamp))[0]
    if dtype == torch.float16:
        return struct.unpack("e", struct.pack("e", value))[0]
    if dtype == torch.bfloat16:  # the upper 16 bits of the float32, rounded to nearest even
        bits = struct.unpack("I", struct.pack("f", value))[0]
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        return struct.unpack("f", struct.pack("I", bits))[0]
    return value
