"""The measurement core of `gvtool bench`: timing calls, latency statistics, and the report that
records what was measured, where, and with which library versions.

Torch-free like the rest of runtime/: the torch baseline hands its own call (and its sync) to
time_calls, so every backend is timed by the same loop. Tables, ratios and plots live in bench_report.py.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import platform
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np

import gvtool
from gvtool.errors import BadInputError, GvtoolError
from gvtool.fileio import atomic_write_text, load_json_bounded
from gvtool.manifest import MANIFEST_FILE, read_manifest, sha256_file

REPORT_FORMAT = 1  # bump on any change a reader of the old layout would misread
STATUSES = ("ok", "skipped")
# Distribution names, not module names: onnxruntime and onnxruntime-gpu install the same module.
LIBRARIES = ("gvtool", "numpy", "onnxruntime", "onnxruntime-gpu", "onnx", "torch", "tensorrt", "cuda-python")


# --- statistics and timing -----------------------------------------------------------------------

@dataclass(frozen=True)
class LatencyStats:
    """Per-call times in seconds."""

    min: float
    mean: float
    p50: float
    p90: float
    p99: float
    max: float
    iterations: int

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "LatencyStats":
        return cls(**d)


def latency_stats(samples) -> LatencyStats:
    """min/mean/percentiles/max of per-call seconds; percentiles interpolate linearly (numpy's default)."""
    times = np.asarray(samples, dtype=np.float64).ravel()
    if times.size == 0:
        raise ValueError("latency_stats needs at least one sample, got none")
    p50, p90, p99 = np.percentile(times, [50, 90, 99])
    return LatencyStats(min=float(times.min()), mean=float(times.mean()), p50=float(p50), p90=float(p90),
                        p99=float(p99), max=float(times.max()), iterations=int(times.size))


def time_calls(call: Callable[[], object], *, warmup_s: float = 0.2, duration_s: float = 3.0,
               iterations: int | None = None, sync: Callable[[], object] | None = None,
               clock: Callable[[], float] = time.perf_counter) -> list[float]:
    """Seconds per call of `call()`, after warming up for `warmup_s` (at least one call, untimed).

    Times calls until `duration_s` has passed, or exactly `iterations` calls when given. `sync` runs
    after every call, warm-up included, so queued asynchronous work (a GPU stream) is inside the time
    of the call that queued it and never spills into the next one.
    """
    if warmup_s < 0:
        raise BadInputError(f"the warm-up must be >= 0 seconds, got {warmup_s}")
    if iterations is None and not duration_s > 0:
        raise BadInputError(f"the duration must be > 0 seconds, got {duration_s}")
    if iterations is not None and (isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1):
        raise BadInputError(f"iterations must be a positive integer, got {iterations!r}")
    finish = sync or (lambda: None)
    start = clock()
    while True:  # one call at least: the first call pays for lazy initialisation
        call()
        finish()
        if clock() - start >= warmup_s:
            break
    samples: list[float] = []
    start = clock()
    while True:
        t0 = clock()
        call()
        finish()
        t1 = clock()
        samples.append(t1 - t0)
        if len(samples) == iterations or (iterations is None and t1 - start >= duration_s):
            return samples


def matmul_peak_numpy(n: int = 1024, seconds: float = 1.0, clock: Callable[[], float] = time.perf_counter) -> float:
    """fp32 GFLOP/s of numpy's matmul on this CPU (n x n @ n x n, 2 n^3 flops a call), from the median call.

    The reference that "% of peak" divides by: measured in the same run, since these machines are shared.
    """
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
    out = np.empty((n, n), dtype=np.float32)  # allocated once: the loop times the matmul, not malloc
    samples = time_calls(lambda: np.matmul(a, b, out=out), warmup_s=seconds / 4, duration_s=seconds, clock=clock)
    median = float(np.median(samples))
    if not median > 0:
        raise ValueError(f"the clock did not advance during a {n}x{n} matmul (median {median} s)")
    return 2.0 * n ** 3 / median / 1e9


# --- results and the report ----------------------------------------------------------------------

_STATS_FIELDS = ("latency", "device_compute", "copy_in", "copy_out")


@dataclass(frozen=True)
class BenchResult:
    graph: str
    backend: str
    precision: str
    device: str                                # "cpu", "cuda:0"
    batch: int
    status: str                                # "ok" | "skipped"
    reason: str = ""                           # why skipped, e.g. "tensorrt not installed"
    latency: LatencyStats | None = None        # host latency per call, copies included
    items_per_s: float | None = None           # batch / latency.p50
    device_compute: LatencyStats | None = None  # GPU compute alone (CUDA events), when the backend reports it
    copy_in: LatencyStats | None = None
    copy_out: LatencyStats | None = None
    flops_per_item: float | None = None        # from the manifest when known
    gflops: float | None = None                # achieved: flops_per_item * items_per_s / 1e9
    note: str = ""                             # e.g. "torch.compile", "cuda graphs"

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")
        if self.status == "skipped" and not self.reason:
            raise ValueError("a skipped result needs a reason")
        if self.status == "ok" and self.latency is None:
            raise ValueError("an ok result needs its latency")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)  # LatencyStats become nested dicts

    @classmethod
    def from_dict(cls, d: dict) -> "BenchResult":
        stats = {k: None if d.get(k) is None else LatencyStats.from_dict(d[k]) for k in _STATS_FIELDS}
        return cls(**(d | stats))


