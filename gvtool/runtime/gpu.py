"""Which NVIDIA GPU and TensorRT this process has: the CUDA query helpers and lazy imports.

TensorRT engines only run on the GPU model and TensorRT version they were built with, so the
builder (export/trt_build.py) records both and the runner (runtime/trt_runner.py) compares them.
Both import from here, since the runtime may not import export/. The query goes through NVIDIA's
cuda-python bindings, which return a tuple (cudaError_t, value...) from every call instead of raising.
"""

from __future__ import annotations

import importlib

from gvtool.errors import BackendUnavailableError, BadInputError

CUDA_PYTHON_HINT = "install NVIDIA's CUDA Python bindings: pip install cuda-python (included in 'gvtool[trt]')"
NO_GPU = "TensorRT engines must be built on the NVIDIA GPU they will run on (the target Jetson or desktop GPU)"
TENSORRT_HINT = (
    "install TensorRT's Python bindings. Desktop or server GPU: pip install 'gvtool[trt]' (the tensorrt "
    "wheels come from NVIDIA's PyPI index, https://pypi.nvidia.com). Jetson: TensorRT comes with JetPack 6; "
    "if `import tensorrt` fails, sudo apt install python3-libnvinfer, and create the virtual environment "
    "with --system-site-packages so that it sees the system package")


def import_tensorrt():
    """The `tensorrt` module, lazily: only engine building and the TensorRT backend need it."""
    try:
        return importlib.import_module("tensorrt")
    except (ImportError, OSError) as error:  # OSError: the bindings are there but libnvinfer is not
        raise BackendUnavailableError(f"TensorRT is not available here ({error}); {TENSORRT_HINT}") from None


def import_cudart():
    """The CUDA runtime bindings module, lazily: only engine building and the TensorRT backend need it."""
    errors = []
    # cuda-python >= 12.6 moved the runtime to cuda.bindings.runtime; older releases (still found
    # beside JetPack 6's Python 3.10) only have cuda.cudart, which 12.6+ keeps as a deprecated alias.
    for name in ("cuda.bindings.runtime", "cuda.cudart"):
        try:
            return importlib.import_module(name)
        except ImportError as error:
            errors.append(f"{name}: {error}")
    raise BackendUnavailableError(f"the CUDA runtime bindings are missing ({'; '.join(errors)}); {CUDA_PYTHON_HINT}")


def cuda_check(cudart, result, call: str, context: str = "") -> list:
    """The values after the status in a cuda-python result tuple, or BackendUnavailableError naming
    `call` and its error, followed by `context` (what was being done, or what it means)."""
    # Calls with no output (cudaSetDevice) return a 1-tuple (status,); tolerate a bare status too.
    status, *values = result if isinstance(result, tuple) else (result,)
    if status != cudart.cudaError_t.cudaSuccess:
        context = f": {context}" if context else ""
        raise BackendUnavailableError(f"{call} failed with {getattr(status, 'name', status)}{context}")
    return values


def _checked(cudart, result, call: str) -> list:
    """cuda_check for the device queries, where any failure means there is no usable GPU."""
    return cuda_check(cudart, result, call, f"no usable CUDA device. {NO_GPU}")


def gpu_properties(cudart, device_index: int = 0) -> tuple[str, str, int]:
    """(GPU name, compute capability "M.m", CUDA driver version such as 12060) of one device."""
    (count,) = _checked(cudart, cudart.cudaGetDeviceCount(), "cudaGetDeviceCount")
    if count == 0:
        raise BackendUnavailableError(f"this machine has no CUDA device. {NO_GPU}")
    if not 0 <= device_index < count:
        raise BadInputError(f"--device {device_index} does not exist: this machine has {count} CUDA device(s), 0 to {count - 1}")
    (props,) = _checked(cudart, cudart.cudaGetDeviceProperties(device_index), "cudaGetDeviceProperties")
    (driver,) = _checked(cudart, cudart.cudaDriverGetVersion(), "cudaDriverGetVersion")
    name = props.name.decode("utf-8", "replace") if isinstance(props.name, bytes) else str(props.name)
    return name.rstrip("\x00").strip(), f"{props.major}.{props.minor}", int(driver)


def use_device(cudart, device_index: int) -> None:
    """Make `device_index` current: TensorRT builds, allocates and runs on the current device."""
    _checked(cudart, cudart.cudaSetDevice(device_index), "cudaSetDevice")
