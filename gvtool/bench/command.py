"""`gvtool bench`: the cases of a benchmark and its report, composed from the runtime's backends and the
PyTorch baseline. Like cli.py it sits above the layers: it imports the runtime, and the torch baseline
(export/) only lazily, so benchmarking a bundle on a Jetson needs no torch.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Callable

import numpy as np

from gvtool import system
from gvtool.errors import BadInputError
from gvtool.manifest import CAPTION_GRAPH, DOMAIN_GRAPHS, GRAPHS, PRECISIONS, TEXT_GRAPH, ModelInfo, read_manifest
from gvtool.runtime.backends import BACKENDS as RUNTIME_BACKENDS
from gvtool.runtime.backends import open_backend
from gvtool.bench.core import (BenchReport, bundle_info, cuda_devices_info, library_versions, machine_info,
                                  matmul_peak_numpy, utc_now)
from gvtool.runtime.backends import parse_device
from gvtool.bench.cases import ROUNDS, Case, ChainedRunner, PromptRunner, run_cases
from gvtool.runtime.bundles import newest_bundle

# What `bench` measures: the runtime's backends (but "auto", which picks one of them) and the PyTorch baseline
BACKENDS = (*(b for b in RUNTIME_BACKENDS if b != "auto"), "torch")
# A translation model's paths, timed whole beside their graphs: A's image -> its code -> B's decoder, and back
PATHS = {"translate_ab": (DOMAIN_GRAPHS[0][0], DOMAIN_GRAPHS[1][1]),
         "translate_ba": (DOMAIN_GRAPHS[1][0], DOMAIN_GRAPHS[0][1]),
         # a model that takes text: one prompt encoded, then the batch of images it conditions (a joint model's drawn
         # through its caption expert between: _path_cases)
         "prompt_to_images": (TEXT_GRAPH, "decoder"),
         # a joint model: a partly observed image -> its posterior mean -> the decoded image, or the label
         "impute": ("encoder", "decoder"), "classify": ("encoder", "classifier")}
JOINT_PATHS = ("impute", "classify")  # timed by default for a joint model only (another's encoder -> decoder is not one)


MAX_BATCH = 1 << 16
# Bytes a batch item costs while one graph runs, as a multiple of its input and output: the activations between
# (the default MNIST decoder's widest layer holds ~6x its output), the torch baseline's copy, the backend's own.
ACTIVATION_FACTOR = 16


def _check_memory(model: ModelInfo, batch: int) -> None:
    """Refuse a batch size that could not fit, before any array is allocated (--batch-sizes 1000000000 ran numpy
    out of memory after minutes of work)."""
    if batch > MAX_BATCH:
        raise BadInputError(f"--batch-sizes {batch} is above {MAX_BATCH}; an edge model is benchmarked at batches "
                            "that fit a device")
    per_item = 4 * (int(np.prod(model.item_shape)) + 2 * model.latent_dim)
    needed, free = ACTIVATION_FACTOR * per_item * batch, system.available_memory()
    if free is not None and needed > free:
        raise BadInputError(f"--batch-sizes {batch} would need about {needed / 1e9:.1f} GB, and {free / 1e9:.1f} GB "
                            "of memory is free; pass smaller batch sizes")


def bench_bundle(bundle, *, graphs, batch_sizes, backends, precisions, devices, warmup_s, duration_s, iterations,
                 with_compile, cuda_graphs=False, log: Callable[[str], None]) -> BenchReport:
    bundle = Path(bundle) if bundle else newest_bundle()
    manifest = read_manifest(bundle)
    if graphs is None:  # every graph the bundle has, in the order its chains run them, and its translation paths
        present = {g.graph for g in manifest.graphs.values()}
        graphs = [g for g in ("encoder", TEXT_GRAPH, CAPTION_GRAPH, *manifest.model.sampling, *DOMAIN_GRAPHS[1],
                              "classifier") if g in present]
        graphs += [path for path, chain in PATHS.items() if all(g in present for g in chain)
                   and (path not in JOINT_PATHS or manifest.model.kind == "mvae")]
    for name, values, allowed in (("--backend", backends, BACKENDS), ("--precision", precisions, PRECISIONS),
                                  ("--graph", graphs, GRAPHS + tuple(PATHS))):
        unknown = [v for v in values if v not in allowed]
        if unknown or not values:
            raise BadInputError(f"unknown {name} {','.join(unknown) or '(none)'}; expected some of {','.join(allowed)}")
    if not devices:
        raise BadInputError("--device names no device; expected cpu, cuda or cuda:I, comma-separated")
    _check_memory(manifest.model, max(batch_sizes))
    devices = [_device_name(d) for d in devices]
    # A value given twice would be measured twice and reported as two rows.
    graphs, backends, precisions, devices, batch_sizes = (list(dict.fromkeys(v)) for v in
                                                          (graphs, backends, precisions, devices, batch_sizes))
    cases = [case for device in devices for graph in graphs for backend in backends for precision in precisions
             for case in _cases(bundle, manifest, graph, backend, precision, device, with_compile, cuda_graphs)]
    peaks = {device: _matmul_peak(device) for device in devices}
    log("matmul peak (fp32): " + ", ".join(f"{d} {p:,.0f} GFLOP/s" if p else f"{d} unmeasured" for d, p in peaks.items()))
    results = run_cases(manifest.model, cases, batch_sizes, warmup_s=warmup_s, duration_s=duration_s,
                        iterations=iterations, log=log)
    return BenchReport(
        date=utc_now(), machine=machine_info() | {"gpus": cuda_devices_info()}, versions=library_versions(),
        bundle=bundle_info(bundle),
        settings={"warmup_s": warmup_s, "duration_s": duration_s, "iterations": iterations,
                  "batch_sizes": batch_sizes, "rounds": ROUNDS},
        peaks=peaks, results=results)


def _device_name(device: str) -> str:
    kind, index = parse_device(device)
    if kind == "auto":
        raise BadInputError("--device auto is not measurable: name the devices, e.g. --device cpu,cuda:0")
    return "cpu" if kind == "cpu" else f"cuda:{index}"


def _cases(bundle, manifest, graph, backend, precision, device, with_compile, cuda_graphs=False) -> list[Case]:
    if graph in PATHS:
        return _path_cases(bundle, manifest, graph, backend, precision, device, with_compile, cuda_graphs)
    key = f"{graph}.{precision}"
    entry = manifest.graphs.get(key)
    flops = getattr(entry, "flops_per_item", None) or getattr(manifest.graphs.get(f"{graph}.fp32"), "flops_per_item", None)
    any_entry = entry or next((g for g in manifest.graphs.values() if g.graph == graph), None)
    common = dict(graph=graph, precision=precision, device=device, flops_per_item=flops,
                  inputs=any_entry.inputs if any_entry is not None else ())
    # The name results carry: onnxruntime is reported by the provider it ran on.
    label = {"onnxruntime": "onnxruntime-cpu" if device == "cpu" else "onnxruntime-cuda"}.get(backend, backend)
    if any_entry is None:
        return [Case(backend=label, make=None, skip_reason=f"a {manifest.model.kind} bundle has no {graph}", **common)]
    if backend == "torch":
        return _torch_cases(manifest, graph, precision, device, with_compile, common)
    if entry is None:
        return [Case(backend=label, make=None, skip_reason=f"the bundle has no {key} graph", **common)]
    if backend in ("tensorrt", "onnxruntime-tensorrt") and device == "cpu":
        return [Case(backend=label, make=None, skip_reason=f"{backend} runs on NVIDIA GPUs only", **common)]
    def make(graphs_on: bool = False):
        return lambda: open_backend(bundle, manifest, [graph], backend, device, precision, graphs_on).runners[graph]
    cases = [Case(backend=label, make=make(), **common)]
    if cuda_graphs and backend == "tensorrt":
        cases.append(Case(backend="tensorrt+graphs", make=make(True), note="CUDA graphs", **common))
    return cases


def _path_cases(bundle, manifest, path, backend, precision, device, with_compile, cuda_graphs) -> list[Case]:
    """A path's cases: each backend's runners of its two graphs, chained and timed as one call: a translation from
    image to image (the encoder's mean is the decoder's latents; a joint model's imputation and classification run
    so too, the decoder's image or the classifier's logits at the end), or a prompt to images (PromptRunner)."""
    first, second = (_cases(bundle, manifest, graph, backend, precision, device, with_compile, cuda_graphs)
                     for graph in PATHS[path])
    # a joint model's prompt draws the latents through its caption expert, between the text encoder and the decoder
    caption = (_cases(bundle, manifest, CAPTION_GRAPH, backend, precision, device, with_compile, cuda_graphs)
               if path == "prompt_to_images" and manifest.model.kind == "mvae" else [None] * len(first))
    cases = []
    for a, b, c in zip(first, second, caption):  # the same backend variants, in the same order
        flops = a.flops_per_item + b.flops_per_item if a.flops_per_item and b.flops_per_item else None
        if path == "prompt_to_images":  # per image: the decoder's and a caption expert's (one encoding a call)
            per_image = [b] + ([c] if c is not None else [])
            flops = sum(x.flops_per_item for x in per_image) if all(x.flops_per_item for x in per_image) else None
        common = dict(graph=path, backend=a.backend, precision=precision, device=device, flops_per_item=flops,
                      note=a.note, inputs=a.inputs)
        if a.make is None or b.make is None or (c is not None and c.make is None):
            cases.append(Case(make=None, skip_reason=a.skip_reason or b.skip_reason or c.skip_reason, **common))
        else:
            chain = ((lambda a=a, b=b, c=c: PromptRunner(a.make(), b.make(), manifest.model.latent_dim,
                                                         c.make() if c is not None else None))
                     if path == "prompt_to_images" else (lambda a=a, b=b: ChainedRunner(a.make(), b.make())))
            cases.append(Case(make=chain, **common))
    return cases


def _torch_cases(manifest, graph, precision, device, with_compile, common) -> list[Case]:
    if precision != "fp32":
        return [Case(backend="torch", make=None, skip_reason="the torch baseline runs the fp32 checkpoint", **common)]
    run_dir = Path(manifest.source.get("run_dir", ""))
    if not (run_dir / "checkpoint.safetensors").is_file():
        reason = f"the bundle's run {run_dir} is not on this machine"
        return [Case(backend="torch", make=None, skip_reason=reason, **common)]

    def make(compile_: bool):
        def build():
            from gvtool.bench.torch_baseline import TorchRunner  # torch only when this case runs

            return TorchRunner(run_dir, graph, device, compile=compile_)
        return build
    cases = [Case(backend="torch", make=make(False), note="eager", **common)]
    if with_compile:
        cases.append(Case(backend="torch.compile", make=make(True), **common))
    return cases


def _matmul_peak(device: str) -> float | None:
    """fp32 GFLOP/s of a large matmul on `device`, measured now: the ceiling the graphs are compared with.

    On the CPU the best of numpy's BLAS and torch's (when installed): a slow BLAS must not make the
    graphs look closer to the limit than they are.
    """
    try:
        import torch
    except ImportError:
        torch = None
    if device == "cpu":
        return max(matmul_peak_numpy(), _torch_cpu_peak(torch) if torch is not None else 0.0)
    if torch is None or not torch.cuda.is_available():
        return None
    a = torch.randn(4096, 4096, device=device)
    for _ in range(3):
        a @ a
    times = []
    for _ in range(10):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        a @ a
        end.record()
        torch.cuda.synchronize(device)
        times.append(start.elapsed_time(end) / 1e3)
    return 2 * 4096 ** 3 / statistics.median(times) / 1e9


def _torch_cpu_peak(torch, n: int = 1024, calls: int = 20) -> float:
    a = torch.randn(n, n)
    for _ in range(3):
        a @ a
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        a @ a
        times.append(time.perf_counter() - t0)
    return 2 * n ** 3 / statistics.median(times) / 1e9
