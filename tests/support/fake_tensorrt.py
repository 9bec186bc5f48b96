"""Fake `tensorrt` and CUDA runtime modules that record every call the engine builder and runner make.

TensorRT cannot be installed on the project's machines, so the builder's and the runner's logic is
tested against these. They mimic the documented Python API surface gvtool uses (TensorRT 10.x and
11.x, cuda-python's runtime bindings) and nothing more; what they do NOT model is listed in the
docstrings of tests/export/test_trt_build.py and tests/runtime/test_trt_runner.py.

    trt = make_fake_trt(version="10.3.0")
    trt.builders[0].networks[0].flags           # what create_network got
    trt.builders[0].configs[0].profiles[0]      # {input name: (min, opt, max)}

The runner's side: "device" memory is bytes held by the fake cudart, pinned host memory is real
(ctypes) memory, and copies and engine executions are queued on a stream and only happen at
cudaStreamSynchronize, as on a GPU, so a runner that reads results before synchronizing sees stale ones.
Each queued operation advances a fake GPU clock by a fixed time (make_fake_cudart's gpu_ms) when it
runs, and CUDA events stamp that clock, so event timings are exact and show which work lies between
two events. Stream capture collects a stream's operations into a graph instead of queueing them; a
launched graph replays them, the engine's computation included. TensorRT's rule that the first
execute_async_v3 after a shape change must not be captured is enforced: such a capture is invalidated.

    cudart = make_fake_cudart()
    trt = make_fake_trt(cudart=cudart, compute=lambda inputs: {"images": ...})
    engine = fake_engine_bytes(graph.inputs, graph.outputs, profile=(1, 4, 8))   # what Runtime deserializes
    cudart.calls                                # [("cudaMalloc", 4096), ("cudaMemcpyAsync", dst, src, n, kind, stream), ...]
    cudart = make_fake_cudart(gpu_ms={"compute": 3.0}, capture_error="cudaErrorStreamCaptureInvalidated")
"""

from __future__ import annotations

import ctypes
import enum
import hashlib
import json
import types

import numpy as np

FAKE_ENGINE = "FAKE-ENGINE-IO"     # what fake_engine_bytes writes first: the fake Runtime only deserializes these
DEVICE_BASE = 0xD000_0000_0000     # fake device pointers: never a valid host address, so never dereferenced by mistake
# numpy dtype name -> TensorRT DataType member; trt.nptype maps back (and raises TypeError for BF16, FP8, INT4)
DATA_TYPES = {"float32": "FLOAT", "float16": "HALF", "int8": "INT8", "int32": "INT32", "bool": "BOOL",
              "uint8": "UINT8", "int64": "INT64", "bfloat16": "BF16", "float8": "FP8", "int4": "INT4"}


