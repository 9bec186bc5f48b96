"""Run a bundle's TensorRT engine: deserialize once, allocate once, then copy in, execute, copy out.

The buffer handling follows TensorRT's python samples (samples/python/common_runtime.py): for every
I/O tensor one pinned host buffer (cudaMallocHost) and one device buffer (cudaMalloc), sized for the
profile's largest batch and made in __init__, where set_tensor_address is called once; run() only
copies the n items it got. The calls used here (Runtime.deserialize_cuda_engine, the name-based
tensor API, execute_async_v3) are the same in TensorRT 10.x (JetPack 6 ships 10.3) and 11.x.

Every run records four CUDA events on the runner's stream (before the host-to-device copies, after
them, after the engine, after the device-to-host copies) and keeps the GPU time between them in
`last_timings`. With cuda_graphs=True, the engine's work at each batch size is captured once into a
CUDA graph and later runs at that size launch the graph. TensorRT's rules for that: call
execute_async_v3 once, uncaptured, after an input-shape change before capturing, and keep shapes
and tensor addresses fixed between capture and launch (ours are set once in __init__), hence one
graph per batch size. To be safe, a kept graph is also replayed only after such an uncaptured run
at its shape: coming back to a batch size costs one plain run. cudaGraphInstantiateWithFlags(graph,
flags) is used because cudaGraphInstantiate's arguments differ between the CUDA 11 and 12 bindings.

An engine runs only on the GPU model and TensorRT version that built it, so the manifest records
both and this module refuses any other, saying how to rebuild. `tensorrt` and the CUDA runtime
bindings are imported lazily (tests inject fakes), so importing this module needs neither, nor torch.
"""

from __future__ import annotations

import ctypes
import math
from dataclasses import dataclass

import numpy as np

from gvtool.errors import BackendUnavailableError, BadBundleError
from gvtool.manifest import BATCH_AXIS as BATCH
from gvtool.manifest import EngineEntry, GraphEntry, Manifest, TensorSpec, read_verified
from gvtool.runtime.gpu import cuda_check, gpu_properties, import_cudart, import_tensorrt, use_device

SEGMENTS = ("copy_in", "compute", "copy_out")  # what lies between the 4 events a run records, in order


def engine_for(manifest: Manifest, graph_key: str, gpu_name: str, capability: str, trt_version: str,
               dla_core: int | None = None) -> EngineEntry | None:
    """The engine built from `graph_key` for exactly this GPU model, compute capability, TensorRT
    version and DLA core (None: the GPU itself), or None."""
    for entry in manifest.engines.values():
        if (entry.graph_key, entry.gpu_name, entry.compute_capability, entry.tensorrt_version, entry.dla_core) == \
                (graph_key, gpu_name, capability, trt_version, dla_core):
            return entry
    return None


def engine_mismatch(manifest: Manifest, graph_key: str, gpu_name: str, capability: str, trt_version: str,
                    dla_core: int | None = None) -> str:
    """Why no engine of the bundle fits this machine, with how to rebuild; "" when one fits."""
    if engine_for(manifest, graph_key, gpu_name, capability, trt_version, dla_core) is not None:
        return ""
    rebuild = _rebuild(dla_core)
    built = [e for e in manifest.engines.values() if e.graph_key == graph_key]
    if not built:
        return f"no engine built from {graph_key}: build one here with {rebuild}"
    targets = dict.fromkeys(_target(e.gpu_name, e.compute_capability, e.tensorrt_version, e.dla_core) for e in built)
    here = _target(gpu_name, capability, trt_version, dla_core)
    return f"{graph_key} engines were built for {' and '.join(targets)}; this is {here}: rebuild them here with {rebuild}"


def _target(gpu_name: str, capability: str, trt_version: str, dla_core: int | None) -> str:
    dla = "" if dla_core is None else f", DLA core {dla_core}"
    return f"{gpu_name} (sm {capability}{dla}) with TensorRT {trt_version}"


def _rebuild(dla_core: int | None) -> str:
    """The command that builds the engine on this machine."""
    return "`gvtool export BUNDLE --trt" + ("`" if dla_core is None else f" --dla-core {dla_core}`")


