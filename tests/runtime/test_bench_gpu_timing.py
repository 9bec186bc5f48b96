"""GPU timings in benchmark results: run_cases (gvtool/bench/cases.py) keeps a runner's per-call
`last_timings` (CUDA-event seconds of copy-in, compute and copy-out) for the timed calls and puts
their statistics in device_compute, copy_in and copy_out; runners that report none leave them None.

No test asserts a measured time: the timings come from fake runners and from the fake GPU clock of
tests/support/fake_tensorrt.py, and only how they are collected is checked.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fake_tensorrt import make_fake_cudart, make_fake_trt
from gvtool.manifest import ModelInfo, TensorSpec
from gvtool.bench.core import latency_stats
from gvtool.bench.cases import ROUNDS, Case, run_cases
from gvtool.runtime.trt_runner import TensorRTRunner
from test_trt_runner import DECODER, LATENT, engine_entry, expected_timings, reference

# feeds_for's decoder feeds fit DECODER (its image output is never fed)
MODEL = ModelInfo(kind="vaegan", conditional=True, num_classes=10, data_kind="image", item_shape=(1, 16, 16),
                  latent_dim=LATENT)
ITERATIONS = 6          # 2 timed calls per round, after 1 warm-up call (warmup_s=0)


class CountingGpuRunner:
    """Reports GPU timings that grow with each call, so that warm-up calls are told apart from timed ones."""

    backend = "fake-gpu"
    max_batch = None

    def __init__(self):
        self.calls = 0
        self.last_timings = None

    def run(self, feeds):
        self.calls += 1
        k = self.calls
        self.last_timings = {"copy_in": k * 1e-6, "compute": k * 1e-3, "copy_out": k * 2e-6}
        return [np.zeros(1)]


class SilentRunner:
    """Like onnxruntime's and torch's runners: no last_timings attribute at all."""

    backend = "fake-cpu"
    max_batch = None

    def run(self, feeds):
        return [np.zeros(1)]


class NeverTimedRunner(SilentRunner):
    """Has the attribute, but never a value (as a runner whose timing is off)."""

    last_timings = None


def bench(*makers, batch: int = 2) -> list:
    cases = [Case(graph="decoder", backend=f"case{i}", precision="fp16", device="cuda:0", make=make)
             for i, make in enumerate(makers)]
    return run_cases(MODEL, cases, [batch], warmup_s=0.0, duration_s=1.0, iterations=ITERATIONS)


def timed_call_numbers() -> list[int]:
    """1-based numbers of the timed calls: each round starts with one warm-up call."""
    per_round = ITERATIONS // ROUNDS
    return [r * (per_round + 1) + 1 + j + 1 for r in range(ROUNDS) for j in range(per_round)]


class TestGpuTimingsInResults:
    def test_stats_of_the_timed_calls_fill_device_compute_copy_in_and_copy_out(self):
        (result,) = bench(CountingGpuRunner)
        timed = timed_call_numbers()
        assert timed == [2, 3, 5, 6, 8, 9]
        assert result.device_compute == latency_stats([k * 1e-3 for k in timed])
        assert result.copy_in == latency_stats([k * 1e-6 for k in timed])
        assert result.copy_out == latency_stats([k * 2e-6 for k in timed])

    def test_one_timing_per_timed_call(self):
        (result,) = bench(CountingGpuRunner)
        assert result.latency.iterations == result.device_compute.iterations == ITERATIONS
        assert result.copy_in.iterations == result.copy_out.iterations == ITERATIONS

    def test_the_host_latency_and_throughput_are_still_there(self):
        (result,) = bench(CountingGpuRunner)
        assert result.status == "ok" and result.latency.min > 0 and result.items_per_s > 0

    def test_the_result_round_trips_through_json(self):
        (result,) = bench(CountingGpuRunner)
        assert type(result).from_dict(result.to_dict()) == result


class TestRunnersWithoutGpuTimings:
    def test_a_runner_without_last_timings_gives_none(self):
        (result,) = bench(SilentRunner)
        assert result.status == "ok" and result.latency.iterations == ITERATIONS
        assert result.device_compute is None and result.copy_in is None and result.copy_out is None

    def test_a_runner_whose_last_timings_stay_none_gives_none(self):
        (result,) = bench(NeverTimedRunner)
        assert result.device_compute is None and result.copy_in is None and result.copy_out is None

    def test_side_by_side_each_runner_keeps_its_own(self):
        timed, silent = bench(CountingGpuRunner, SilentRunner)
        assert timed.device_compute is not None and silent.device_compute is None

    def test_onnxruntime_gives_none(self, tmp_path):
        onnx = pytest.importorskip("onnx", reason="needs onnx to write a tiny graph (pip install 'gvtool[export]')")
        pytest.importorskip("onnxruntime", reason="needs onnxruntime (pip install 'gvtool[cpu]')")
        from onnx import TensorProto, helper

        from gvtool.runtime.ort_runner import OnnxRuntimeRunner

        # (n, 4) latents and (n,) labels -> (n, 4) "images": the decoder's inputs, feeds_for's feeds
        graph = helper.make_graph(
            [helper.make_node("Identity", ["latents"], ["images"])], "tiny",
            [helper.make_tensor_value_info("latents", TensorProto.FLOAT, ["batch", LATENT]),
             helper.make_tensor_value_info("labels", TensorProto.INT64, ["batch"])],
            [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", LATENT])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        path = tmp_path / "tiny.onnx"
        onnx.save(model, str(path))
        entry = dataclasses.replace(DECODER, outputs=(TensorSpec("images", "float32", ("batch", LATENT)),))
        (result,) = bench(lambda: OnnxRuntimeRunner(path, entry, "onnxruntime-cpu"))
        assert result.status == "ok", result.reason
        assert result.device_compute is None and result.copy_in is None and result.copy_out is None


class TestTensorRTRunnerInBench:
    @pytest.mark.parametrize("cuda_graphs", [False, True], ids=["execute", "cuda-graphs"])
    def test_the_fake_gpu_times_reach_the_result(self, tmp_path, cuda_graphs):
        gpu_ms = {"copy_in": 0.5, "compute": 2.0, "copy_out": 0.25}
        cudart = make_fake_cudart(gpu_ms=gpu_ms)
        trt = make_fake_trt(cudart=cudart, compute=reference)
        entry = engine_entry(tmp_path, DECODER)
        make = lambda: TensorRTRunner(tmp_path, entry, DECODER, cuda_graphs=cuda_graphs, trt=trt, cudart=cudart)  # noqa: E731
        (result,) = bench(make)
        want = expected_timings(DECODER, gpu_ms)
        for field, key in (("device_compute", "compute"), ("copy_in", "copy_in"), ("copy_out", "copy_out")):
            stats = getattr(result, field)
            assert stats.iterations == ITERATIONS
            assert (stats.min, stats.p50, stats.max) == pytest.approx((want[key],) * 3), field
        assert (cudart.count("cudaGraphLaunch") > 0) == cuda_graphs
        assert cudart.events == {} and cudart.graph_execs == {}   # run_cases closed the runner
