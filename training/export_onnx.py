"""The ONNX half of training.export: a torch.export program of the generator (reference backend) as an
ONNX graph of standard operators, run with ONNX Runtime on the CPU.

Needs onnx, onnxruntime and onnxscript (``pip install '.[onnx]'``); training.export imports this module
only after ``missing_onnx_package`` found all three.

The reference backend's modulated conv is a grouped convolution with one group per image. ONNX's Conv
takes its group count as a fixed attribute, so with a symbolic batch that convolution has no ONNX
translation; ``conv2d`` and ``conv_transpose2d`` below give it one with the same per-image weights:
the input's k x k patches (Slice, exact copies) times each image's weights (MatMul). A fixed batch
keeps ONNX's grouped Conv.
"""
import importlib
import json

import onnx
import onnxruntime
import torch
from onnxscript import opset18 as op
from onnxscript.function_libs.torch_lib.ops.core import aten_conv2d, aten_convolution

METADATA_KEY = "pixelfolder_export"
RANDOM_OPS = ("RandomNormal", "RandomNormalLike")
INT64 = onnx.TensorProto.INT64


def ints(*values):
    return op.Constant(value_ints=list(values))


def pair(value):
    """An ATen 2-d conv argument (int, [v] or [a, b]) as [a, b]."""
    return [value, value] if isinstance(value, int) else list(value) * (2 if len(value) == 1 else 1)


def as_dimension(count):
    """A symbolic int (a 0-d tensor) as a (1,) INT64 tensor, to concatenate into a shape."""
    return op.Reshape(op.Cast(count, to=INT64), ints(1))


def per_image_conv(input, size, weights, groups, stride, dilation, kernel_size, pads, bias):
    """The grouped conv of ``input`` (N, G * C_in, H, W) (``size`` = (H, W), static) zero-padded by
    ``pads`` (top, left, bottom, right), with ``weights`` (G, C_out, C_in * k * k) for its G groups
    (G symbolic): (N, G * C_out, H_out, W_out)."""
    x = op.Pad(input, ints(0, 0, pads[0], pads[1], 0, 0, pads[2], pads[3]))
    height, width = size[0] + pads[0] + pads[2], size[1] + pads[1] + pads[3]
    out_height = (height - dilation[0] * (kernel_size - 1) - 1) // stride[0] + 1
    out_width = (width - dilation[1] * (kernel_size - 1) - 1) // stride[1] + 1
    taps = []
    for row in range(kernel_size):
        for column in range(kernel_size):
            top, left = row * dilation[0], column * dilation[1]
            tap = op.Slice(x, ints(top, left),
                           ints(top + (out_height - 1) * stride[0] + 1, left + (out_width - 1) * stride[1] + 1),
                           ints(2, 3), ints(*stride))
            taps.append(op.Unsqueeze(tap, ints(2)))
    # (N, G * C_in, k * k, H_out, W_out) -> (N, G, C_in * k * k, H_out * W_out): the (C_in, kh, kw)
    # order of each group's weight rows.
    patches = op.Reshape(op.Concat(*taps, axis=2),
                         op.Concat(ints(0), as_dimension(groups), ints(-1, out_height * out_width), axis=0))
    out = op.Reshape(op.MatMul(weights, patches), ints(0, -1, out_height, out_width))
    return out if bias is None else op.Add(out, op.Reshape(bias, ints(1, -1, 1, 1)))


def conv2d(input, weight, bias=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1):
    """aten.conv2d: ONNX's Conv, or for a symbolic group count ``per_image_conv``."""
    if isinstance(groups, int):
        return aten_conv2d(input, weight, bias, stride, padding, dilation, groups)
    in_channels, kernel_size = weight.shape[1], weight.shape[3]
    weights = op.Reshape(weight, op.Concat(as_dimension(groups), ints(-1, in_channels * kernel_size ** 2), axis=0))
    top, left = pair(padding)
    return per_image_conv(input, (input.shape[2], input.shape[3]), weights, groups, pair(stride), pair(dilation),
                          kernel_size, (top, left, top, left), bias)


