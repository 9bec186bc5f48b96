"""Build TensorRT engines from a bundle's ONNX graphs, on the GPU they will run on.

An engine runs only on the GPU model and TensorRT version that built it, so `gvtool export BUNDLE
--trt` runs on the target (JetPack 6 ships TensorRT 10.3; desktops may have 11.x) and the manifest
records both for every engine. Precision comes only from the ONNX graph variant (fp16 weights and
casts, int8 Q/DQ nodes): networks are strongly typed and no FP16/INT8 builder flag is ever set,
because TensorRT 11 removed those flags and one code path must serve 10.x and 11.x.

Only `tensorrt` and the CUDA runtime bindings are needed here, never torch, so engines can be built
on a Jetson that holds just the bundle.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from pathlib import Path
from typing import Callable, Iterable

from gvtool.errors import BackendUnavailableError, BadBundleError, BadInputError, ExportValidationError
from gvtool.fileio import atomic_write_bytes, folder_lock
from gvtool.manifest import (BATCH_AXIS, EngineEntry, GraphEntry, Manifest, bundle_path, read_manifest, verify_file,
                             write_manifest)
from gvtool.runtime.gpu import TENSORRT_HINT, gpu_properties, import_cudart, import_tensorrt, use_device

ENGINES_DIR = "engines"
TIMING_CACHE = f"{ENGINES_DIR}/timing.cache"   # tactic timings, reused by the next build on this GPU


def build_engines(bundle, *, graphs: Iterable[str] | None = None, precisions: Iterable[str] | None = None,
                  min_batch: int = 1, opt_batch: int = 8, max_batch: int = 64, workspace_mb: int = 1024,
                  dla_core: int | None = None, device_index: int = 0, trt=None, cudart=None,
                  log: Callable[[str], None] | None = None) -> Manifest:
    """Build one engine per selected graph for this machine's GPU and return the updated manifest.

    `graphs`/`precisions` None take every graph of the bundle. Engines go to BUNDLE/engines/, the
    timing cache to engines/timing.cache, and manifest.json is rewritten last: a failure leaves the
    old manifest valid (engine files written before it are unlisted, hence ignored). `trt` and
    `cudart` replace the `tensorrt` and CUDA runtime modules (tests pass fakes); `log` gets progress lines.
    """
    log = log or (lambda line: None)
    _check_options(min_batch, opt_batch, max_batch, workspace_mb, dla_core)
    with folder_lock(Path(bundle), "gvtool export --trt"):  # one writer of the bundle's engines and manifest
        return _build_locked(bundle, graphs, precisions, min_batch, opt_batch, max_batch, workspace_mb, dla_core,
                             device_index, trt, cudart, log)


def _build_locked(bundle, graphs, precisions, min_batch, opt_batch, max_batch, workspace_mb, dla_core, device_index,
                  trt, cudart, log) -> Manifest:
    manifest = read_manifest(bundle)
    entries = select_graphs(manifest, graphs, precisions)
    sources = {e.key: verify_file(bundle, e.file, e.sha256) for e in entries}  # a tampered file fails here, before any build

    trt = trt if trt is not None else import_tensorrt()
    cudart = cudart if cudart is not None else import_cudart()
    trt_version, trt_major = _tensorrt_version(trt)
    gpu_name, capability, driver = gpu_properties(cudart, device_index)
    use_device(cudart, device_index)
    log(f"GPU {device_index}: {gpu_name}, compute capability {capability}, CUDA driver "
        f"{driver // 1000}.{driver % 1000 // 10}, TensorRT {trt_version}")

    logger = trt.Logger(trt.Logger.WARNING)  # TensorRT prints its own warnings and errors to stderr
    builder = trt.Builder(logger)
    _check_dla(builder, dla_core, max_batch, log)
    batch = {"min": min_batch, "opt": opt_batch, "max": max_batch}
    cache_path = bundle_path(bundle, TIMING_CACHE)
    cache = cache_path.read_bytes() if cache_path.is_file() else b""
    built: dict[str, EngineEntry] = {}
    for entry in entries:
        log(f"building {entry.key} from {entry.file} (batch {min_batch}/{opt_batch}/{max_batch})")
        if dla_core is not None and entry.precision == "fp32":
            log(f"note: DLA runs fp16 and int8 layers only; {entry.key} will run on the GPU (GPU fallback)")
        network = _parse(trt, builder, logger, entry, sources[entry.key], trt_major)
        config = _builder_config(trt, builder, entry, batch, workspace_mb, dla_core, cache, log)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise ExportValidationError(f"TensorRT could not build an engine for {entry.key} from {entry.file}; "
                                        "the TensorRT log above says why")
        cache = memoryview(config.get_timing_cache().serialize()).tobytes()  # carries this build's timings to the next
        name = engine_file_name(entry.graph, entry.precision, gpu_name, capability, trt_version, dla_core)
        saved = _save_engine(bundle, name, memoryview(serialized).tobytes(), entry, batch, trt_version, gpu_name,
                             capability, dla_core)
        built[name.removesuffix(".engine")] = saved  # keyed by file stem: a rebuild replaces its old entry
        log(f"wrote {saved.file} ({saved.bytes / 1e6:.1f} MB)")

    atomic_write_bytes(cache_path, cache)
    manifest = dataclasses.replace(manifest, engines={**manifest.engines, **built})
    write_manifest(bundle, manifest)  # last: until here the old manifest stays valid
    return manifest


def _save_engine(bundle, name: str, engine: bytes, entry: GraphEntry, batch: dict, trt_version: str,
                 gpu_name: str, capability: str, dla_core: int | None) -> EngineEntry:
    """Write one engine atomically under engines/ and describe it for the manifest."""
    file = f"{ENGINES_DIR}/{name}"
    atomic_write_bytes(bundle_path(bundle, file), engine)
    return EngineEntry(graph_key=entry.key, precision=entry.precision, file=file,
                       sha256=hashlib.sha256(engine).hexdigest(), bytes=len(engine), profile=dict(batch),
                       tensorrt_version=trt_version, gpu_name=gpu_name, compute_capability=capability,
                       dla_core=dla_core)


def engine_file_name(graph: str, precision: str, gpu_name: str, compute_capability: str, trt_version: str,
                     dla_core: int | None = None) -> str:
    """e.g. decoder.fp16.nvidia-jetson-orin-nano.sm87.trt10.3.0.engine: graph, GPU and TensorRT at a glance."""
    slug = re.sub(r"[^a-z0-9]+", "-", gpu_name.lower()).strip("-") or "gpu"
    sm = compute_capability.replace(".", "")
    version = re.sub(r"[^A-Za-z0-9.]+", "-", trt_version)
    dla = "" if dla_core is None else f".dla{dla_core}"
    return f"{graph}.{precision}.{slug}.sm{sm}.trt{version}{dla}.engine"


def select_graphs(manifest: Manifest, graphs: Iterable[str] | None = None,
                  precisions: Iterable[str] | None = None) -> list[GraphEntry]:
    """The manifest's graph entries to build, refusing a graph or precision the bundle lacks."""
    graphs = _names(graphs)
    precisions = _names(precisions)
    entries = list(manifest.graphs.values())
    if not entries:
        raise BadBundleError("the bundle lists no graphs to build engines from; re-export it")
    have_graphs = list(dict.fromkeys(e.graph for e in entries))
    have_precisions = list(dict.fromkeys(e.precision for e in entries))
    for graph in graphs or ():
        if graph not in have_graphs:
            raise BadInputError(f"the bundle has no {graph} graph; it has {', '.join(have_graphs)}")
    for precision in precisions or ():
        if precision not in have_precisions:
            raise BadInputError(f"the bundle has no {precision} graphs (it has {', '.join(have_precisions)}); "
                                f"export with --precision {','.join([*have_precisions, precision])}")
    chosen = [e for e in entries
              if (graphs is None or e.graph in graphs) and (precisions is None or e.precision in precisions)]
    if not chosen:
        raise BadInputError(f"the bundle has no {'/'.join(graphs or have_graphs)} graph in "
                            f"{'/'.join(precisions or have_precisions)}; it has {', '.join(manifest.graphs)}")
    return chosen


