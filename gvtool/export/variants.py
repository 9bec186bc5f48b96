"""Precision variants of an fp32 ONNX graph: fp16 weights and compute, int8 Q/DQ.

Precision lives in the graph (DESIGN.md): TensorRT 11 has no FP16/INT8 builder flags, so engines are
built from these files as strongly typed networks, and onnxruntime runs the same files.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import warnings
from pathlib import Path
from typing import Iterable

import numpy as np
import onnx

from gvtool.fileio import atomic_write_bytes


def to_fp16(src: Path, dst: Path) -> None:
    """fp16 weights and activations; float32 inputs and outputs kept, so callers feed the same arrays."""
    from onnxconverter_common import float16

    with warnings.catch_warnings():
        # "the float32 number 7e-08 will be truncated to 1e-07": fp16's range, which validation measures
        warnings.simplefilter("ignore", UserWarning)
        model = float16.convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    _fix_casts_to_float(model)
    _fix_output_readers(model)
    atomic_write_bytes(dst, model.SerializeToString())


def _fix_output_readers(model: onnx.ModelProto) -> None:
    """With keep_io_types, the converter casts each output back to float32 at the end, yet leaves the graph's own
    readers of that output (a joint model's label_encoder draws its latents from the label_logvar it returns) on the
    float32 copy, next to float16 values: onnxruntime refuses the file. Rewire them to the float16 value."""
    outputs = {o.name for o in model.graph.output}
    fp16_source = {node.output[0]: node.input[0] for node in model.graph.node
                   if node.op_type == "Cast" and node.output[0] in outputs}
    for node in model.graph.node:
        if node.op_type == "Cast" and node.output[0] in fp16_source:
            continue
        for i, name in enumerate(node.input):
            if name in fp16_source:
                node.input[i] = fp16_source[name]


def _fix_casts_to_float(model: onnx.ModelProto) -> None:
    """Cast nodes whose output the converter retyped to float16 but whose `to` still says float32
    (the conditional decoder's Cast(OneHot(labels))): make `to` agree, or onnxruntime refuses the file.
    onnxconverter-common issue #320."""
    fp16_values = {v.name for v in model.graph.value_info
                   if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT16}
    for node in model.graph.node:
        if node.op_type == "Cast" and node.output[0] in fp16_values:
            for attr in node.attribute:
                if attr.name == "to" and attr.i == onnx.TensorProto.FLOAT:
                    attr.i = onnx.TensorProto.FLOAT16


class _Feeds:
    """onnxruntime's CalibrationDataReader protocol over a list of feeds."""

    def __init__(self, feeds: Iterable[dict[str, np.ndarray]]):
        self._it = iter(list(feeds))

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


class _AxisWarning(logging.Filter):
    """onnxruntime's quantizer warns on the root logger, "Axis 1 is out-of-range for weight ... with rank 1", for each
    rank-1 weight it is asked to quantize per channel (a conditional model's label projection): it then quantizes
    that weight per tensor, which for a single channel is the same thing. The line told the user nothing."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno == logging.WARNING and "is out-of-range for weight" in record.getMessage())


@contextlib.contextmanager
def _quiet_axis_warnings():
    quiet = _AxisWarning()
    logging.getLogger().addFilter(quiet)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(quiet)


def to_int8(src: Path, dst: Path, calibration: list[dict[str, np.ndarray]],
            op_types: tuple[str, ...] | None = None, float_last_conv: bool = False) -> None:
    """Static int8 in QDQ form: symmetric int8 activations (min/max calibrated on `calibration`) and
    symmetric per-channel int8 weights, the form TensorRT's explicit quantization reads. `op_types` limits it to
    those operators (None: every operator onnxruntime quantizes); `float_last_conv` leaves the graph's last
    convolution in float (a decoder's, which writes the pixels)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(dir=dst.parent) as tmp, _quiet_axis_warnings():
        prepared, quantized = Path(tmp) / "prepared.onnx", Path(tmp) / "int8.onnx"
        # Shape inference and graph optimisation first, as onnxruntime's quantization guide asks.
        quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
        excluded = [n.name for n in onnx.load(str(prepared)).graph.node
                    if n.op_type in ("Conv", "ConvTranspose")][-1:] if float_last_conv else None
        quantize_static(str(prepared), str(quantized), _Feeds(calibration), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax, op_types_to_quantize=op_types,
                        nodes_to_exclude=excluded,
                        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})
        model = onnx.load(str(quantized))
    atomic_write_bytes(dst, model.SerializeToString())


def to_int8_weights(src: Path, dst: Path) -> None:
    """Weight-only int8: every MatMul's or Gemm's constant weight stored as int8 with a symmetric scale per output
    channel and dequantised in the graph (DequantizeLinear, which TensorRT reads as weight-only quantization), and every
    Gather's constant table (V, D) as int8 rows with a scale per row, dequantised after the gather (only the rows
    looked up). Activations stay float. For a transformer, where static int8 activations fail: all-MiniLM-L6-v2's
    embeddings fell to cosine 0.88 of fp32's with them (outlier activations), and stay above 0.998 with this. And for
    the tiny MLPs of a joint model (its label encoder and classifier): static int8 moved the label encoder's outputs
    by 0.069 on average (MNIST), for a graph of 0.04 MFLOPs that int8 activations could not speed up anyway."""
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    initializers = {i.name: i for i in graph.initializer}
    used_by = {}
    for node in graph.node:
        for name in node.input:
            used_by.setdefault(name, []).append(node)
    nodes, added, dropped = [], [], set()
    for node in graph.node:
        weight = (node.input[1] if node.op_type in ("MatMul", "Gemm") else node.input[0] if node.op_type == "Gather"
                  else None)
        tensor = initializers.get(weight)
        if (tensor is None or tensor.data_type != onnx.TensorProto.FLOAT or len(tensor.dims) != 2
                or len(used_by[weight]) != 1 or min(tensor.dims) < 2):
            nodes.append(node)
            continue
        w = numpy_helper.to_array(tensor).astype(np.float32)
        # the output channels: a MatMul's columns, a Gemm's rows when it multiplies by the weight transposed (a torch
        # Linear's), else its columns; a table's rows
        transposed = node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute)
        axis = 0 if node.op_type == "Gather" or transposed else 1
        scale = np.maximum(np.abs(w).max(axis=1 - axis), 1e-12) / 127.0
        q = np.clip(np.round(w / np.expand_dims(scale, 1 - axis)), -127, 127).astype(np.int8)
        added += [numpy_helper.from_array(q, f"{weight}_int8"),
                  numpy_helper.from_array(scale.astype(np.float32), f"{weight}_scale")]
        dropped.add(weight)
        if node.op_type != "Gather":
            added.append(numpy_helper.from_array(np.zeros(len(scale), np.int8), f"{weight}_zero"))
            nodes.append(helper.make_node("DequantizeLinear", [f"{weight}_int8", f"{weight}_scale", f"{weight}_zero"],
                                          [weight], name=f"{node.name}_dequantize", axis=axis))
            nodes.append(node)
            continue
        # Gather(table, ids) -> Cast(Gather(int8 table, ids)) * Gather(scales, ids)[..., None]
        ids, out, base = node.input[1], node.output[0], node.name
        nodes += [helper.make_node("Gather", [f"{weight}_int8", ids], [f"{out}_int8"], name=f"{base}_int8", axis=0),
                  helper.make_node("Cast", [f"{out}_int8"], [f"{out}_float"], name=f"{base}_cast",
                                   to=onnx.TensorProto.FLOAT),
                  helper.make_node("Gather", [f"{weight}_scale", ids], [f"{out}_scale"], name=f"{base}_scale", axis=0),
                  helper.make_node("Unsqueeze", [f"{out}_scale", f"{weight}_last_axis"], [f"{out}_scale_column"],
                                   name=f"{base}_unsqueeze"),
                  helper.make_node("Mul", [f"{out}_float", f"{out}_scale_column"], [out], name=f"{base}_dequantize")]
        added.append(numpy_helper.from_array(np.array([-1], np.int64), f"{weight}_last_axis"))
    kept = [i for i in graph.initializer if i.name not in dropped]
    del graph.initializer[:]
    graph.initializer.extend(kept + added)
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    atomic_write_bytes(dst, model.SerializeToString())