def make_fake_trt(version: str = "10.3.0", parse_ok: bool = True, errors=(), build_ok: bool = True,
                  fail_build_number: int | None = None, num_dla_cores: int = 0, max_dla_batch_size: int = 32,
                  strongly_typed_flag: bool = True, cudart=None, compute=None, execute_ok: bool = True,
                  context_ok: bool = True):
    """A module-like fake of `tensorrt` `version`.

    Runtime side: Runtime.deserialize_cuda_engine takes fake_engine_bytes(...) of the same version
    (anything else gives None, as an incompatible engine does). Executions run on `cudart` (a
    make_fake_cudart module, whose device memory holds the tensors) and compute the outputs with
    `compute(inputs: {name: array}) -> {name: array}`. execute_ok=False makes execute_async_v3
    return False; context_ok=False makes create_execution_context return None.

    errors: (node index, node name, operator, description) per parser error, reported when parse_ok
    is False. build_ok=False makes every build_serialized_network return None; fail_build_number=N
    only the N-th (1-based). strongly_typed_flag=False drops NetworkDefinitionCreationFlag.STRONGLY_TYPED
    (a TensorRT 11 release that removed the deprecated member).
    """
    major = int(version.split(".")[0])
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.builders = []        # every Builder made, in order
    trt.parsed = []          # (model bytes, path) per OnnxParser.parse call
    trt.build_calls = 0
    cache_header = f"FAKE-TIMING-CACHE trt{version}\n".encode()

    # Enums: TensorRT 10 has EXPLICIT_BATCH (ignored) and STRONGLY_TYPED; 11 dropped EXPLICIT_BATCH
    # and keeps STRONGLY_TYPED only as a deprecated, ignored member.
    creation = {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1} if major < 11 else {"STRONGLY_TYPED": 0, "PREFER_AOT_PYTHON_PLUGINS": 1}
    if not strongly_typed_flag:
        creation.pop("STRONGLY_TYPED")
    trt.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", creation)
    flags = ["DEBUG", "GPU_FALLBACK", "REFIT", "DISABLE_TIMING_CACHE", "TF32", "SPARSE_WEIGHTS"]
    if major < 11:  # TensorRT 11 removed the weak-typing precision flags
        flags = ["FP16", "INT8", "BF16", "OBEY_PRECISION_CONSTRAINTS", *flags]
    trt.BuilderFlag = enum.IntEnum("BuilderFlag", flags)
    trt.MemoryPoolType = enum.IntEnum("MemoryPoolType", ["WORKSPACE", "DLA_MANAGED_SRAM", "DLA_LOCAL_DRAM", "DLA_GLOBAL_DRAM"])
    trt.DeviceType = enum.IntEnum("DeviceType", ["GPU", "DLA"])
    trt.ErrorCode = enum.IntEnum("ErrorCode", ["SUCCESS", "INTERNAL_ERROR", "INVALID_NODE", "UNSUPPORTED_NODE"])

    class Logger:
        VERBOSE, INFO, WARNING, ERROR, INTERNAL_ERROR = "VERBOSE", "INFO", "WARNING", "ERROR", "INTERNAL_ERROR"

        def __init__(self, min_severity="WARNING"):
            self.min_severity = min_severity

    class Network:
        def __init__(self, flags):
            self.flags = flags
            self.model = None          # the bytes the parser put in

    class ParserError:
        def __init__(self, node, name, operator, desc):
            self._node, self._name, self._operator, self._desc = node, name, operator, desc

        def code(self):
            return trt.ErrorCode.UNSUPPORTED_NODE

        def desc(self):
            return self._desc

        def node(self):
            return self._node

        def node_name(self):
            return self._name

        def node_operator(self):
            return self._operator

    class OnnxParser:
        def __init__(self, network, logger):
            self.network = network
            self._errors = []

        def parse(self, model, path=None):
            trt.parsed.append((bytes(model), path))
            if not parse_ok:
                self._errors = [ParserError(*e) for e in errors]
                return False
            self.network.model = bytes(model)
            return True

        @property
        def num_errors(self):
            return len(self._errors)

        def get_error(self, index):
            return self._errors[index]

    class OptimizationProfile:
        def __init__(self):
            self.shapes = {}           # input name -> (min, opt, max)

        def set_shape(self, input, min, opt, max):
            self.shapes[input] = (tuple(min), tuple(opt), tuple(max))

    class TimingCache:
        def __init__(self, serialized: bytes):
            self.accepted = serialized.startswith(cache_header) or serialized == b""
            self.entries = serialized[len(cache_header):].decode().split() if self.accepted and serialized else []

        def serialize(self):
            return cache_header + "\n".join(self.entries).encode()

    class BuilderConfig:
        def __init__(self):
            self.pool_limits = {}
            self.flags_set = []
            self.profiles = []         # the shapes dict of each added profile
            self.created_caches = []   # the bytes given to each create_timing_cache call
            self.timing_cache = None
            self.ignore_mismatch = None
            self.default_device_type = trt.DeviceType.GPU
            self.DLA_core = -1

        def set_memory_pool_limit(self, pool, pool_size):
            self.pool_limits[pool] = pool_size

        def set_flag(self, flag):
            self.flags_set.append(flag)

        def add_optimization_profile(self, profile):
            self.profiles.append(dict(profile.shapes))
            return len(self.profiles) - 1

        def create_timing_cache(self, serialized_timing_cache):
            self.created_caches.append(bytes(serialized_timing_cache))
            return TimingCache(bytes(serialized_timing_cache))

        def set_timing_cache(self, cache, ignore_mismatch):
            self.ignore_mismatch = ignore_mismatch
            if not (cache.accepted or ignore_mismatch):   # another GPU or TensorRT version made it
                return False
            self.timing_cache = cache
            return True

        def get_timing_cache(self):
            return self.timing_cache

    class Builder:
        def __init__(self, logger):
            self.logger = logger
            self.num_DLA_cores = num_dla_cores
            self.max_DLA_batch_size = max_dla_batch_size
            self.networks, self.configs = [], []
            trt.builders.append(self)

        def create_network(self, flags=0):
            self.networks.append(Network(flags))
            return self.networks[-1]

        def create_builder_config(self):
            self.configs.append(BuilderConfig())
            return self.configs[-1]

        def create_optimization_profile(self):
            return OptimizationProfile()

        def build_serialized_network(self, network, config):
            trt.build_calls += 1
            if not build_ok or trt.build_calls == fail_build_number:
                return None
            model_hash = hashlib.sha256(network.model).hexdigest()[:16]
            if config.timing_cache is not None:
                config.timing_cache.entries.append(model_hash)
            # Deterministic bytes that still differ per graph, flags and profile.
            return f"FAKE-ENGINE trt{version} {model_hash} flags={network.flags} profiles={config.profiles}".encode()

    trt.Logger, trt.Builder, trt.OnnxParser = Logger, Builder, OnnxParser

    # ---- runtime: Runtime, ICudaEngine, IExecutionContext (name-based tensor API of TensorRT 10/11)
    trt.TensorIOMode = enum.IntEnum("TensorIOMode", ["NONE", "INPUT", "OUTPUT"], start=0)
    trt.DataType = enum.IntEnum("DataType", ["FLOAT", "HALF", "INT8", "INT32", "BOOL", "UINT8", "FP8", "BF16",
                                             "INT64", "INT4"], start=0)
    trt.runtimes = []        # every Runtime made
    trt.engines = []         # every engine deserialized
    trt.contexts = []        # every execution context created

    def nptype(dtype):
        numpy_name = {v: k for k, v in DATA_TYPES.items()}[trt.DataType(dtype).name]
        if numpy_name in ("bfloat16", "float8", "int4"):
            raise TypeError("Could not resolve TensorRT datatype to an equivalent numpy datatype.")
        return np.dtype(numpy_name).type

    class Tensor:
        def __init__(self, d):
            self.name, self.mode = d["name"], trt.TensorIOMode[d["mode"]]
            self.dtype = trt.DataType[DATA_TYPES[d["dtype"]]]
            self.np_dtype = np.dtype(d["dtype"]) if d["dtype"] not in ("bfloat16", "float8", "int4") else None
            self.shape = tuple(d["shape"])    # -1 for the dynamic batch axis

    class ICudaEngine:
        def __init__(self, spec):
            self.tensors = {t["name"]: Tensor(t) for t in spec["tensors"]}
            self.order = [t["name"] for t in spec["tensors"]]
            self.profile = tuple(spec["profile"])      # batch (min, opt, max)
            self.num_optimization_profiles = 1

        @property
        def num_io_tensors(self):
            return len(self.order)

        def get_tensor_name(self, index):
            return self.order[index]

        def get_tensor_mode(self, name):
            return self.tensors[name].mode if name in self.tensors else trt.TensorIOMode.NONE

        def get_tensor_dtype(self, name):
            return self.tensors[name].dtype

        def get_tensor_shape(self, name):
            return self.tensors[name].shape

        def get_tensor_profile_shape(self, name, profile_index):
            tensor = self.tensors[name]
            if profile_index != 0 or tensor.mode != trt.TensorIOMode.INPUT:
                raise RuntimeError(f"no profile shape for {name} in profile {profile_index}")
            return [(batch, *tensor.shape[1:]) for batch in self.profile]

        def create_execution_context(self):
            if not context_ok:
                return None
            trt.contexts.append(IExecutionContext(self))
            return trt.contexts[-1]

    class IExecutionContext:
        def __init__(self, engine):
            self.engine = engine
            # ("set_input_shape", name, shape), ("set_tensor_address", name, ptr), ("execute_async_v3", handle)
            self.calls = []
            self.input_shapes = {}
            self.addresses = {}
            self.flushed_shapes = None   # the input shapes of the last uncaptured execution

        def set_input_shape(self, name, shape):
            self.calls.append(("set_input_shape", name, tuple(shape)))
            tensor = self.engine.tensors.get(name)
            low, _, high = self.engine.profile
            if (tensor is None or tensor.mode != trt.TensorIOMode.INPUT or len(shape) != len(tensor.shape)
                    or tuple(shape[1:]) != tensor.shape[1:] or not low <= shape[0] <= high):
                return False
            self.input_shapes[name] = tuple(int(d) for d in shape)
            return True

        def set_tensor_address(self, name, memory):
            self.calls.append(("set_tensor_address", name, memory))
            if name not in self.engine.tensors or not isinstance(memory, int):
                return False
            self.addresses[name] = memory
            return True

        def get_tensor_shape(self, name):
            tensor = self.engine.tensors[name]
            if tensor.mode == trt.TensorIOMode.INPUT:
                return self.input_shapes.get(name, tensor.shape)
            batches = {shape[0] for shape in self.input_shapes.values()}
            return (batches.pop(), *tensor.shape[1:]) if len(batches) == 1 else tensor.shape

        def execute_async_v3(self, stream_handle):
            self.calls.append(("execute_async_v3", stream_handle))
            if not isinstance(stream_handle, int):   # the binding takes a size_t
                raise TypeError(f"execute_async_v3(): incompatible stream_handle {stream_handle!r}, expected int")
            inputs = [t for t in self.engine.tensors.values() if t.mode == trt.TensorIOMode.INPUT]
            if (not execute_ok or set(self.input_shapes) != {t.name for t in inputs}
                    or set(self.addresses) != set(self.engine.tensors)):
                return False
            # What TensorRT reads at enqueue time: shapes and addresses; memory is read when the stream runs.
            shapes, addresses = dict(self.input_shapes), dict(self.addresses)
            outputs = {n: (self.get_tensor_shape(n), t) for n, t in self.engine.tensors.items()
                       if t.mode == trt.TensorIOMode.OUTPUT}

            def run():
                feeds = {}
                for tensor in inputs:
                    shape = shapes[tensor.name]
                    raw = cudart.read_device(addresses[tensor.name], int(np.prod(shape)) * tensor.np_dtype.itemsize)
                    feeds[tensor.name] = np.frombuffer(raw, dtype=tensor.np_dtype).reshape(shape)
                results = compute(feeds)
                for name, (shape, tensor) in outputs.items():
                    result = np.ascontiguousarray(results[name], dtype=tensor.np_dtype)
                    if result.shape != shape:
                        raise AssertionError(f"fake compute gave {name} shape {result.shape}, the engine says {shape}")
                    cudart.write_device(addresses[name], result.tobytes())

            capturing = stream_handle in cudart.captures
            if capturing and self.flushed_shapes != self.input_shapes:
                # TensorRT's first enqueue after a shape change does work that stream capture forbids.
                cudart.invalidate_capture(stream_handle)
                return False
            enqueued = cudart.enqueue(stream_handle, ("execute_async_v3", run), kind="compute")
            if enqueued and not capturing:
                self.flushed_shapes = dict(self.input_shapes)
            return enqueued

    class Runtime:
        def __init__(self, logger):
            self.logger = logger
            self.DLA_core = -1
            self.deserialized = []       # the bytes of each deserialize_cuda_engine call
            trt.runtimes.append(self)

        def deserialize_cuda_engine(self, serialized_engine):
            data = bytes(serialized_engine)
            self.deserialized.append(data)
            header = f"{FAKE_ENGINE} trt{version}\n".encode()
            if not data.startswith(header):   # another TensorRT version, or not an engine: TensorRT logs and returns None
                return None
            engine = ICudaEngine(json.loads(data[len(header):]))
            trt.engines.append(engine)
            return engine

    trt.nptype, trt.Runtime = nptype, Runtime
    return trt


