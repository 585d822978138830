"""Whether a kernel may compute its offsets in 32 bits (csrc/common.h's fits_32bit_index states the same
for the CUDA kernels): on a GPU a 64-bit integer division or remainder is a subroutine of dozens of
instructions, a 32-bit one a few."""
_INT32_MAX = 2 ** 31 - 1


def fits_int32_offsets(*tensors, headroom):
    """Every element's offset in each tensor, and every lane index up to ``headroom`` past its element
    count (a kernel's last block), stays below 2^31. Strides are never negative in PyTorch."""
    return all(max(t.numel(), 1 + sum((size - 1) * stride for size, stride in zip(t.shape, t.stride())))
               + headroom <= _INT32_MAX for t in tensors)