def _names(names: Iterable[str] | None) -> tuple[str, ...] | None:
    if isinstance(names, str):  # one name given where a list was meant: "decoder", not "d", "e", ...
        names = (names,)
    return tuple(names) if names else None


def _check_options(min_batch: int, opt_batch: int, max_batch: int, workspace_mb: int, dla_core: int | None) -> None:
    if min_batch < 1:
        raise BadInputError(f"--min-batch must be at least 1, got {min_batch}")
    if max_batch < min_batch:
        raise BadInputError(f"--max-batch {max_batch} is smaller than --min-batch {min_batch}")
    if not min_batch <= opt_batch <= max_batch:
        raise BadInputError(f"--opt-batch {opt_batch} must lie between --min-batch {min_batch} and --max-batch {max_batch}")
    if workspace_mb < 1:
        raise BadInputError(f"--workspace-mb must be at least 1 (MiB), got {workspace_mb}")
    if dla_core is not None and dla_core < 0:
        raise BadInputError(f"--dla-core must be 0 or more, got {dla_core}")


def _tensorrt_version(trt) -> tuple[str, int]:
    version = str(trt.__version__)
    try:
        major = int(version.split(".")[0])
    except ValueError:
        raise BackendUnavailableError(f"cannot read the TensorRT version {version!r}") from None
    if major < 10:  # strongly typed networks and int64 inputs need 10.x; JetPack 6 has 10.3
        raise BackendUnavailableError(f"gvtool builds engines with TensorRT 10 or newer; this is TensorRT {version}. "
                                      f"Upgrade: {TENSORRT_HINT}")
    return version, major


