"""Pretrained networks of other projects, in and out: NVlabs pickles (stylegan2-ada-pytorch,
stylegan3's StyleGAN2), rosinality stylegan2-pytorch checkpoints, CIPS releases. Reading never runs
code from the file; see models.pretrained for the entry points."""


class FormatError(ValueError):
    """A file that cannot be read as, or a network that does not map to, a format: the message is one
    line that names what was found."""


def unreadable(path, reason):
    """The error for a file that is no checkpoint at all (empty, truncated, text, damaged)."""
    return FormatError(f"checkpoint {path} cannot be read: it is truncated, corrupt or not a checkpoint ({reason})")


def reason(error):
    """The first sentence of an exception's message (its type where it has none), to quote in one line:
    the rest of a library's message is often advice that does not apply."""
    text = str(error).strip()
    return text.splitlines()[0].split(". ")[0] if text else type(error).__name__