def tensorrt_environment(device_index: int = 0, trt=None, cudart=None) -> tuple[object, object, str, str, str]:
    """(trt, cudart, GPU name, compute capability "M.m", TensorRT version) of this machine's device.

    `trt` and `cudart` replace the `tensorrt` and CUDA runtime modules; missing ones raise
    BackendUnavailableError with what to install."""
    trt = trt if trt is not None else import_tensorrt()
    cudart = cudart if cudart is not None else import_cudart()
    gpu_name, capability, _driver = gpu_properties(cudart, device_index)
    return trt, cudart, gpu_name, capability, str(trt.__version__)


@dataclass
class _Buffer:
    """One I/O tensor's memory: the device buffer TensorRT reads or writes, and its pinned host twin."""

    name: str
    dtype: np.dtype
    item_shape: tuple[int, ...]     # the shape after the batch axis
    item_bytes: int
    device: int                     # device pointer from cudaMalloc, given once to set_tensor_address
    host_ptr: int                   # pinned host pointer from cudaMallocHost
    host: np.ndarray                # (max_batch, *item_shape) view of the pinned memory


class TensorRTRunner:
    """Runs one engine of a bundle on one GPU; implements gvtool.runtime.runner.GraphRunner.

    Not thread-safe: one run() at a time (the buffers are shared between calls). close() frees the
    GPU and pinned memory; use it, or a with-block.

    After each run, `last_timings` holds {"copy_in", "compute", "copy_out"}: seconds of GPU time from
    CUDA events (None before the first run and after a failed one). cuda_graphs=True replays the
    engine at each batch size from a CUDA graph; a batch size whose capture failed runs
    execute_async_v3 as usual, and `graph_fallbacks[batch]` says why.
    """

    backend = "tensorrt"

    def __init__(self, bundle, engine: EngineEntry, graph: GraphEntry, *, device_index: int = 0,
                 cuda_graphs: bool = False, trt=None, cudart=None):
        if engine.graph_key != graph.key:
            raise BadBundleError(f"{engine.file} was built from {engine.graph_key}, not {graph.key}")
        trt, cudart, gpu_name, capability, trt_version = tensorrt_environment(device_index, trt, cudart)
        if (engine.gpu_name, engine.compute_capability, engine.tensorrt_version) != (gpu_name, capability, trt_version):
            built = _target(engine.gpu_name, engine.compute_capability, engine.tensorrt_version, engine.dla_core)
            here = _target(gpu_name, capability, trt_version, engine.dla_core)
            raise BadBundleError(f"{engine.file} was built for {built}; this is {here}: "
                                 f"rebuild it here with {_rebuild(engine.dla_core)}")
        plan = read_verified(bundle, engine.file, engine.sha256)  # TensorRT gets the very bytes that were checked
        self.entry, self.graph = engine, graph
        self.min_batch, self.max_batch = int(engine.profile["min"]), int(engine.profile["max"])
        self._trt, self._cudart = trt, cudart
        self._runtime = self._engine = self._context = self._stream = None
        self._device_ptrs: list[int] = []   # every allocation, recorded the moment it exists, so that
        self._host_ptrs: list[int] = []     # a failure half-way through __init__ frees what was made
        self._inputs: list[_Buffer] = []
        self._outputs: list[_Buffer] = []
        self._events: list = []             # the 4 CUDA events of SEGMENTS' boundaries, made once
        self._graphs: dict[int, tuple] = {}  # batch -> (cudaGraph_t, cudaGraphExec_t)
        self._flushed_batch: int | None = None  # the batch of the last uncaptured execute_async_v3
        self.cuda_graphs = bool(cuda_graphs)
        self.graph_fallbacks: dict[int, str] = {}
        self.last_timings: dict[str, float] | None = None
        self._closed = False
        try:
            self._load(plan, device_index)
        except Exception:
            self._release()  # the error being raised says what went wrong; a failed free would only hide it
            raise

    def _load(self, serialized: bytes, device_index: int) -> None:
        trt, cudart = self._trt, self._cudart
        use_device(cudart, device_index)  # allocations, the stream and the engine live on this device
        self._logger = trt.Logger(trt.Logger.WARNING)  # must outlive the runtime; TensorRT logs to stderr
        self._runtime = trt.Runtime(self._logger)
        if self.entry.dla_core is not None:
            self._runtime.DLA_core = self.entry.dla_core
        self._engine = self._runtime.deserialize_cuda_engine(serialized)
        if self._engine is None:
            raise BadBundleError(f"TensorRT could not load {self.entry.file} (the TensorRT log above says why); "
                                 f"rebuild it here with {_rebuild(self.entry.dla_core)}")
        self._check_io()
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise BackendUnavailableError(f"TensorRT could not create an execution context for {self.entry.file} "
                                          "(out of GPU memory? the TensorRT log above says why)")
        (self._stream,) = cuda_check(cudart, cudart.cudaStreamCreate(), "cudaStreamCreate")
        for _ in range(len(SEGMENTS) + 1):
            (event,) = cuda_check(cudart, cudart.cudaEventCreate(), "cudaEventCreate")
            self._events.append(event)
        self._inputs = [self._allocate(spec) for spec in self.graph.inputs]
        self._outputs = [self._allocate(spec) for spec in self.graph.outputs]  # manifest order = run()'s order

    def _check_io(self) -> None:
        """The engine's I/O tensors must be the manifest's: names, modes, dtypes, shapes and batch profile."""
        trt, engine, file = self._trt, self._engine, self.entry.file
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        got_in = sorted(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        got_out = sorted(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
        want_in, want_out = sorted(t.name for t in self.graph.inputs), sorted(t.name for t in self.graph.outputs)
        if (got_in, got_out) != (want_in, want_out):
            raise BadBundleError(f"{file} does not fit {self.graph.key}: the engine has inputs {got_in} and outputs "
                                 f"{got_out}, the manifest lists inputs {want_in} and outputs {want_out}; "
                                 f"rebuild it with {_rebuild(self.entry.dla_core)}")
        for spec in (*self.graph.inputs, *self.graph.outputs):
            rest = _item_shape(spec, self.graph.key)
            trt_dtype = engine.get_tensor_dtype(spec.name)
            try:
                dtype = np.dtype(trt.nptype(trt_dtype))
            except TypeError:  # a TensorRT type numpy lacks (bf16, fp8, int4)
                dtype = getattr(trt_dtype, "name", trt_dtype)
            shape = tuple(engine.get_tensor_shape(spec.name))
            if not (isinstance(dtype, np.dtype) and dtype == np.dtype(spec.dtype)) or shape != (-1, *rest):
                raise BadBundleError(f"{file} does not fit {self.graph.key}: tensor {spec.name} is {dtype} {list(shape)} "
                                     f"in the engine, {spec.dtype} {[-1, *rest]} in the manifest")
        for spec in self.graph.inputs:
            low, _opt, high = engine.get_tensor_profile_shape(spec.name, 0)  # (min, opt, max) shapes of profile 0
            if (low[0], high[0]) != (self.min_batch, self.max_batch):
                raise BadBundleError(f"{file} takes batches {low[0]} to {high[0]} for {spec.name}, but the manifest says "
                                     f"{self.min_batch} to {self.max_batch}; rebuild it with {_rebuild(self.entry.dla_core)}")

    def _allocate(self, spec: TensorSpec) -> _Buffer:
        """Device and pinned host memory for `max_batch` items of one tensor, and its address given to TensorRT."""
        cudart, what = self._cudart, f"{self.graph.key} {spec.name}"
        dtype, item_shape = np.dtype(spec.dtype), _item_shape(spec, self.graph.key)
        item_bytes = dtype.itemsize * math.prod(item_shape)
        nbytes = self.max_batch * item_bytes
        (device,) = cuda_check(cudart, cudart.cudaMalloc(nbytes), "cudaMalloc", f"allocating {nbytes} bytes for {what}")
        self._device_ptrs.append(device)
        (host_ptr,) = cuda_check(cudart, cudart.cudaMallocHost(nbytes), "cudaMallocHost",
                                 f"allocating {nbytes} pinned bytes for {what}")
        self._host_ptrs.append(host_ptr)
        # A numpy view of the pinned memory: feeds are copied in and results out without another allocation.
        pinned = (ctypes.c_byte * nbytes).from_address(host_ptr)
        host = np.frombuffer(pinned, dtype=dtype).reshape(self.max_batch, *item_shape)
        if not self._context.set_tensor_address(spec.name, device):  # once: the addresses never change
            raise BackendUnavailableError(f"TensorRT refused the device address of {what} in {self.entry.file}")
        return _Buffer(spec.name, dtype, item_shape, item_bytes, device, host_ptr, host)

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """The outputs for `feeds` (the graph's inputs by name, batch first, min_batch to max_batch items),
        in the manifest's output order, as arrays the caller may keep."""
        if self._closed:
            raise BackendUnavailableError(f"the TensorRT runner for {self.entry.file} was closed")
        arrays, n = self._check_feeds(feeds)
        cudart, stream = self._cudart, self._stream
        to_device, to_host = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self.last_timings = None  # until this run's events are read: a failed run leaves no stale numbers
        # A kept graph replays only while the context's shapes are still the ones it was captured with.
        graph = self._graphs.get(n) if self._flushed_batch == n else None
        for buffer in self._inputs:
            np.copyto(buffer.host[:n], arrays[buffer.name], casting="same_kind")
        if graph is None:
            self._set_input_shapes(n)
        # Host-side staging is done before the first event, so that the events time GPU work only.
        copy_start, copied_in, computed, copied_out = self._events
        self._record(copy_start)
        for buffer in self._inputs:
            copied = cudart.cudaMemcpyAsync(buffer.device, buffer.host_ptr, n * buffer.item_bytes, to_device, stream)
            cuda_check(cudart, copied, "cudaMemcpyAsync", f"copying {buffer.name} to the GPU")
        self._record(copied_in)
        if graph is None:
            self._execute()
        else:
            cuda_check(cudart, cudart.cudaGraphLaunch(graph[1], stream), "cudaGraphLaunch",
                       f"replaying {self.entry.file} at batch {n}")
        self._record(computed)
        for buffer in self._outputs:
            copied = cudart.cudaMemcpyAsync(buffer.host_ptr, buffer.device, n * buffer.item_bytes, to_host, stream)
            cuda_check(cudart, copied, "cudaMemcpyAsync", f"copying {buffer.name} from the GPU")
        self._record(copied_out)
        cuda_check(cudart, cudart.cudaStreamSynchronize(stream), "cudaStreamSynchronize", f"running {self.entry.file}")
        self.last_timings = self._elapsed()
        outputs = [buffer.host[:n].copy() for buffer in self._outputs]  # copies: the next run reuses the buffers
        if graph is None:
            self._flushed_batch = n
            if self.cuda_graphs and n not in self._graphs and n not in self.graph_fallbacks:
                self._capture(n)  # after the uncaptured run TensorRT needs after a shape change
        return outputs

    def _set_input_shapes(self, n: int) -> None:
        self._flushed_batch = None  # changed shapes: the next execute_async_v3 must not be a graph's
        for buffer in self._inputs:
            if not self._context.set_input_shape(buffer.name, (n, *buffer.item_shape)):
                raise BackendUnavailableError(f"TensorRT refused input shape {[n, *buffer.item_shape]} for {buffer.name} "
                                              f"of {self.entry.file} (the TensorRT log above says why)")

    def _execute(self) -> None:
        # TensorRT takes the stream as an integer handle; int() of a cuda-python cudaStream_t is that handle.
        if not self._context.execute_async_v3(int(self._stream)):
            raise BackendUnavailableError(f"TensorRT could not run {self.entry.file}: execute_async_v3 returned False "
                                          "(the TensorRT log above says why)")

    def _record(self, event) -> None:
        cuda_check(self._cudart, self._cudart.cudaEventRecord(event, self._stream), "cudaEventRecord")

    def _elapsed(self) -> dict[str, float]:
        """Seconds between consecutive events of the run just synchronized, by SEGMENTS."""
        cudart, times = self._cudart, {}
        for name, start, end in zip(SEGMENTS, self._events, self._events[1:]):
            (ms,) = cuda_check(cudart, cudart.cudaEventElapsedTime(start, end), "cudaEventElapsedTime", f"timing {name}")
            times[name] = float(ms) / 1e3
        return times

    def _capture(self, n: int) -> None:
        """Capture execute_async_v3 at batch `n` into a CUDA graph for later runs, or record in
        graph_fallbacks why it could not be, leaving batch `n` to plain execute_async_v3."""
        cudart, stream, graph = self._cudart, self._stream, None
        mode = cudart.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal  # the mode of TensorRT's own example
        try:
            cuda_check(cudart, cudart.cudaStreamBeginCapture(stream, mode), "cudaStreamBeginCapture")
            try:
                enqueued = self._context.execute_async_v3(int(stream))
            finally:  # always end the capture: a stream left capturing refuses all later work
                ended = cudart.cudaStreamEndCapture(stream)
            (graph,) = cuda_check(cudart, ended, "cudaStreamEndCapture", "the capture was invalidated")
            if not enqueued:
                raise BackendUnavailableError("execute_async_v3 returned False while capturing "
                                              "(the TensorRT log above says why)")
            (instance,) = cuda_check(cudart, cudart.cudaGraphInstantiateWithFlags(graph, 0),
                                     "cudaGraphInstantiateWithFlags")
        except BackendUnavailableError as error:
            if graph is not None:
                cudart.cudaGraphDestroy(graph)  # a failure here changes nothing: the reason below stands
            self.graph_fallbacks[n] = f"no CUDA graph at batch {n} ({error}); it runs execute_async_v3"
            return
        self._graphs[n] = (graph, instance)

    def _check_feeds(self, feeds: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], int]:
        """The feeds as arrays and their common batch size, or ValueError saying what was expected."""
        want = [b.name for b in self._inputs]
        if sorted(feeds) != sorted(want):
            raise ValueError(f"{self.graph.key} takes inputs {want}, got {sorted(feeds)}")
        arrays, batches = {}, {}
        for buffer in self._inputs:
            array = np.asarray(feeds[buffer.name])
            if array.ndim != 1 + len(buffer.item_shape) or array.shape[1:] != buffer.item_shape:
                raise ValueError(f"{self.graph.key} input {buffer.name} takes shape {['n', *buffer.item_shape]}, "
                                 f"got {list(array.shape)}")
            if not np.can_cast(array.dtype, buffer.dtype, casting="same_kind"):
                raise ValueError(f"{self.graph.key} input {buffer.name} takes {buffer.dtype}, got {array.dtype}")
            arrays[buffer.name], batches[buffer.name] = array, array.shape[0]
        if len(set(batches.values())) != 1:
            raise ValueError(f"{self.graph.key} inputs disagree on the batch size: {batches}")
        n = next(iter(batches.values()))
        if not self.min_batch <= n <= self.max_batch:
            raise ValueError(f"{self.entry.file} takes batches of {self.min_batch} to {self.max_batch} items, got {n}; "
                             "split larger batches")
        return arrays, n

    def close(self) -> None:
        """Free the device and pinned buffers, the CUDA graphs and events, the stream and the engine.
        Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        failures = self._release()
        if failures:
            raise BackendUnavailableError(f"freeing the TensorRT buffers of {self.entry.file} failed: "
                                          + "; ".join(failures))

    def _release(self) -> list[str]:
        """Free everything allocated so far, each once; the calls that failed."""
        cudart, failures = self._cudart, []

        def attempt(name: str, call, handle) -> None:
            try:
                cuda_check(cudart, call(handle), name)
            except BackendUnavailableError as error:
                failures.append(str(error))

        stream, self._stream = self._stream, None
        if stream is not None:  # let work a failed run left queued finish before its context and buffers go
            attempt("cudaStreamSynchronize", cudart.cudaStreamSynchronize, stream)
        graphs, self._graphs = self._graphs, {}
        for graph, instance in graphs.values():  # graphs hold the context's memory and our buffers' addresses
            attempt("cudaGraphExecDestroy", cudart.cudaGraphExecDestroy, instance)
            attempt("cudaGraphDestroy", cudart.cudaGraphDestroy, graph)
        events, self._events = self._events, []
        for event in events:
            attempt("cudaEventDestroy", cudart.cudaEventDestroy, event)
        self._inputs, self._outputs = [], []  # drop the numpy views before the pinned memory goes
        self._context = self._engine = self._runtime = None  # TensorRT objects go context first, runtime last
        if stream is not None:
            attempt("cudaStreamDestroy", cudart.cudaStreamDestroy, stream)
        device, self._device_ptrs = self._device_ptrs, []
        host, self._host_ptrs = self._host_ptrs, []
        for pointer in device:
            attempt("cudaFree", cudart.cudaFree, pointer)
        for pointer in host:
            attempt("cudaFreeHost", cudart.cudaFreeHost, pointer)
        return failures

    def __enter__(self) -> "TensorRTRunner":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _item_shape(spec: TensorSpec, graph_key: str) -> tuple[int, ...]:
    """The fixed shape after the batch axis; the runner handles batch-first tensors only."""
    if not spec.shape or spec.shape[0] != BATCH or not all(isinstance(d, int) and d > 0 for d in spec.shape[1:]):
        raise BadBundleError(f"{graph_key} tensor {spec.name} has shape {list(spec.shape)}; "
                             "the TensorRT runner takes a dynamic batch axis first and fixed sizes after it")
    return tuple(spec.shape[1:])