def fake_engine_bytes(inputs, outputs, version: str = "10.3.0", profile=(1, 8, 64), order=None, dtypes=None) -> bytes:
    """A serialized engine the fake Runtime deserializes: I/O tensors from TensorSpec-like objects
    (name, dtype, shape with "batch" first) and a batch profile (min, opt, max).

    order: the tensor names in the engine's own I/O order (default inputs then outputs);
    dtypes: {name: numpy dtype name} overriding a tensor's dtype in the engine.
    """
    dtypes = dtypes or {}
    tensors = [{"name": t.name, "mode": mode, "dtype": dtypes.get(t.name, t.dtype),
                "shape": [-1 if d == "batch" else d for d in t.shape]}
               for mode, specs in (("INPUT", inputs), ("OUTPUT", outputs)) for t in specs]
    if order is not None:
        tensors = sorted(tensors, key=lambda t: list(order).index(t["name"]))
    return f"{FAKE_ENGINE} trt{version}\n".encode() + json.dumps({"tensors": tensors, "profile": list(profile)}).encode()


GPU_MS = {"copy_in": 0.125, "compute": 1.0, "copy_out": 0.25}  # exact in binary, so sums compare exactly
# The calls that return a value after the status: a failure gives (error, None).
VALUED = ("cudaMalloc", "cudaMallocHost", "cudaStreamCreate", "cudaEventCreate", "cudaEventElapsedTime",
          "cudaStreamEndCapture", "cudaGraphInstantiateWithFlags")


