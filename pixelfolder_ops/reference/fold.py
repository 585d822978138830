"""Reference fold / unfold: views and one permute, as the official implementation does it."""


def fold(args):
    batch, channels, height, width = args.input.shape
    blocks = args.input.reshape(batch, channels, height // 2, 2, width // 2, 2)
    # (B, C, H/2, dy, W/2, dx) -> (B, dy, dx, C, H/2, W/2): channel index (dy * 2 + dx) * C + c.
    return blocks.permute(0, 3, 5, 1, 2, 4).reshape(batch, 4 * channels, height // 2, width // 2)


def unfold(args):
    return unfold_channels(args.input)


def unfold_channels(input):
    """unfold on its own, for the reference's layers that end in it."""
    batch, channels, height, width = input.shape
    blocks = input.reshape(batch, 2, 2, channels // 4, height, width)
    # (B, dy, dx, C, H, W) -> (B, C, H, dy, W, dx)
    return blocks.permute(0, 3, 4, 1, 5, 2).reshape(batch, channels // 4, 2 * height, 2 * width)
