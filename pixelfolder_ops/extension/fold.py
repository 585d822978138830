"""fold / unfold on the compiled kernels; each is the other's gradient, so both differentiate to any order."""
from .._layout import empty
from ..fold import FoldArguments, UnfoldArguments
from ._library import LIBRARY


def fold(args):
    return LIBRARY.call("fold", args)


def unfold(args):
    return LIBRARY.call("unfold", args)


def register(library):
    library.define("fold", FoldArguments)
    library.define("unfold", UnfoldArguments)

    @library.register_fake("fold")
    def _(args):
        batch, channels, height, width = args.input.shape
        return empty((batch, 4 * channels, height // 2, width // 2), args.input)

    @library.register_fake("unfold")
    def _(args):
        batch, channels, height, width = args.input.shape
        return empty((batch, channels // 4, 2 * height, 2 * width), args.input)

    library.register_autograd("fold", lambda ctx, grad: {"input": library.call("unfold", input=grad)})
    library.register_autograd("unfold", lambda ctx, grad: {"input": library.call("fold", input=grad)})
