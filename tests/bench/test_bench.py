"""gvtool.bench.core and bench_report: statistics, the timing loop (on a fake clock: no test reads a
real time), the report's JSON round trip, merged tables, ratios, the plot, and what a report records."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from gvtool.errors import BadInputError
from gvtool.manifest import Manifest, sha256_file, write_manifest
from gvtool.bench.core import (LIBRARIES, BenchReport, BenchResult, LatencyStats, bundle_info, cuda_devices_info,
                                  latency_stats, library_versions, load_report, machine_info, matmul_peak_numpy,
                                  measured, save_report, skipped, time_calls, utc_now)
from gvtool.bench.report import markdown_table, merge, plot, ratios, ratios_table, result_rows

from fake_tensorrt import make_fake_cudart

REPO = Path(__file__).resolve().parents[2]


class FakeClock:
    """Advances `step` seconds per reading, and `cost` more per call of `work`."""

    def __init__(self, step: float = 0.0, cost: float = 0.01):
        self.now, self.step, self.cost = 0.0, step, cost

    def __call__(self) -> float:
        self.now += self.step
        return self.now

    def work(self) -> None:
        self.now += self.cost


def _stats(p50_ms: float) -> LatencyStats:
    s = p50_ms / 1e3
    return LatencyStats(min=0.9 * s, mean=s, p50=s, p90=1.1 * s, p99=1.2 * s, max=1.3 * s, iterations=50)


def _report(host: str, results: list[BenchResult], gpus=(), peaks=None) -> BenchReport:
    return BenchReport(date="2025-01-02T03:04:05+00:00", machine={"host": host, "cpu": "test cpu", "gpus": list(gpus)},
                       versions={"numpy": "2.0"}, bundle={"path": "b", "manifest_sha256": "0" * 64, "model": {"kind": "vae"}},
                       settings={"warmup_s": 0.2, "duration_s": 3.0, "batch_sizes": [1, 8]},
                       peaks=peaks if peaks is not None else {"cpu": 100.0}, results=results)


def _ok(backend: str, batch: int, p50_ms: float, device: str = "cpu", note: str = "", flops: float | None = None,
        precision: str = "fp32") -> BenchResult:
    return measured("decoder", backend, precision, device, batch, _stats(p50_ms), flops_per_item=flops, note=note)


# --- statistics ----------------------------------------------------------------------------------

class TestLatencyStats:
    def test_one_to_hundred_ms_gives_linear_interpolation_percentiles(self):
        s = latency_stats([ms / 1e3 for ms in range(1, 101)])
        assert s.p50 == pytest.approx(50.5e-3)
        assert s.p90 == pytest.approx(90.1e-3)
        assert s.p99 == pytest.approx(99.01e-3)
        assert (s.min, s.max, s.iterations) == (1e-3, 100e-3, 100)
        assert s.mean == pytest.approx(50.5e-3)

    def test_a_single_sample_is_every_statistic(self):
        s = latency_stats([0.25])
        assert (s.min, s.mean, s.p50, s.p90, s.p99, s.max, s.iterations) == (0.25, 0.25, 0.25, 0.25, 0.25, 0.25, 1)

    def test_unsorted_input_gives_the_sorted_result(self):
        samples = list(np.random.default_rng(0).permutation(np.arange(1, 101) / 1e3))
        shuffled, ordered = latency_stats(samples), latency_stats(sorted(samples))
        assert dataclasses.replace(shuffled, mean=0.0) == dataclasses.replace(ordered, mean=0.0)
        assert shuffled.mean == pytest.approx(ordered.mean)  # summation order may change the last bit

    def test_no_samples_is_a_value_error(self):
        with pytest.raises(ValueError, match="at least one sample"):
            latency_stats([])


# --- timing --------------------------------------------------------------------------------------

class TestTimeCalls:
    def test_warm_up_calls_happen_and_are_not_timed(self):
        clock = FakeClock(cost=0.01)
        samples = time_calls(clock.work, warmup_s=0.05, iterations=3, clock=clock)
        # warm-up: 0.01 s a call until 0.05 s have passed -> 5 calls; then 3 timed ones
        assert clock.now == pytest.approx(0.08)
        assert samples == pytest.approx([0.01, 0.01, 0.01])

    def test_at_least_one_warm_up_call_even_with_no_warm_up_time(self):
        calls = []
        clock = FakeClock(cost=0.01)
        time_calls(lambda: (calls.append(1), clock.work()), warmup_s=0.0, iterations=2, clock=clock)
        assert len(calls) == 3

    def test_iterations_gives_exactly_that_many_samples_whatever_the_duration(self):
        clock = FakeClock(cost=1.0)
        assert len(time_calls(clock.work, warmup_s=0.0, duration_s=0.5, iterations=7, clock=clock)) == 7

    def test_the_duration_stops_the_loop(self):
        clock = FakeClock(cost=0.125)  # exact in binary: no rounding at the boundary
        samples = time_calls(clock.work, warmup_s=0.0, duration_s=1.0, clock=clock)
        assert len(samples) == 8
        assert sum(samples) == 1.0

    def test_sync_runs_after_every_call_and_inside_its_time(self):
        clock, events = FakeClock(cost=0.01), []

        def call():
            events.append("call")
            clock.work()

        def sync():
            events.append("sync")
            clock.now += 0.005  # the queued work the sync waits for

        samples = time_calls(call, warmup_s=0.0, iterations=4, sync=sync, clock=clock)
        assert events == ["call", "sync"] * 5  # one warm-up call, four timed
        assert samples == pytest.approx([0.015] * 4)

    @pytest.mark.parametrize("kwargs", [{"warmup_s": -1.0}, {"duration_s": 0.0}, {"iterations": 0}, {"iterations": 2.5}])
    def test_bad_settings_are_refused(self, kwargs):
        clock = FakeClock(cost=0.01)
        with pytest.raises(BadInputError):
            time_calls(clock.work, clock=clock, **kwargs)


class TestMatmulPeak:
    def test_a_positive_gflops_from_the_median_call(self):
        clock = FakeClock(step=0.001)  # each call spans one reading -> 1 ms
        peak = matmul_peak_numpy(n=32, seconds=0.05, clock=clock)
        assert isinstance(peak, float)
        assert peak == pytest.approx(2 * 32 ** 3 / 1e-3 / 1e9)


# --- results and the report ----------------------------------------------------------------------

class TestResults:
    def test_measured_derives_throughput_and_gflops_from_p50(self):
        r = _ok("onnxruntime-cpu", batch=8, p50_ms=2.0, flops=1e6)
        assert r.items_per_s == pytest.approx(4000.0)
        assert r.gflops == pytest.approx(4.0)

    def test_skipped_keeps_its_reason_and_no_numbers(self):
        r = skipped("decoder", "tensorrt", "int8", "cuda:0", 8, "tensorrt not installed")
        assert (r.status, r.reason, r.latency, r.items_per_s) == ("skipped", "tensorrt not installed", None, None)

    @pytest.mark.parametrize("changes", [{"status": "broken"}, {"status": "skipped", "reason": ""}, {"latency": None}])
    def test_inconsistent_results_are_refused(self, changes):
        with pytest.raises(ValueError):
            dataclasses.replace(_ok("torch", 1, 1.0), **changes)


class TestReportRoundTrip:
    @pytest.fixture
    def report(self):
        full = dataclasses.replace(_ok("tensorrt", 8, 1.5, device="cuda:0", flops=2e6, note="cuda graphs"),
                                   device_compute=_stats(1.0), copy_in=_stats(0.2), copy_out=_stats(0.3))
        return _report("host", [full, _ok("torch", 8, 3.0), skipped("decoder", "tensorrt", "int8", "cuda:0", 8,
                                                                   "no int8 graph in the bundle")])

    def test_to_dict_from_dict_gives_the_same_report(self, report):
        assert BenchReport.from_dict(report.to_dict()) == report

    def test_the_dict_is_plain_json(self, report):
        assert BenchReport.from_dict(json.loads(json.dumps(report.to_dict()))) == report

    def test_save_then_load_gives_the_same_report(self, report, tmp_path):
        save_report(report, tmp_path / "sub" / "bench.json")
        loaded = load_report(tmp_path / "sub" / "bench.json")
        assert loaded == report
        assert isinstance(loaded.results[0].copy_in, LatencyStats)
        assert loaded.results[2].latency is None

    def test_a_missing_file_is_named(self, tmp_path):
        with pytest.raises(BadInputError, match="missing.json"):
            load_report(tmp_path / "missing.json")

    def test_invalid_json_is_named(self, tmp_path):
        (tmp_path / "bad.json").write_text("{not json")
        with pytest.raises(BadInputError, match=r"bad\.json.*not valid JSON"):
            load_report(tmp_path / "bad.json")

    @pytest.mark.parametrize("content", [[1, 2], {"format": 99}, {"format": 1, "date": "x"},
                                         {"format": 1, "date": "x", "machine": {}, "versions": {}, "bundle": {},
                                          "settings": {}, "peaks": {}, "results": [{"graph": "decoder"}]}])
    def test_an_unknown_layout_is_named(self, tmp_path, content):
        (tmp_path / "other.json").write_text(json.dumps(content))
        with pytest.raises(BadInputError, match=r"other\.json.*bench report"):
            load_report(tmp_path / "other.json")


# --- merged rows, tables, ratios, plot -----------------------------------------------------------

@pytest.fixture
def two_reports(tmp_path) -> list[BenchReport]:
    host = _report("host", [_ok("torch", 1, 4.0, flops=1e6), _ok("onnxruntime-cpu", 1, 2.0, flops=1e6),
                            _ok("torch", 8, 16.0), _ok("onnxruntime-cpu", 8, 4.0)])
    orin = _report("orin", [_ok("torch", 8, 10.0, device="cuda:0"), _ok("tensorrt", 8, 2.5, device="cuda:0"),
                            skipped("decoder", "tensorrt", "int8", "cuda:0", 8, "no int8 graph | in the bundle")],
                   gpus=[{"index": 0, "name": "NVIDIA Jetson Orin Nano", "compute_capability": "8.7", "driver": 12060}],
                   peaks={"cpu": 50.0, "cuda:0": 1000.0})
    paths = [tmp_path / "host.json", tmp_path / "orin.json"]
    for report, path in zip([host, orin], paths):
        save_report(report, path)
    return merge(paths)


class TestMerge:
    def test_rows_come_from_both_reports_labelled_by_machine_and_device(self, two_reports):
        rows = result_rows(two_reports)
        assert len(rows) == 7
        assert {r["label"] for r in rows} == {"host / cpu", "orin / cuda:0 NVIDIA Jetson Orin Nano"}

    def test_percent_of_peak_uses_the_peak_of_the_results_device(self, two_reports):
        row = result_rows(two_reports)[1]  # onnxruntime-cpu at batch 1: 500 items/s * 1e6 flops = 0.5 GFLOP/s
        assert row["gflops"] == pytest.approx(0.5)
        assert row["percent_of_peak"] == pytest.approx(0.5)

    def test_the_same_machine_twice_stays_apart(self, two_reports):
        labels = {r["label"] for r in result_rows([two_reports[0], two_reports[0]])}
        assert labels == {"host / cpu", "host#2 / cpu"}

    def test_a_missing_file_is_refused(self, tmp_path):
        with pytest.raises(BadInputError, match="nope.json"):
            merge([tmp_path / "nope.json"])

    def test_no_files_is_refused(self):
        with pytest.raises(BadInputError):
            merge([])


class TestMarkdownTable:
    def test_one_line_per_result_after_the_header(self, two_reports):
        lines = markdown_table(result_rows(two_reports)).strip().splitlines()
        assert len(lines) == 2 + 7
        assert lines[0].startswith("| machine / device | graph | backend | precision | batch | p50 ms")

    def test_skipped_rows_show_their_reason_with_pipes_escaped(self, two_reports):
        table = markdown_table(result_rows(two_reports))
        assert "skipped: no int8 graph \\| in the bundle" in table
        cells = [re.split(r"(?<!\\)\|", line)[1:-1] for line in table.splitlines()]  # split at unescaped pipes
        assert {len(c) for c in cells} == {12}

    def test_numbers_are_in_milliseconds(self, two_reports):
        line = markdown_table(result_rows(two_reports)).splitlines()[3]  # onnxruntime-cpu, batch 1, p50 2 ms
        assert "| 2.00 | 2.20 | 2.40 | 500 |" in line


class TestRatios:
    def test_each_backend_against_torch_in_its_own_group(self, two_reports):
        got = {(e["label"], e["batch"], e["backend"]): (e["latency_ratio"], e["throughput_ratio"])
               for e in ratios(result_rows(two_reports))}
        expected = {("host / cpu", 1, "onnxruntime-cpu"): (0.5, 2.0),  # 2 ms vs 4 ms at batch 1
                    ("host / cpu", 8, "onnxruntime-cpu"): (0.25, 4.0),  # 4 ms vs 16 ms
                    ("orin / cuda:0 NVIDIA Jetson Orin Nano", 8, "tensorrt"): (0.25, 4.0)}  # 2.5 ms vs 10 ms
        assert got.keys() == expected.keys()
        for key, (latency, throughput) in expected.items():
            assert got[key] == (pytest.approx(latency), pytest.approx(throughput))

    def test_skipped_results_and_groups_without_a_baseline_give_no_ratio(self):
        rows = result_rows([_report("host", [_ok("onnxruntime-cpu", 1, 2.0),
                                             skipped("decoder", "torch", "fp32", "cpu", 1, "torch not installed")])])
        assert ratios(rows) == []

    def test_another_baseline_and_one_ratio_per_baseline_variant(self):
        rows = result_rows([_report("host", [_ok("torch", 4, 8.0), _ok("torch", 4, 4.0, note="torch.compile"),
                                             _ok("onnxruntime-cpu", 4, 2.0)])])
        by_base = {e["baseline"]: e["latency_ratio"] for e in ratios(rows)}
        assert by_base == pytest.approx({"torch": 0.25, "torch (torch.compile)": 0.5})
        assert [e["latency_ratio"] for e in ratios(rows, baseline_backend="onnxruntime-cpu")] == pytest.approx([4.0, 2.0])

    def test_ratios_table_has_one_line_per_ratio(self, two_reports):
        assert len(ratios_table(ratios(result_rows(two_reports))).strip().splitlines()) == 2 + 3


class TestPlot:
    def test_writes_a_png_that_pillow_opens(self, two_reports, tmp_path):
        pytest.importorskip("matplotlib", reason="plots need matplotlib, an optional dependency")
        from PIL import Image

        plot(result_rows(two_reports), tmp_path / "plots" / "bench.png")
        with Image.open(tmp_path / "plots" / "bench.png") as image:
            assert image.format == "PNG"
            assert image.size[0] > image.size[1]  # two panels side by side

    def test_only_skipped_rows_is_refused(self, tmp_path):
        pytest.importorskip("matplotlib", reason="plots need matplotlib, an optional dependency")
        rows = result_rows([_report("host", [skipped("decoder", "torch", "fp32", "cpu", 1, "torch not installed")])])
        with pytest.raises(BadInputError, match="nothing to plot"):
            plot(rows, tmp_path / "bench.png")
        assert not (tmp_path / "bench.png").exists()

    def test_without_matplotlib_the_error_says_how_to_get_it(self, two_reports, tmp_path, monkeypatch):
        from gvtool.errors import BackendUnavailableError

        monkeypatch.setitem(sys.modules, "matplotlib", None)  # an import of it raises ImportError
        monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
        monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
        with pytest.raises(BackendUnavailableError, match="pip install matplotlib"):
            plot(result_rows(two_reports), tmp_path / "bench.png")


# --- what a report records -----------------------------------------------------------------------

class TestEnvironment:
    def test_machine_info_has_the_documented_keys(self):
        info = machine_info()
        assert set(info) == {"host", "cpu", "logical_cores", "usable_cores", "platform", "python"}
        assert all(isinstance(info[k], str) for k in ("host", "cpu", "platform", "python"))
        assert isinstance(info["logical_cores"], int) and isinstance(info["usable_cores"], int)

    def test_library_versions_names_every_library(self):
        versions = library_versions()
        assert set(versions) == set(LIBRARIES)
        assert all(isinstance(v, str) and v for v in versions.values())

    def test_cuda_devices_from_cuda_python(self, monkeypatch):
        monkeypatch.setattr("gvtool.runtime.gpu.import_cudart", lambda: make_fake_cudart(device_count=2))
        assert cuda_devices_info() == [
            {"index": i, "name": "NVIDIA Jetson Orin Nano", "compute_capability": "8.7", "driver": 12060} for i in (0, 1)]

    def test_cuda_devices_is_empty_without_a_driver(self, monkeypatch):
        monkeypatch.setattr("gvtool.runtime.gpu.import_cudart",
                            lambda: make_fake_cudart(count_error="cudaErrorInsufficientDriver"))
        assert cuda_devices_info() == []

    def test_cuda_devices_is_empty_without_cuda_python(self, monkeypatch):
        from gvtool.errors import BackendUnavailableError
        from gvtool.runtime import gpu

        def missing():
            raise BackendUnavailableError(gpu.CUDA_PYTHON_HINT)

        monkeypatch.setattr(gpu, "import_cudart", missing)
        assert cuda_devices_info() == []

    def test_bundle_info_names_the_bundle_its_manifest_hash_and_model(self, tmp_path):
        model = {"kind": "vae", "conditional": False, "num_classes": 0, "data_kind": "vector", "item_shape": [2],
                 "latent_dim": 4}
        write_manifest(tmp_path, Manifest(gvtool_version="0.1.0", model=model, pixels=None, source={}))
        assert bundle_info(tmp_path) == {"path": str(tmp_path), "model": model | {"class_names": [], "latent_prior": [],
                                                                                  "decoding": ["decoder"]},
                                         "manifest_sha256": sha256_file(tmp_path / "manifest.json")}

    def test_the_date_is_iso_8601_utc(self):
        assert datetime.fromisoformat(utc_now()).utcoffset() == timedelta(0)

    def test_bench_modules_import_with_torch_blocked(self, tmp_path):
        code = ("import sys; sys.modules['torch'] = None; import gvtool.bench.core, gvtool.bench.report; "
                "print(sorted(m for m in sys.modules if m.startswith(('gvtool.train', 'gvtool.export', 'matplotlib'))))")
        result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                                env=os.environ | {"PYTHONPATH": str(REPO)})
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "[]"
