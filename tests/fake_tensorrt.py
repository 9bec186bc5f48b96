"""Fake `tensorrt` and CUDA runtime modules that record every call the engine builder makes.

TensorRT cannot be installed on the project's machines, so the builder's logic is tested against
these. They mimic the documented Python API surface the builder uses (TensorRT 10.x and 11.x,
cuda-python's runtime bindings) and nothing more; what they do NOT model is listed in
tests/test_trt_build.py's docstring.

    trt = make_fake_trt(version="10.3.0")
    trt.builders[0].networks[0].flags           # what create_network got
    trt.builders[0].configs[0].profiles[0]      # {input name: (min, opt, max)}
"""

from __future__ import annotations

import enum
import hashlib
import types


def make_fake_trt(version: str = "10.3.0", parse_ok: bool = True, errors=(), build_ok: bool = True,
                  fail_build_number: int | None = None, num_dla_cores: int = 0, max_dla_batch_size: int = 32,
                  strongly_typed_flag: bool = True):
    """A module-like fake of `tensorrt` `version`.

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
    return trt


def make_fake_cudart(device_count: int = 1, name: bytes = b"NVIDIA Jetson Orin Nano", major: int = 8, minor: int = 7,
                     driver_version: int = 12060, count_error: str | None = None):
    """A module-like fake of cuda.bindings.runtime: every call returns (cudaError_t, values...).

    count_error: the cudaError_t member name cudaGetDeviceCount fails with (e.g. when no driver is loaded).
    """
    rt = types.ModuleType("cuda.bindings.runtime")
    rt.cudaError_t = enum.IntEnum("cudaError_t", {"cudaSuccess": 0, "cudaErrorInsufficientDriver": 35,
                                                  "cudaErrorNoDevice": 100, "cudaErrorInvalidDevice": 101})
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
    return rt
