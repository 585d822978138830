"""@triton.jit pieces the StyledConv and ToRGB kernels share: a per-image scale applied as a K-vector
to a weight tile, the output-channel tiling and pixel addressing of an unfolded output, the StyledConv
epilogue's additive terms and the leaky ReLU's (and clamp's) gradient recovered from the saved output.

Offsets inside one image are 32-bit; callers add the batch offset (int64) to the base pointer."""
import triton
import triton.language as tl


@triton.jit
def scaled_rows(pointers, mask, scale, dtype: tl.constexpr):
    """A (K, N) tile with row k multiplied by scale[k] (in the scale's precision), rounded to ``dtype``:
    a per-image scale of the K dimension costs one multiply per weight element instead of one per
    activation element."""
    tile = tl.load(pointers, mask=mask, other=0.0).to(scale.dtype)
    return (tile * scale[:, None]).to(dtype)


@triton.jit
def output_channel_tile(tile, out_channels, QUADRANTS: tl.constexpr, BLOCK: tl.constexpr):
    """(quadrant, channel within the quadrant, conv output channel, in range) of a tile of conv output
    channels. An unfolded output (QUADRANTS = 4) stores conv channel q * C / 4 + c as channel c of
    sub-pixel q; a tile never spans two quadrants, so the quadrant is one scalar per tile."""
    quarter = out_channels // QUADRANTS
    tiles_per_quadrant = tl.cdiv(quarter, BLOCK)
    quadrant = tile // tiles_per_quadrant
    channel = (tile % tiles_per_quadrant) * BLOCK + tl.arange(0, BLOCK)
    return quadrant, channel, quadrant * quarter + channel, channel < quarter


@triton.jit
def pixel_tile(tile, pixels_per_image, width, BLOCK: tl.constexpr):
    """(pixel index, in range, row, column) of a tile of one image's pixels."""
    pixels = tile * BLOCK + tl.arange(0, BLOCK)
    return pixels, pixels < pixels_per_image, pixels // width, pixels % width


@triton.jit
def output_pixel_offsets(h, w, quadrant, stride_h, stride_w, QUADRANTS: tl.constexpr):
    """Offsets of conv output pixels (h, w) of one quadrant: pixel (2h + q // 2, 2w + q % 2) when unfolded."""
    if QUADRANTS == 4:
        return (2 * h + quadrant // 2) * stride_h + (2 * w + quadrant % 2) * stride_w
    return h * stride_h + w * stride_w


@triton.jit
def noise_and_bias(noise_ptr, strength_ptr, bias_ptr, image, h, w, channels, pixel_ok, channel_ok,
                   noise_stride_b, noise_stride_h, noise_stride_w, HAS_NOISE: tl.constexpr, HAS_BIAS: tl.constexpr,
                   dtype: tl.constexpr):
    """The epilogue's additive terms of a (pixels, channels) tile of one image: noise_strength *
    noise[image, h, w] + bias[c], each zero when absent (its pointer may then be None)."""
    shift = tl.zeros((h.shape[0], channels.shape[0]), dtype=dtype)
    if HAS_NOISE:
        noise = tl.load(noise_ptr + image * noise_stride_b + h * noise_stride_h + w * noise_stride_w, mask=pixel_ok,
                        other=0.0)
        shift += noise.to(dtype)[:, None] * tl.load(strength_ptr).to(dtype)
    if HAS_BIAS:
        shift += tl.load(bias_ptr + channels, mask=channel_ok, other=0.0).to(dtype)[None, :]
    return shift


@triton.jit
def activation_gradient(grad_output, output, gain, negative_gain, saturated):
    """The gradient of the pre-activation: the output's sign is the pre-activation's (gain > 0), so the
    leaky ReLU's slope comes from the saved output whatever the slope, 0 included; an output the clamp
    saturated (magnitude ``saturated``, the clamp as stored: +inf without one) has none."""
    gradient = tl.where(output > 0, grad_output * gain, grad_output * negative_gain)
    return tl.where(tl.abs(output) < saturated, gradient, 0.0)
