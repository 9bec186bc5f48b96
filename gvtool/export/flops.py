"""FLOPs per item of an ONNX graph, counted from the graph itself (what the bundle's manifest records).

A multiply-add counts as 2 FLOPs. Only these operators are counted; every other one counts 0:
- Conv: 2 * out_elements * (C_in / group) * prod(kernel), + out_elements with a bias
- ConvTranspose: 2 * in_elements * (C_out / group) * prod(kernel), + out_elements with a bias
- Gemm: 2 * M * N * K, + M * N with a C input; MatMul (batched, broadcast): 2 * out_elements * K
- BatchNormalization (when the exporter left it unfolded): 2 * elements (a scale and a shift)
- Relu, LeakyRelu, Tanh, Sigmoid, Add, Mul, Sub, Div on floating-point tensors: 1 per output element.
  On integer tensors they are the exporter's shape arithmetic (Shape -> Gather -> Add ...), not the
  model's, and count 0.
Data movement (Resize, Reshape, Concat, Slice, Cast, Gather, ...) and QuantizeLinear/DequantizeLinear
count 0, as does any operator not listed above.

Count the fp32 graph and record that number for every precision: an fp16 or int8 variant does the
same multiply-adds in narrower arithmetic (its Q/DQ nodes are bookkeeping, and the int8 preprocessing
may fold a BatchNormalization into the layer before it), so its FLOPs are the fp32 model's.
"""

from __future__ import annotations

import math

import onnx
from onnx import TensorProto

ELEMENTWISE = frozenset({"Relu", "LeakyRelu", "Tanh", "Sigmoid", "Add", "Mul", "Sub", "Div"})
FLOAT_TYPES = frozenset({TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16})


def flops_per_item(model: onnx.ModelProto, batch: int = 1) -> int:
    """FLOPs (multiply and add counted as 2) of one item through `model`, over the operators listed above.

    The graph's dynamic batch axis (axis 0 of its inputs, symbolic) is fixed to `batch` on a copy,
    shapes are inferred, and the total is divided by `batch`. Raises ValueError naming the node when
    a shape a counted node needs is still unknown after inference.
    """
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be an integer >= 1, got {batch!r}")
    shapes, elem_types = _inferred(_with_batch(model, batch))
    total = 0
    for index, node in enumerate(model.graph.node):
        total += _node_flops(node, _Shapes(shapes, node, index), elem_types)
    return total // batch


def _with_batch(model: onnx.ModelProto, batch: int) -> onnx.ModelProto:
    """A copy whose batch axis is `batch` wherever it appears, and with no stale value_info."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    del copy.graph.value_info[:]  # the tracer's guesses; inference writes them again with the batch fixed
    batch_names = set()
    for value in copy.graph.input:
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            if dims[0].dim_param:
                batch_names.add(dims[0].dim_param)
            dims[0].dim_value = batch
    for value in [*copy.graph.input, *copy.graph.output]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.HasField("dim_param") and dim.dim_param in batch_names:
                dim.dim_value = batch
    return copy


def _inferred(model: onnx.ModelProto) -> tuple[dict[str, tuple], dict[str, int]]:
    """name -> shape (ints, or None for an unknown dim) and name -> element type, after inference."""
    try:
        model = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError) as error:
        raise ValueError(f"shape inference failed: {error}") from None
    shapes, elem_types = {}, {}
    for init in model.graph.initializer:
        shapes[init.name], elem_types[init.name] = tuple(init.dims), init.data_type
    for value in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
        tensor = value.type.tensor_type
        elem_types[value.name] = tensor.elem_type
        if tensor.HasField("shape"):
            shapes[value.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim)
    return shapes, elem_types


class _Shapes:
    """The known shapes of one node's tensors; a missing one is a ValueError that names the node."""

    def __init__(self, shapes: dict[str, tuple], node: onnx.NodeProto, index: int):
        self.shapes, self.node = shapes, node
        self.where = f"node {node.name or f'#{index}'} ({node.op_type})"

    def __call__(self, name: str) -> tuple[int, ...]:
        shape = self.shapes.get(name)
        if shape is None or any(d is None for d in shape):
            raise ValueError(f"{self.where}: the shape of {name!r} is unknown after shape inference "
                             f"(got {shape}); FLOPs need every dimension but the batch fixed")
        return shape

    def input(self, i: int) -> tuple[int, ...]:
        return self(self.node.input[i])

    def output(self, i: int = 0) -> tuple[int, ...]:
        return self(self.node.output[i])


def _has_input(node: onnx.NodeProto, i: int) -> bool:
    return len(node.input) > i and node.input[i] != ""


def _attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _node_flops(node: onnx.NodeProto, shape: _Shapes, elem_types: dict[str, int]) -> int:
    op = node.op_type
    if op == "Conv":
        out, weight = shape.output(), shape.input(1)  # weight (C_out, C_in / group, *kernel)
        n_out = math.prod(out)
        return 2 * n_out * math.prod(weight[1:]) + (n_out if _has_input(node, 2) else 0)
    if op == "ConvTranspose":
        x, weight = shape.input(0), shape.input(1)  # weight (C_in, C_out / group, *kernel)
        bias = math.prod(shape.output()) if _has_input(node, 2) else 0
        return 2 * math.prod(x) * math.prod(weight[1:]) + bias
    if op == "Gemm":
        a, b = shape.input(0), shape.input(1)
        m, k = (a[1], a[0]) if _attr(node, "transA", 0) else a
        n = b[0] if _attr(node, "transB", 0) else b[1]
        return 2 * m * n * k + (m * n if _has_input(node, 2) else 0)
    if op == "MatMul":
        k = shape.input(0)[-1]  # (..., M, K) @ (..., K, N) -> (..., M, N): K multiply-adds per output
        return 2 * math.prod(shape.output()) * k
    if op == "BatchNormalization":
        return 2 * math.prod(shape.output())
    if op in ELEMENTWISE:
        elem_type = elem_types.get(node.output[0], TensorProto.UNDEFINED)
        if elem_type != TensorProto.UNDEFINED and elem_type not in FLOAT_TYPES:
            return 0  # integer or boolean: the exporter's shape arithmetic
        return math.prod(shape.output())
    return 0  # data movement, Q/DQ, and operators this count leaves out