def make_fake_cudart(device_count: int = 1, name: bytes = b"NVIDIA Jetson Orin Nano", major: int = 8, minor: int = 7,
                     driver_version: int = 12060, count_error: str | None = None, failures: dict[str, int] | None = None,
                     gpu_ms: dict[str, float] | None = None, capture_error: str | None = None):
    """A module-like fake of cuda.bindings.runtime: every call returns (cudaError_t, values...).

    count_error: the cudaError_t member name cudaGetDeviceCount fails with (e.g. when no driver is loaded).
    failures: {call name: N}: the N-th (1-based) call of that memory, stream, event or graph function
    fails (cudaMalloc and cudaMallocHost with cudaErrorMemoryAllocation, the others with cudaErrorLaunchFailure).
    gpu_ms: fake GPU milliseconds per operation, over GPU_MS: "copy_in" each host-to-device copy,
    "compute" each engine execution (alone or inside a graph), "copy_out" each device-to-host copy.
    capture_error: the cudaError_t member name every cudaStreamEndCapture fails with (and no graph),
    as when captured work broke a rule of stream capture.

    Memory: rt.device {pointer: bytearray} and rt.pinned {pointer: ctypes buffer} hold the live
    allocations, rt.streams {handle: queued operations} the live streams, rt.events, rt.graphs and
    rt.graph_execs {handle: state} the live events, graphs and executable graphs, rt.captures
    {stream handle: captured operations} the captures in progress; rt.calls records every memory,
    stream, event and graph call with its arguments; rt.clock_ms is the fake GPU clock.
    """
    rt = types.ModuleType("cuda.bindings.runtime")
    rt.cudaError_t = enum.IntEnum("cudaError_t", {"cudaSuccess": 0, "cudaErrorInvalidValue": 1,
                                                  "cudaErrorMemoryAllocation": 2, "cudaErrorInsufficientDriver": 35,
                                                  "cudaErrorNoDevice": 100, "cudaErrorInvalidDevice": 101,
                                                  "cudaErrorInvalidResourceHandle": 400, "cudaErrorIllegalState": 401,
                                                  "cudaErrorNotReady": 600, "cudaErrorLaunchFailure": 719,
                                                  "cudaErrorStreamCaptureUnsupported": 900,
                                                  "cudaErrorStreamCaptureInvalidated": 901})
    rt.cudaStreamCaptureMode = enum.IntEnum("cudaStreamCaptureMode", ["cudaStreamCaptureModeGlobal",
                                                                      "cudaStreamCaptureModeThreadLocal",
                                                                      "cudaStreamCaptureModeRelaxed"], start=0)
    rt.cudaMemcpyKind = enum.IntEnum("cudaMemcpyKind", ["cudaMemcpyHostToHost", "cudaMemcpyHostToDevice",
                                                        "cudaMemcpyDeviceToHost", "cudaMemcpyDeviceToDevice",
                                                        "cudaMemcpyDefault"], start=0)
    ok = rt.cudaError_t.cudaSuccess
    rt.current_device = None

    def cudaGetDeviceCount():
        if count_error:
            return rt.cudaError_t[count_error], 0
        return ok, device_count

    def cudaGetDeviceProperties(device):
        if not 0 <= device < device_count:
            return rt.cudaError_t.cudaErrorInvalidDevice, None
        return ok, types.SimpleNamespace(name=name, major=major, minor=minor)

    def cudaDriverGetVersion():
        return ok, driver_version

    def cudaSetDevice(device):
        if not 0 <= device < device_count:
            return (rt.cudaError_t.cudaErrorInvalidDevice,)
        rt.current_device = device
        return (ok,)

    rt.cudaGetDeviceCount, rt.cudaGetDeviceProperties = cudaGetDeviceCount, cudaGetDeviceProperties
    rt.cudaDriverGetVersion, rt.cudaSetDevice = cudaDriverGetVersion, cudaSetDevice

    # ---- memory and streams
    rt.calls = []
    rt.device, rt.pinned, rt.streams = {}, {}, {}
    rt.events, rt.graphs, rt.graph_execs, rt.captures = {}, {}, {}, {}
    rt.invalidated = set()     # streams whose capture in progress broke a rule: it ends in an error
    rt.gpu_ms = GPU_MS | (gpu_ms or {})
    rt.clock_ms = 0.0
    rt.retired = []            # freed pinned buffers, kept alive so that a stale numpy view cannot crash the tests
    counts = {}
    next_device, next_stream, next_handle = [DEVICE_BASE], [1], [0xE000]
    invalid = (rt.cudaError_t.cudaErrorInvalidValue,)
    bad_handle = (rt.cudaError_t.cudaErrorInvalidResourceHandle,)

    def handle_type(type_name):
        class Handle:
            """Like cuda-python's handle types: int() gives the raw handle."""

            def __init__(self, handle):
                self.handle = handle

            def __int__(self):
                return self.handle

            def __repr__(self):
                return f"<{type_name} {self.handle:#x}>"

        Handle.__name__ = Handle.__qualname__ = type_name
        return Handle

    cudaStream_t, cudaEvent_t = handle_type("cudaStream_t"), handle_type("cudaEvent_t")
    cudaGraph_t, cudaGraphExec_t = handle_type("cudaGraph_t"), handle_type("cudaGraphExec_t")

    def new_handle(kind):
        next_handle[0] += 1
        return kind(next_handle[0])

    def live(handle, kind, table):
        return isinstance(handle, kind) and handle.handle in table

    def recorded(function):
        def call(*args):
            name = function.__name__
            rt.calls.append((name, *args))
            counts[name] = counts.get(name, 0) + 1
            if failures and failures.get(name) == counts[name]:
                allocates = name in ("cudaMalloc", "cudaMallocHost")
                error = rt.cudaError_t.cudaErrorMemoryAllocation if allocates else rt.cudaError_t.cudaErrorLaunchFailure
                return (error, None) if name in VALUED else (error,)
            return function(*args)

        call.__name__ = function.__name__
        return call

    def find(table, pointer, count):
        """(base, offset) of the allocation in `table` that holds [pointer, pointer + count), or None."""
        if not isinstance(pointer, int):
            return None
        for base, memory in table.items():
            size = len(memory) if isinstance(memory, bytearray) else ctypes.sizeof(memory)
            if base <= pointer and pointer + count <= base + size:
                return base, pointer - base
        return None

    def read_device(pointer, count):
        place = find(rt.device, pointer, count)
        if place is None:
            raise AssertionError(f"fake TensorRT read {count} bytes at {pointer:#x}, outside every device allocation")
        return bytes(rt.device[place[0]][place[1]:place[1] + count])

    def write_device(pointer, data):
        place = find(rt.device, pointer, len(data))
        if place is None:
            raise AssertionError(f"fake TensorRT wrote {len(data)} bytes at {pointer:#x}, outside every device allocation")
        rt.device[place[0]][place[1]:place[1] + len(data)] = data

    def put(handle, operation):
        """Queue (name, work) on a stream, or add it to the stream's capture in progress."""
        (rt.captures[handle] if handle in rt.captures else rt.streams[handle]).append(operation)

    def taking(kind, work):
        """`work` that takes gpu_ms[kind] on the fake GPU clock."""
        def run():
            work()
            rt.clock_ms += rt.gpu_ms[kind]
        return run

    def enqueue(handle, operation, kind=None):
        """What the fake TensorRT queues: (name, work) on stream `handle`, taking gpu_ms[kind]."""
        if handle not in rt.streams:
            return False
        name, work = operation
        put(handle, (name, work if kind is None else taking(kind, work)))
        return True

    def invalidate_capture(handle):
        rt.invalidated.add(handle)

    @recorded
    def cudaMalloc(size):
        pointer = next_device[0]
        next_device[0] += (size + 0xFFFF) // 0x10000 * 0x10000 + 0x10000   # a gap: overruns land outside
        rt.device[pointer] = bytearray(size)
        return ok, pointer

    @recorded
    def cudaFree(devPtr):
        if devPtr not in rt.device:
            return invalid
        del rt.device[devPtr]
        return (ok,)

    @recorded
    def cudaMallocHost(size):
        buffer = (ctypes.c_byte * max(size, 1))()
        rt.pinned[ctypes.addressof(buffer)] = buffer
        return ok, ctypes.addressof(buffer)

    @recorded
    def cudaFreeHost(ptr):
        if ptr not in rt.pinned:
            return invalid
        rt.retired.append(rt.pinned.pop(ptr))
        return (ok,)

    @recorded
    def cudaStreamCreate():
        stream = cudaStream_t(next_stream[0] * 0x1000)
        next_stream[0] += 1
        rt.streams[stream.handle] = []
        return ok, stream

    @recorded
    def cudaStreamDestroy(stream):
        if not isinstance(stream, cudaStream_t) or stream.handle not in rt.streams:
            return (rt.cudaError_t.cudaErrorInvalidResourceHandle,)
        drain(stream.handle)   # work already queued still completes
        del rt.streams[stream.handle]
        return (ok,)

    @recorded
    def cudaMemcpyAsync(dst, src, count, kind, stream):
        if not isinstance(stream, cudaStream_t) or stream.handle not in rt.streams:
            return (rt.cudaError_t.cudaErrorInvalidResourceHandle,)
        if kind == rt.cudaMemcpyKind.cudaMemcpyHostToDevice:
            to, source = find(rt.device, dst, count), find(rt.pinned, src, count)
        elif kind == rt.cudaMemcpyKind.cudaMemcpyDeviceToHost:
            to, source = find(rt.pinned, dst, count), find(rt.device, src, count)
        else:
            return invalid      # the runner only copies between its pinned and device buffers
        if to is None or source is None:
            return invalid

        def copy():             # at the stream's turn, as on a GPU: the host bytes read are those of then
            if kind == rt.cudaMemcpyKind.cudaMemcpyHostToDevice:
                write_device(dst, ctypes.string_at(src, count))
            else:
                ctypes.memmove(dst, read_device(src, count), count)

        direction = "copy_in" if kind == rt.cudaMemcpyKind.cudaMemcpyHostToDevice else "copy_out"
        put(stream.handle, ("cudaMemcpyAsync", taking(direction, copy)))
        return (ok,)

    def drain(handle):
        queue = rt.streams[handle]
        while queue:
            queue.pop(0)[1]()

    @recorded
    def cudaStreamSynchronize(stream):
        if not isinstance(stream, cudaStream_t) or stream.handle not in rt.streams:
            return (rt.cudaError_t.cudaErrorInvalidResourceHandle,)
        if stream.handle in rt.captures:   # illegal while capturing, and it breaks the capture
            rt.invalidated.add(stream.handle)
            return (rt.cudaError_t.cudaErrorStreamCaptureUnsupported,)
        drain(stream.handle)
        return (ok,)

    # ---- events: each record stamps the fake GPU clock when the stream reaches it
    @recorded
    def cudaEventCreate():
        event = new_handle(cudaEvent_t)
        rt.events[event.handle] = {"records": 0, "done": 0, "ms": None}
        return ok, event

    @recorded
    def cudaEventRecord(event, stream):
        if not live(event, cudaEvent_t, rt.events) or not live(stream, cudaStream_t, rt.streams):
            return bad_handle
        state = rt.events[event.handle]
        state["records"] += 1
        number = state["records"]

        def stamp():            # only the latest record counts, as on a GPU
            if state["records"] == number:
                state["done"], state["ms"] = number, rt.clock_ms

        put(stream.handle, ("cudaEventRecord", stamp))
        return (ok,)

    @recorded
    def cudaEventElapsedTime(start, end):
        if not live(start, cudaEvent_t, rt.events) or not live(end, cudaEvent_t, rt.events):
            return bad_handle + (None,)
        states = rt.events[start.handle], rt.events[end.handle]
        if any(state["records"] == 0 for state in states):
            return bad_handle + (None,)
        if any(state["done"] != state["records"] for state in states):   # recorded, not yet reached
            return rt.cudaError_t.cudaErrorNotReady, None
        return ok, states[1]["ms"] - states[0]["ms"]

    @recorded
    def cudaEventDestroy(event):
        if not live(event, cudaEvent_t, rt.events):
            return bad_handle
        del rt.events[event.handle]
        return (ok,)

    # ---- stream capture and graphs
    @recorded
    def cudaStreamBeginCapture(stream, mode):
        if not live(stream, cudaStream_t, rt.streams):
            return bad_handle
        if not isinstance(mode, rt.cudaStreamCaptureMode):
            return invalid
        if stream.handle in rt.captures:
            return (rt.cudaError_t.cudaErrorIllegalState,)
        rt.captures[stream.handle] = []
        return (ok,)

    @recorded
    def cudaStreamEndCapture(stream):
        if not live(stream, cudaStream_t, rt.streams):
            return bad_handle + (None,)
        if stream.handle not in rt.captures:
            return rt.cudaError_t.cudaErrorIllegalState, None
        operations = rt.captures.pop(stream.handle)
        if capture_error or stream.handle in rt.invalidated:   # an invalidated capture gives no graph
            rt.invalidated.discard(stream.handle)
            return rt.cudaError_t[capture_error or "cudaErrorStreamCaptureInvalidated"], None
        graph = new_handle(cudaGraph_t)
        rt.graphs[graph.handle] = operations
        return ok, graph

    @recorded
    def cudaGraphInstantiateWithFlags(graph, flags):
        if not live(graph, cudaGraph_t, rt.graphs) or not isinstance(flags, int):
            return invalid + (None,)
        instance = new_handle(cudaGraphExec_t)
        rt.graph_execs[instance.handle] = list(rt.graphs[graph.handle])
        return ok, instance

    @recorded
    def cudaGraphLaunch(graphExec, stream):
        if not live(graphExec, cudaGraphExec_t, rt.graph_execs) or not live(stream, cudaStream_t, rt.streams):
            return bad_handle
        operations = rt.graph_execs[graphExec.handle]

        def replay():           # the captured work, with the shapes and addresses it was captured with
            for _, work in operations:
                work()

        put(stream.handle, ("cudaGraphLaunch", replay))
        return (ok,)

    @recorded
    def cudaGraphExecDestroy(graphExec):
        if not live(graphExec, cudaGraphExec_t, rt.graph_execs):
            return bad_handle
        del rt.graph_execs[graphExec.handle]
        return (ok,)

    @recorded
    def cudaGraphDestroy(graph):
        if not live(graph, cudaGraph_t, rt.graphs):
            return bad_handle
        del rt.graphs[graph.handle]
        return (ok,)

    rt.cudaStream_t, rt.cudaEvent_t, rt.cudaGraph_t, rt.cudaGraphExec_t = cudaStream_t, cudaEvent_t, cudaGraph_t, cudaGraphExec_t
    rt.read_device, rt.write_device, rt.enqueue = read_device, write_device, enqueue
    rt.invalidate_capture = invalidate_capture
    rt.cudaEventCreate, rt.cudaEventRecord, rt.cudaEventElapsedTime = cudaEventCreate, cudaEventRecord, cudaEventElapsedTime
    rt.cudaEventDestroy = cudaEventDestroy
    rt.cudaStreamBeginCapture, rt.cudaStreamEndCapture = cudaStreamBeginCapture, cudaStreamEndCapture
    rt.cudaGraphInstantiateWithFlags, rt.cudaGraphLaunch = cudaGraphInstantiateWithFlags, cudaGraphLaunch
    rt.cudaGraphExecDestroy, rt.cudaGraphDestroy = cudaGraphExecDestroy, cudaGraphDestroy
    rt.cudaMalloc, rt.cudaFree, rt.cudaMallocHost, rt.cudaFreeHost = cudaMalloc, cudaFree, cudaMallocHost, cudaFreeHost
    rt.cudaStreamCreate, rt.cudaStreamDestroy = cudaStreamCreate, cudaStreamDestroy
    rt.cudaStreamSynchronize, rt.cudaMemcpyAsync = cudaStreamSynchronize, cudaMemcpyAsync
    rt.count = lambda call: sum(1 for c in rt.calls if c[0] == call)
    return rt
