"""The onnxruntime backend: one InferenceSession per graph, made at load."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from gvtool.errors import BackendUnavailableError, BadBundleError
from gvtool.manifest import GraphEntry

ORT_HINT = ("install onnxruntime: pip install 'gvtool[cpu]' (CPU) or 'gvtool[gpu]' (CUDA; on a Jetson, NVIDIA's "
            "onnxruntime-gpu wheel for JetPack 6) — exactly one of the two")


def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as error:
        raise BackendUnavailableError(f"onnxruntime is missing ({error}); {ORT_HINT}") from None
    return onnxruntime


def usable_cpus() -> int:
    """CPUs this process may run on (a container or taskset may allow fewer than the machine has)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def providers_for(backend: str, device_index: int, cache_dir: Path | None) -> list:
    """onnxruntime execution providers, best first, for one of our backend names."""
    cuda = ("CUDAExecutionProvider", {"device_id": device_index})
    if backend == "onnxruntime-cpu":
        return ["CPUExecutionProvider"]
    if backend == "onnxruntime-cuda":
        return [cuda, "CPUExecutionProvider"]
    if backend == "onnxruntime-tensorrt":
        # The provider builds its own engines on first use; caching them inside the bundle makes the
        # second start fast (they are tied to this GPU and TensorRT version, like ours).
        trt = {"device_id": device_index, "trt_engine_cache_enable": True, "trt_timing_cache_enable": True,
               "trt_engine_cache_path": str(cache_dir), "trt_timing_cache_path": str(cache_dir)}
        return [("TensorrtExecutionProvider", trt), cuda, "CPUExecutionProvider"]
    raise ValueError(f"not an onnxruntime backend: {backend}")


class OnnxRuntimeRunner:
    """Implements GraphRunner with an onnxruntime session."""

    max_batch = None  # onnxruntime takes any batch; the caller still chunks to bound memory

    def __init__(self, model: Path | bytes, graph: GraphEntry, backend: str, device_index: int = 0,
                 cache_dir: Path | None = None, name: str | None = None):
        """`model`: the graph's file, or its bytes (how a bundle's graphs are loaded, after their hash check);
        `name` names it in errors."""
        path = name or str(model)
        ort = import_onnxruntime()
        wanted = providers_for(backend, device_index, cache_dir)
        name = wanted[0] if isinstance(wanted[0], str) else wanted[0][0]
        if name not in ort.get_available_providers():
            raise BackendUnavailableError(f"{backend} needs onnxruntime's {name}, and this onnxruntime "
                                          f"({ort.__version__}) has only {', '.join(ort.get_available_providers())}; "
                                          f"{ORT_HINT}")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL  # folds BN, fuses conv+act
        options.intra_op_num_threads = usable_cpus()  # these graphs are one chain: all threads on each op
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        if cache_dir is not None:
            cache_dir.mkdir(parents=True, exist_ok=True)
        try:
            source = model if isinstance(model, bytes) else str(model)
            self.session = ort.InferenceSession(source, options, providers=wanted)
        except Exception as error:  # onnxruntime's own exception types share no base with ours
            external = " (it keeps weights in other files, which a gvtool bundle never does)" if (
                "external" in str(error).lower()) else ""
            raise BadBundleError(f"onnxruntime cannot load {path}{external}: {error}") from None
        self.backend = backend
        self.output_names = [spec.name for spec in graph.outputs]
        got = [o.name for o in self.session.get_outputs()]
        if got != self.output_names:
            raise BadBundleError(f"{path} has outputs {got}, the manifest says {self.output_names}")
        self.providers = self.session.get_providers()

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(self.output_names, feeds)
