"""Validate an exported graph against torch: output names, then shapes, then values.

Runs with onnxruntime on the CPU, which is what every machine has; the same file then runs under
CUDA or TensorRT with their own (smaller) numeric differences.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import numpy as np
import onnxruntime as ort

from gvtool.errors import ExportValidationError
from gvtool.manifest import TensorSpec, Validation

# What each precision must meet, on outputs in the model's range: images in [-1, 1], vectors in units of the data's
# std per feature (a grid25 decoder's outputs reach +-4, where fp16's ~3 significant digits alone are ~0.004):
# fp32 only reorders float sums; fp16 keeps ~3 significant digits per layer; int8 is judged on the
# mean error, since a few saturated values dominate its maximum and mean error is what shows in images.
TOLERANCES = {"fp32": ("max_abs", 1e-4), "fp16": ("max_abs", 2e-2), "int8": ("mean_abs", 3e-2)}
# An encoder's log-variance is judged as the standard deviation it gives, exp(logvar / 2), in latent units like its
# mean: a model whose codes have no KL term (ALI's) leaves some near-deterministic, where logvar -11 and -11.4 are
# the same noise (std 0.004 and 0.003), yet int8 moved them by 0.37 on average (MNIST's ALI encoder: its std by 0.012)
AS_STD = ("logvar", "label_logvar")
# A sentence embedding is judged by its direction, as the decoder reads it: the worst row's 1 - cosine similarity to
# torch's. The text encoder's int8 is weight-only (variants.to_int8_weights): all-MiniLM-L6-v2's worst gap 0.0016.
COSINE_TOLERANCE = 0.01

Feeds = dict[str, np.ndarray]


def cpu_session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: ORT warns about unused initializers after folding
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own Fail/InvalidGraph/... types, none shared with us
        raise ExportValidationError(f"onnxruntime cannot load the exported {path.name}: {error}") from None


def validate_graph(path: Path, outputs: tuple[TensorSpec, ...], reference: Callable[[Feeds], list[np.ndarray]],
                   feeds: list[Feeds], precision: str, inputs_note: str, scale: tuple[float, ...] = (),
                   by_cosine: bool = False) -> Validation:
    """Compare `path` with `reference` on every feed. Raises on wrong names or shapes; returns values' verdict.
    `scale`, when given, divides every output's differences along its last axis (a vector decoder's per-feature
    data std), so that the tolerance means the same for data of any spread. A log-variance is compared as the
    standard deviation it gives (AS_STD). `by_cosine` judges (embedding) outputs by their worst row's 1 - cosine
    similarity instead, against COSINE_TOLERANCE."""
    session = cpu_session(path)
    got_names = [o.name for o in session.get_outputs()]
    want_names = [o.name for o in outputs]
    if got_names != want_names:
        raise ExportValidationError(f"{path.name}: outputs are named {got_names}, expected {want_names}")
    metric, tolerance = TOLERANCES[precision]
    divisor = np.asarray(scale, dtype=np.float64) if scale else 1.0
    if by_cosine:
        metric, tolerance = "cosine", COSINE_TOLERANCE
    max_abs, abs_sum, count, batches, cosine_gap = 0.0, 0.0, 0, [], 0.0
    for feed in feeds:
        try:
            got = session.run(want_names, feed)
        except Exception as error:  # wrong input shape or type for the graph: onnxruntime's own exception types
            raise ExportValidationError(f"onnxruntime cannot run {path.name}: {error}") from None
        want = reference(feed)
        batches.append(len(next(iter(feed.values()))))
        for name, g, w in zip(want_names, got, want):
            if g.shape != w.shape:
                raise ExportValidationError(f"{path.name}: output {name} has shape {g.shape} at batch {batches[-1]}, "
                                            f"expected {w.shape}")
            g, w = g.astype(np.float64), w.astype(np.float64)
            if name in AS_STD:
                g, w = np.exp(0.5 * g), np.exp(0.5 * w)
            diff = np.abs(g - w) / divisor
            if not np.isfinite(diff).all():
                raise ExportValidationError(f"{path.name}: output {name} has NaN or infinite values at batch {batches[-1]}")
            max_abs, abs_sum, count = max(max_abs, float(diff.max())), abs_sum + float(diff.sum()), count + diff.size
            if by_cosine:
                g, w = g.reshape(len(g), -1), w.reshape(len(w), -1)
                cosine = (g * w).sum(1) / np.maximum(np.linalg.norm(g, axis=1) * np.linalg.norm(w, axis=1), 1e-30)
                cosine_gap = max(cosine_gap, float((1.0 - cosine).max()))
    measured = Validation(max_abs_diff=max_abs, mean_abs_diff=abs_sum / count, metric=metric, tolerance=tolerance,
                          passed=False, batch_sizes=tuple(batches), inputs=inputs_note, scale=tuple(scale),
                          cosine_gap=cosine_gap)
    return dataclasses.replace(measured, passed=measured.judged <= tolerance)