def conv_transpose2d(input, weight, bias=None, stride=(1, 1), padding=(0, 0), output_padding=(0, 0), groups=1,
                     dilation=(1, 1)):
    """aten.conv_transpose2d: ONNX's ConvTranspose, or for a symbolic group count the stride-1
    ``per_image_conv`` of the input spread out by the stride (zeros between its pixels) with each
    group's kernel flipped and its in and out channels swapped."""
    if isinstance(groups, int):
        return aten_convolution(input, weight, bias, stride, padding, dilation, True, output_padding, groups)
    stride, padding, output_padding, dilation = pair(stride), pair(padding), pair(output_padding), pair(dilation)
    out_channels, kernel_size = weight.shape[1], weight.shape[3]
    edges = [dilation[axis] * (kernel_size - 1) - padding[axis] for axis in range(2)]
    if min(edges) < 0:
        raise ValueError(f"conv_transpose2d with a symbolic group count: expected padding <= dilation * (k - 1), "
                         f"got padding {padding}")
    height, width = input.shape[2], input.shape[3]
    spread = op.Pad(op.Unsqueeze(input, ints(3, 5)), ints(*[0] * 9, stride[0] - 1, 0, stride[1] - 1))
    spread = op.Reshape(spread, ints(0, 0, height * stride[0], width * stride[1]))
    size = ((height - 1) * stride[0] + 1, (width - 1) * stride[1] + 1)
    spread = op.Slice(spread, ints(0, 0), ints(*size), ints(2, 3))
    # weight (G * C_in, C_out, k, k) -> (G, C_out, C_in * k * k), flipped in kh and kw.
    weights = op.Reshape(weight, op.Concat(as_dimension(groups), ints(-1, out_channels, kernel_size, kernel_size),
                                           axis=0))
    weights = op.Slice(weights, ints(-1, -1), ints(-kernel_size - 1, -kernel_size - 1), ints(3, 4), ints(-1, -1))
    weights = op.Reshape(op.Transpose(weights, perm=[0, 2, 1, 3, 4]),
                         op.Concat(as_dimension(groups), ints(out_channels, -1), axis=0))
    pads = (edges[0], edges[1], edges[0] + output_padding[0], edges[1] + output_padding[1])
    return per_image_conv(spread, size, weights, groups, (1, 1), dilation, kernel_size, pads, bias)


TRANSLATIONS = {torch.ops.aten.conv2d.default: conv2d, torch.ops.aten.conv_transpose2d.input: conv_transpose2d}


def write(program, path, metadata, opset):
    """The ONNX graph of the torch.export ``program`` at ``path``, with ``metadata`` in its metadata
    properties; returns its ``summary``."""
    onnx_program = torch.onnx.export(program, (), dynamo=True, opset_version=opset, output_names=["images"],
                                     custom_translation_table=TRANSLATIONS, verbose=False)
    onnx_program.model.metadata_props[METADATA_KEY] = json.dumps(metadata)
    onnx_program.save(path, external_data=False)
    return summary(onnx.load(path))


def summary(model):
    """What the graph holds: {"opset", "operators": {op type: count}, "nodes", "stored_values"} (the
    numbers in its initializers: weights, constant noise, the truncation centre, folded constants)."""
    operators = {}
    for node in model.graph.node:
        operators[node.op_type] = operators.get(node.op_type, 0) + 1
    opset = next(entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx"))
    stored_values = sum(int(torch.Size(tensor.dims).numel()) for tensor in model.graph.initializer)
    return {"opset": opset, "operators": dict(sorted(operators.items())), "nodes": len(model.graph.node),
            "stored_values": stored_values}


def noise_as_inputs(model):
    """``model`` with each random-normal node's output made a graph input, ``noise_<i>`` in graph order
    (the order in which the program drew them: the generator's noise order), so that the check can feed
    the noise the eager generator drew. A mismatch in order or shape shows as a failed check."""
    random_nodes = [node for node in model.graph.node if node.op_type in RANDOM_OPS]
    renamed = {node.output[0]: f"noise_{index}" for index, node in enumerate(random_nodes)}
    for node in random_nodes:
        model.graph.node.remove(node)
    for node in model.graph.node:
        for index, name in enumerate(node.input):
            if name in renamed:
                node.input[index] = renamed[name]
    for name in renamed.values():
        model.graph.input.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return model


class Runner:
    """The graph at ``path`` in ONNX Runtime on the CPU, called like the program: (z[, psi]) -> images.
    With random noise, its random-normal nodes take their values from torch's global RNG instead,
    drawn as the eager generator draws them (``noise_shapes``, one (1, ...) shape per noise input).
    ``threads``: ONNX Runtime's intra-op threads (its default: one per core)."""

    def __init__(self, path, noise_shapes=None, threads=None):
        model = onnx.load(path)
        if noise_shapes is not None:
            model = noise_as_inputs(model)
        options = onnxruntime.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(model.SerializeToString(), options,
                                                    providers=["CPUExecutionProvider"])
        self.noise_shapes = noise_shapes

    def __call__(self, z, psi=None):
        inputs = {"z": z.cpu().numpy()}
        if psi is not None:
            inputs["psi"] = psi.cpu().numpy()
        if self.noise_shapes is not None:
            for index, shape in enumerate(self.noise_shapes):
                inputs[f"noise_{index}"] = torch.randn((len(z),) + tuple(shape[1:])).numpy()
        return torch.from_numpy(self.session.run(["images"], inputs)[0])


def versions():
    return {name: importlib.import_module(name).__version__ for name in ("onnx", "onnxruntime", "onnxscript")}
