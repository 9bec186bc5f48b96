"""torch -> ONNX for a model's graphs (train/graphs.py), with fixed names and a dynamic batch axis."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import onnx
import torch

from gvtool.errors import ExportValidationError
from gvtool.fileio import atomic_write_bytes
from gvtool.manifest import TensorSpec

# Opset 17 and IR version 8 on purpose: TensorRT 10.3 (JetPack 6) parses opsets up to 17+ and
# onnxruntime has run IR 8 / opset 17 since 1.13 (2022), so one file serves Jetsons, older runtimes
# and current desktops. Nothing in these graphs needs a newer operator.
DEFAULT_OPSET = 17
IR_VERSION = 8
MIN_OPSET = 13  # per-channel QuantizeLinear/DequantizeLinear (int8 variants) needs opset >= 13


def example_inputs(specs: tuple[TensorSpec, ...], batch: int = 2) -> tuple[torch.Tensor, ...]:
    """Zeros of each input's shape at `batch`: tracing needs values, not meaningful ones."""
    dtypes = {"float32": torch.float32, "int64": torch.int64}
    return tuple(torch.zeros((batch, *spec.shape[1:]), dtype=dtypes[spec.dtype]) for spec in specs)


def _declare_shapes(values, specs: tuple[TensorSpec, ...]) -> None:
    """Write each declared shape into the graph: "batch" for the dynamic axis, fixed sizes elsewhere."""
    for value, spec in zip(values, specs):
        dims = value.type.tensor_type.shape.dim
        del dims[:]
        for size in spec.shape:
            dim = dims.add()
            if isinstance(size, str):
                dim.dim_param = size
            else:
                dim.dim_value = size


def export_onnx(module: torch.nn.Module, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...],
                path: Path, opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """Trace `module` (eval mode) to ONNX at `path`, atomically; return the checked model."""
    module.eval()
    names_in, names_out = [s.name for s in inputs], [s.name for s in outputs]
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of torch.export, but it is the one that
        # writes opset 17 with plain dynamic axes in one step; the warning says nothing actionable.
        warnings.simplefilter("ignore")
        torch.onnx.export(module, example_inputs(inputs), buffer, dynamo=False, opset_version=opset,
                          input_names=names_in, output_names=names_out, do_constant_folding=True,
                          dynamic_axes={name: {0: "batch"} for name in names_in + names_out})
    model = onnx.load_from_string(buffer.getvalue())
    model.ir_version = min(model.ir_version, IR_VERSION)
    _declare_shapes(model.graph.output, outputs)  # the tracer's guesses (e.g. "Slicemean_dim_1") -> the contract
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as error:
        raise ExportValidationError(f"the exported {path.name} is not a valid ONNX model: {error}") from None
    atomic_write_bytes(path, model.SerializeToString())
    return model
