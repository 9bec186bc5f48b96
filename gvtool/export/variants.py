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
    atomic_write_bytes(dst, model.SerializeToString())


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


def to_int8(src: Path, dst: Path, calibration: list[dict[str, np.ndarray]]) -> None:
    """Static int8 in QDQ form: symmetric int8 activations (min/max calibrated on `calibration`) and
    symmetric per-channel int8 weights, the form TensorRT's explicit quantization reads."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(dir=dst.parent) as tmp, _quiet_axis_warnings():
        prepared, quantized = Path(tmp) / "prepared.onnx", Path(tmp) / "int8.onnx"
        # Shape inference and graph optimisation first, as onnxruntime's quantization guide asks.
        quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(quantized), _Feeds(calibration), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax,
                        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})
        model = onnx.load(str(quantized))
    atomic_write_bytes(dst, model.SerializeToString())
