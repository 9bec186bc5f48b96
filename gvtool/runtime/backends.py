"""Choosing a backend for a bundle on this machine, and saying why.

auto: a TensorRT engine built for this GPU and TensorRT version, else onnxruntime on CUDA, else
onnxruntime on the CPU. Every runner is created here, once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gvtool.errors import BackendUnavailableError, BadInputError
from gvtool.manifest import Manifest, read_verified
from gvtool.runtime.ort_runner import OnnxRuntimeRunner, import_onnxruntime
from gvtool.runtime.runner import GraphRunner

BACKENDS = ("auto", "tensorrt", "onnxruntime", "onnxruntime-tensorrt")  # --backend of the runtime commands
ORT_TRT_CACHE = "engines/onnxruntime-trt"  # the onnxruntime TensorRT provider's own engine cache


@dataclass(frozen=True)
class Choice:
    runners: dict[str, GraphRunner]   # graph name -> runner
    backend: str
    device: str
    reason: str                        # what was picked and why, for the user


def parse_device(device: str) -> tuple[str, int]:
    """'cpu' -> ('cpu', 0); 'cuda' / 'cuda:I' -> ('cuda', I); 'auto' -> ('auto', 0)."""
    if device in ("auto", "cpu"):
        return device, 0
    kind, colon, index = device.partition(":")
    if kind == "cuda" and (not colon or index.isdigit()):
        return "cuda", int(index or 0)
    raise BadInputError(f"unknown --device {device!r}; expected auto, cpu, cuda or cuda:I")


def open_backend(bundle: Path, manifest: Manifest, graphs: list[str], backend: str, device: str,
                 precision: str, cuda_graphs: bool = False) -> Choice:
    """Runners for `graphs` (e.g. ["decoder"]) in `precision`, on the chosen backend and device."""
    if backend not in BACKENDS:
        raise BadInputError(f"unknown --backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    kind, index = parse_device(device)
    for graph in graphs:
        manifest.graph(graph, precision)  # a clear error if the bundle lacks that graph or precision
    if backend == "tensorrt":
        if kind == "cpu":
            raise BadInputError("--backend tensorrt runs on an NVIDIA GPU; use --device cuda:I, or --backend onnxruntime "
                                "on the CPU")
        return _tensorrt(bundle, manifest, graphs, precision, index, "asked for --backend tensorrt", cuda_graphs)
    if backend == "onnxruntime-tensorrt":
        if kind == "cpu":
            raise BadInputError("--backend onnxruntime-tensorrt runs on an NVIDIA GPU; use --device cuda:I")
        return _onnxruntime(bundle, manifest, graphs, precision, "onnxruntime-tensorrt", index,
                            f"asked for --backend onnxruntime-tensorrt (engines cached in {ORT_TRT_CACHE}/)")
    cuda_ort = "CUDAExecutionProvider" in import_onnxruntime().get_available_providers()
    if backend == "onnxruntime":
        if kind == "cuda" or (kind == "auto" and cuda_ort):
            return _onnxruntime(bundle, manifest, graphs, precision, "onnxruntime-cuda", index, "asked for onnxruntime on CUDA")
        return _onnxruntime(bundle, manifest, graphs, precision, "onnxruntime-cpu", 0, "asked for onnxruntime on the CPU")
    return _auto(bundle, manifest, graphs, precision, kind, index, cuda_ort)


def _auto(bundle, manifest, graphs, precision, kind, index, cuda_ort) -> Choice:
    if kind == "cpu":
        return _onnxruntime(bundle, manifest, graphs, precision, "onnxruntime-cpu", 0, "--device cpu")
    why_not_trt = "TensorRT engines not tried"
    try:
        return _tensorrt(bundle, manifest, graphs, precision, index, "an engine in the bundle matches this GPU")
    except (BackendUnavailableError, BadInputError) as error:
        why_not_trt = str(error).split(";")[0]
    if cuda_ort:
        return _onnxruntime(bundle, manifest, graphs, precision, "onnxruntime-cuda", index,
                            f"no usable TensorRT engine ({why_not_trt}); onnxruntime has CUDA")
    if kind == "cuda":
        raise BackendUnavailableError(f"--device cuda:{index} needs TensorRT engines or onnxruntime-gpu: {why_not_trt}, "
                                      "and this onnxruntime has no CUDAExecutionProvider (pip install 'gvtool[gpu]')")
    return _onnxruntime(bundle, manifest, graphs, precision, "onnxruntime-cpu", 0,
                        f"no usable TensorRT engine ({why_not_trt}) and no CUDA in onnxruntime")


def _onnxruntime(bundle, manifest, graphs, precision, backend, index, why) -> Choice:
    cache = Path(bundle) / ORT_TRT_CACHE if backend == "onnxruntime-tensorrt" else None
    runners = {}
    for graph in graphs:
        entry = manifest.graph(graph, precision)
        # The session is made from the very bytes whose hash was checked, never from the path: nothing can change
        # in between, and a graph cannot pull in other files of the folder (ONNX external data) unhashed
        model = read_verified(bundle, entry.file, entry.sha256)
        runners[graph] = OnnxRuntimeRunner(model, entry, backend, index, cache, name=entry.file)
    device = "cpu" if backend == "onnxruntime-cpu" else f"cuda:{index}"
    return Choice(runners, backend, device, f"{backend} on {device} ({precision}): {why}")


def _tensorrt(bundle, manifest, graphs, precision, index, why, cuda_graphs: bool = False) -> Choice:
    from gvtool.runtime.trt_runner import TensorRTRunner, engine_for, engine_mismatch, tensorrt_environment

    trt, cudart, gpu_name, capability, version = tensorrt_environment(index)
    runners = {}
    for graph in graphs:
        key = f"{graph}.{precision}"
        engine = engine_for(manifest, key, gpu_name, capability, version)
        if engine is None:
            for runner in runners.values():
                runner.close()
            raise BackendUnavailableError(engine_mismatch(manifest, key, gpu_name, capability, version))
        runners[graph] = TensorRTRunner(bundle, engine, manifest.graph(graph, precision), device_index=index,
                                        cuda_graphs=cuda_graphs, trt=trt, cudart=cudart)
    return Choice(runners, "tensorrt", f"cuda:{index}", f"tensorrt on cuda:{index} {gpu_name} ({precision}): {why}")