def _network_flags(trt, major: int) -> int:
    """create_network flags for a strongly typed network, for the running TensorRT."""
    if major >= 11:
        # TensorRT 11: strong typing is always on; STRONGLY_TYPED is deprecated, "retained for API
        # compatibility but ignored", and EXPLICIT_BATCH is gone. Passing nothing is right for both.
        return 0
    # TensorRT 10: strong typing is opt-in through this flag. EXPLICIT_BATCH is deprecated and
    # ignored since 10.0 (networks are always explicit batch), so it is not passed.
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if flag is None:
        raise BackendUnavailableError(f"TensorRT {trt.__version__} has no strongly typed networks; {TENSORRT_HINT}")
    return 1 << int(flag)


def _parse(trt, builder, logger, entry: GraphEntry, path: Path, trt_major: int):
    """A network definition holding the ONNX graph, or ExportValidationError with every parser error."""
    network = builder.create_network(_network_flags(trt, trt_major))
    parser = trt.OnnxParser(network, logger)
    # path: lets the parser find weights stored beside the model (ONNX external data)
    if parser.parse(path.read_bytes(), path=str(path)):
        return network
    lines = []
    for i in range(parser.num_errors):
        error = parser.get_error(i)
        node = error.node()  # -1 when the error is not about one node
        where = f"node {node} {error.node_name()!r} ({error.node_operator()})" if node >= 0 else "graph"
        lines.append(f"  [{i}] {where}: {error.desc()} ({error.code()})")
    raise ExportValidationError(f"TensorRT cannot parse {entry.file} ({entry.key}): {parser.num_errors} error(s)\n"
                                + ("\n".join(lines) or "  (the parser gave no details; see the TensorRT log above)"))


def _builder_config(trt, builder, entry: GraphEntry, batch: dict, workspace_mb: int, dla_core: int | None,
                    cache: bytes, log: Callable[[str], None]):
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)  # bytes
    profile = builder.create_optimization_profile()
    dynamic = False
    for spec in entry.inputs:
        if not spec.shape or spec.shape[0] != BATCH_AXIS:
            continue  # a fully static input needs no profile entry
        rest = tuple(spec.shape[1:])
        if not all(isinstance(dim, int) for dim in rest):
            raise BadBundleError(f"{entry.key} input {spec.name} has shape {list(spec.shape)}; "
                                 "only the first (batch) axis may be dynamic")
        profile.set_shape(spec.name, (batch["min"], *rest), (batch["opt"], *rest), (batch["max"], *rest))
        dynamic = True
    if dynamic:
        config.add_optimization_profile(profile)
    _attach_timing_cache(config, cache, log)
    if dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = dla_core
        # DLA runs a subset of layers; without GPU fallback any other layer fails the build.
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    return config


def _attach_timing_cache(config, cache: bytes, log: Callable[[str], None]) -> None:
    """Give the build the saved tactic timings (an empty cache when there are none)."""
    timing = config.create_timing_cache(cache)
    # ignore_mismatch=False: timings from another GPU or TensorRT version are refused rather than
    # mixed in (NVIDIA warns that can pick bad tactics); start an empty cache instead.
    if timing is None or not config.set_timing_cache(timing, ignore_mismatch=False):
        log("the saved timing cache comes from another GPU or TensorRT version; starting a new one")
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)


def _check_dla(builder, dla_core: int | None, max_batch: int, log: Callable[[str], None]) -> None:
    if dla_core is None:
        return
    cores = builder.num_DLA_cores
    if dla_core >= cores:
        there = (f"DLA cores 0 to {cores - 1}" if cores else
                 "no DLA cores (Jetson AGX Orin and Orin NX have them; desktop GPUs and the Orin Nano do not)")
        raise BadInputError(f"--dla-core {dla_core} does not exist: this device has {there}")
    if max_batch > builder.max_DLA_batch_size:
        log(f"note: DLA takes batches up to {builder.max_DLA_batch_size}; larger ones run on the GPU (GPU fallback)")