def measured(graph: str, backend: str, precision: str, device: str, batch: int, latency: LatencyStats, *,
             device_compute: LatencyStats | None = None, copy_in: LatencyStats | None = None,
             copy_out: LatencyStats | None = None, flops_per_item: float | None = None, note: str = "") -> BenchResult:
    """An ok result, with throughput (from p50) and achieved GFLOP/s derived from the latency."""
    items_per_s = batch / latency.p50 if latency.p50 > 0 else None
    gflops = flops_per_item * items_per_s / 1e9 if flops_per_item is not None and items_per_s is not None else None
    return BenchResult(graph, backend, precision, device, batch, "ok", latency=latency, items_per_s=items_per_s,
                       device_compute=device_compute, copy_in=copy_in, copy_out=copy_out,
                       flops_per_item=flops_per_item, gflops=gflops, note=note)


def skipped(graph: str, backend: str, precision: str, device: str, batch: int, reason: str) -> BenchResult:
    return BenchResult(graph, backend, precision, device, batch, "skipped", reason=reason)


@dataclass(frozen=True)
class BenchReport:
    date: str                  # ISO 8601 UTC, see utc_now()
    machine: dict              # machine_info(), plus "gpus": cuda_devices_info() when the caller used a GPU
    versions: dict             # library_versions()
    bundle: dict               # bundle_info(): path, manifest_sha256, model
    settings: dict             # warm-up, duration or iterations, batch sizes, ...
    peaks: dict                # device -> measured fp32 matmul GFLOP/s there, in the same run
    results: list[BenchResult] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"format": REPORT_FORMAT, "date": self.date, "machine": self.machine, "versions": self.versions,
                "bundle": self.bundle, "settings": self.settings, "peaks": self.peaks,
                "results": [r.to_dict() for r in self.results]}

    @classmethod
    def from_dict(cls, d: dict) -> "BenchReport":
        """Raises BadInputError when `d` is not a report of this layout."""
        version = d.get("format") if isinstance(d, dict) else None
        if version != REPORT_FORMAT:
            raise BadInputError(f"not a gvtool bench report of format {REPORT_FORMAT} (format {version!r})")
        try:
            return cls(date=d["date"], machine=d["machine"], versions=d["versions"], bundle=d["bundle"],
                       settings=d["settings"], peaks=d["peaks"],
                       results=[BenchResult.from_dict(r) for r in d["results"]])
        except (AttributeError, KeyError, TypeError, ValueError) as error:
            raise BadInputError(f"a malformed gvtool bench report: {type(error).__name__} {error}") from None


def save_report(report: BenchReport, path: str | os.PathLike) -> None:
    atomic_write_text(path, json.dumps(report.to_dict(), indent=2) + "\n")


def load_report(path: str | os.PathLike) -> BenchReport:
    """A report written by save_report; BadInputError naming the file when it is missing or not one."""
    if not Path(path).is_file():
        raise BadInputError(f"no bench report at {path}: the file does not exist")
    # bounded like a manifest: no report of gvtool's nests deep, holds NaN or reaches 64 MB
    raw = load_json_bounded(Path(path), "bench report", error=BadInputError, max_bytes=64 << 20)
    try:
        return BenchReport.from_dict(raw)
    except BadInputError as error:
        raise BadInputError(f"{path} is {error}") from None


# --- what the numbers were measured on ------------------------------------------------------------

def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def bundle_info(bundle: str | os.PathLike) -> dict:
    """What identifies the bundle measured: its path, its manifest's hash, and the model it holds."""
    manifest = read_manifest(bundle)
    return {"path": str(bundle), "manifest_sha256": sha256_file(Path(bundle) / MANIFEST_FILE), "model": manifest.model.to_dict()}


def machine_info() -> dict:
    """host, cpu, logical_cores, usable_cores, platform, python. GPUs are the caller's to add
    (as "gpus": cuda_devices_info()), since only it knows whether a GPU backend ran."""
    logical = os.cpu_count() or 0
    # sched_getaffinity sees a container's or taskset's CPU limit; macOS and Windows lack it.
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else logical
    return {"host": platform.node(), "cpu": _cpu_model(), "logical_cores": logical, "usable_cores": usable,
            "platform": platform.platform(), "python": platform.python_version()}


def _cpu_model() -> str:
    # platform.processor() gives only the architecture ("x86_64") on Linux; /proc/cpuinfo has the name.
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                # x86 writes "model name"; Arm (Jetson) kernels may write "Model" or nothing at all
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model") and value.strip():
                    return value.strip()
    except OSError:
        pass  # not Linux
    return platform.processor() or platform.machine()


def cuda_devices_info() -> list[dict]:
    """[{"index", "name", "compute_capability", "driver"}] of the CUDA devices, via cuda-python;
    [] when the bindings, the driver or a device are missing. Never raises: a report without the GPU
    names is still a report."""
    from gvtool.runtime import gpu  # looked up at call time, so that tests can hand in a fake cudart

    try:
        cudart = gpu.import_cudart()
        (count,) = gpu.cuda_check(cudart, cudart.cudaGetDeviceCount(), "cudaGetDeviceCount")
        devices = []
        for index in range(count):
            name, capability, driver = gpu.gpu_properties(cudart, index)
            devices.append({"index": index, "name": name, "compute_capability": capability, "driver": driver})
        return devices
    except (GvtoolError, OSError, RuntimeError):  # no bindings, no driver, or a query that failed
        return []


def library_versions() -> dict:
    """The installed version of each library that may take part in a measurement, or "absent"."""
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "absent"
    if versions["gvtool"] == "absent":  # run from a checkout that was never pip-installed
        versions["gvtool"] = gvtool.__version__
    return versions
