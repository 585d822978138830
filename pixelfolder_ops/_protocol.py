"""How an op is defined: once, as the record of its arguments.

Each op's file (``pixelfolder_ops/<op>.py``) defines a ``typing.NamedTuple`` of the op's arguments, in
order, with their types and defaults, and decorates its checks with ``public_op``. Everything else reads
that record by name:

- the public function takes the record's fields as its parameters (``public_op``);
- every backend's function of the op takes the checked record: ``reference.styled_conv2d(args)``;
- the torch.library schemas of the compiled and Triton ops are generated from it (``Library.define``),
  and the C++ kernels read their arguments by the same names (csrc/arguments.h);
- autograd formulas bind their inputs to names and return gradients by name (``Library.register_autograd``).

A field typed ``Tensor`` or ``Optional[Tensor]`` is a tensor argument; every other field is an *option*
(a flag or a number), which the op's helper ops (its backward, an epilogue) take as well: adding an
option to an op touches its record and the kernels that use it.
"""
import collections
import functools
import inspect
import typing
from typing import Optional

import torch

Tensor = torch.Tensor
IntPair = typing.Tuple[int, int]
IntQuad = typing.Tuple[int, int, int, int]

# Python annotation -> torch.library schema type.
_SCHEMA_TYPES = {Tensor: "Tensor", Optional[Tensor]: "Tensor?", bool: "bool", int: "int", float: "float",
                 Optional[float]: "float?", IntPair: "int[2]", IntQuad: "int[4]"}

# record -> its op's name, filled by ``public_op``.
_OP_NAMES = {}


def op_name(record):
    return _OP_NAMES[record]


def _schema_type(record, field):
    return _SCHEMA_TYPES[typing.get_type_hints(record)[field]]


def is_tensor_field(record, field):
    return _schema_type(record, field).startswith("Tensor")


def option_fields(record):
    """The record's options: its fields that are not tensors, in order."""
    return tuple(field for field in record._fields if not is_tensor_field(record, field))


def options(args, record=None):
    """The options of ``args`` (a record, or the bound arguments of an op that takes ``record``'s
    options) by name: what an autograd formula keeps for the backward, without holding on to tensors."""
    return {field: getattr(args, field) for field in option_fields(record or type(args))}


def fields(record, *names):
    """Schema arguments for the named fields of ``record``, all of them when none is named:
    ["Tensor input", "float? clamp", ...]."""
    return [f"{_schema_type(record, name)} {name}" for name in names or record._fields]


def option_arguments(record):
    """Schema arguments for the options of ``record``: what its op's helper ops (backward, epilogue) take."""
    return fields(record, *option_fields(record))


def public_op(record):
    """Makes the decorated check function the public op whose arguments are ``record``.

    The check takes the record (its fields as the user gave them, defaults filled in) and returns it
    checked and normalised (``args._replace(...)``), raising ValueError for bad input. The public
    function's signature is the record's, plus the keyword-only ``backend``; it runs the op on the
    backend in force (pixelfolder_ops.backend) for the device of the record's first tensor."""
    def decorate(check):
        name = check.__name__
        _OP_NAMES[record] = name

        @functools.wraps(check)
        def op(*args, backend=None, **kwargs):
            arguments = check(record(*args, **kwargs))
            return _backend_call(backend, name, arguments)

        parameters = list(inspect.signature(record).parameters.values())
        parameters.append(inspect.Parameter("backend", inspect.Parameter.KEYWORD_ONLY, default=None))
        op.__signature__ = inspect.Signature(parameters)
        del op.__wrapped__  # help() shows the signature above, not the check's
        return op
    return decorate


def _backend_call(backend, name, arguments):
    from .backend import call  # the backend switch imports the ops' records

    return call(backend, name, arguments)


class Library:
    """A torch.library namespace whose ops are defined from records, in Python, when first needed
    (``define`` runs from a backend's ``register``): the C++ extension registers kernels for these
    schemas, the Triton backend Python ones. Each op's inputs are bound to its argument names for the
    fake kernels and autograd formulas registered here."""

    def __init__(self, namespace):
        self.namespace = namespace
        self._library = None
        self._arguments = {}  # op name -> namedtuple type of its arguments

    @property
    def defined(self):
        """Whether any op of the namespace is defined yet."""
        return self._library is not None

    def define(self, name, arguments, returns="Tensor"):
        """Defines ``namespace::name``; ``arguments`` is a record (its whole argument list) or a list of
        schema arguments (see ``fields`` and ``option_arguments``)."""
        if isinstance(arguments, type):
            arguments, bound = fields(arguments), arguments
        else:
            bound = collections.namedtuple(f"{name}_arguments", [a.split()[-1] for a in arguments])
        if self._library is None:
            self._library = torch.library.Library(self.namespace, "DEF")
        self._library.define(f"{name}({', '.join(arguments)}) -> {returns}")
        self._arguments[name] = bound

    def impl(self, name, function):
        """A Python kernel for every device; ``function`` takes the bound arguments."""
        bound = self._arguments[name]
        self._library.impl(name, lambda *inputs: function(bound(*inputs)), "CompositeExplicitAutograd")

    def register_fake(self, name, function=None):
        """The fake (meta) kernel of op ``name``: ``function`` takes the bound arguments. A decorator
        when ``function`` is not given."""
        if function is None:
            return lambda decorated: self.register_fake(name, decorated)
        bound = self._arguments[name]
        torch.library.register_fake(f"{self.namespace}::{name}", lambda *inputs: function(bound(*inputs)),
                                    lib=self._library)
        return function

    def register_autograd(self, name, backward, setup_context=None):
        """``setup_context(ctx, args, output)`` gets the bound arguments; ``backward(ctx, *grads)``
        returns {argument name: gradient} (the others get None). ``needs_grad(ctx, name)`` says whether
        an argument's gradient is asked for."""
        bound = self._arguments[name]

        def setup(ctx, inputs, output):
            ctx.argument_names = bound._fields
            if setup_context is not None:
                setup_context(ctx, bound(*inputs), output)

        def gradients(ctx, *grads):
            named = backward(ctx, *grads)
            return tuple(named.get(field) for field in bound._fields)

        torch.library.register_autograd(f"{self.namespace}::{name}", gradients, setup_context=setup,
                                        lib=self._library)

    def first_order_only(self, name, forward_name):
        """An autograd formula for the backward op ``name`` that refuses to differentiate it."""
        def backward(ctx, *grads):
            raise RuntimeError(f"pixelfolder_ops: {forward_name} supports first-order gradients only; "
                               f"a second derivative (through {name}) is not implemented")

        torch.library.register_autograd(f"{self.namespace}::{name}", backward, lib=self._library)

    def op(self, name):
        return getattr(getattr(torch.ops, self.namespace), name)

    def call(self, name, args=None, **given):
        """Runs op ``name`` with its arguments by name: those in ``given``, the rest from the record
        ``args`` (fields of the same names)."""
        values = {field: given[field] if field in given else getattr(args, field)
                  for field in self._arguments[name]._fields}
        return self.op(name)(**values)


def needs_grad(ctx, name):
    """Whether the gradient of argument ``name`` is asked for (in a Library autograd formula)."""
    return ctx.needs_input_grad[ctx.argument_names.index(name)]


def refuse_filter_gradient(ctx, op, name):
    """Resampling filters are fixed: a gradient asked for one is refused rather than silently dropped."""
    if needs_grad(ctx, name):
        raise RuntimeError(f"pixelfolder_ops: {op} has no gradient for its '{name}' (a fixed filter); "
                           f"detach it or use the reference backend")
