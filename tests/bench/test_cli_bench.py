"""`gvtool bench [BUNDLE]` and `gvtool bench report A.json B.json` through click's test runner, on the tiny
bundles of export_fixtures.py, plus one run in a subprocess with torch blocked.

Every run uses `--iterations 2 --warmup-ms 0` and batches of at most 3: these tests check what a report
records and how cases are skipped, never how fast anything is (STYLE rule 12). The one full run (every
graph, backend, precision and two batch sizes) is made once per module and read by many tests.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
from click.testing import CliRunner
from PIL import Image

import gvtool
from cli_helpers import error_line, said
from export_fixtures import tiny_bundle, tiny_run  # noqa: F401
from gvtool.cli import main
from gvtool.manifest import MANIFEST_FILE, read_manifest
from gvtool.bench.core import cuda_devices_info, load_report, save_report
from gvtool.bench.cases import ROUNDS
from runtime_helpers import copy_bundle, edit_manifest

REPO = Path(__file__).resolve().parents[2]
FAST = ("--iterations", "2", "--warmup-ms", "0")
GRAPHS = ("decoder", "encoder")
BATCHES = (1, 3)
BACKENDS = ("onnxruntime-cpu", "tensorrt", "torch")  # as the report labels them on the CPU
PRECISIONS = ("fp32", "fp16", "int8")
WIDE = {"COLUMNS": "400"}  # rich wraps at 80 columns off a terminal; wide, every table row stays one line


def invoke(*args, env=None):
    # catch_exceptions=False: anything but a SystemExit surfaces as the test's own traceback
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False, env=env)


def ok(result):
    assert result.exit_code == 0, result.output
    return result


def by_key(report) -> dict[tuple, object]:
    """{(device, graph, backend, precision, batch): result}; a repeated key would be lost, so callers compare counts."""
    return {(r.device, r.graph, r.backend, r.precision, r.batch): r for r in report.results}


@pytest.fixture(scope="module")
def bundle(tiny_bundle):
    return lambda name: tiny_bundle(name)[0]


@pytest.fixture(scope="module")
def full(bundle, tmp_path_factory):
    """The full run on the vaegan bundle: (result, report, folder of r.json/r.md/r.png, bundle, (start, end) UTC)."""
    folder = tmp_path_factory.mktemp("bench-full")
    vaegan = bundle("vaegan")
    started = datetime.now(timezone.utc).replace(microsecond=0)
    result = invoke("bench", vaegan, "--graph", "decoder,encoder", "--batch-sizes", "1,3",
                    "--backend", "onnxruntime,tensorrt,torch", "--precision", "fp32,fp16,int8", *FAST,
                    "--json", folder / "r.json", "--markdown", folder / "r.md", "--plot", folder / "r.png", env=WIDE)
    finished = datetime.now(timezone.utc)
    report = load_report(folder / "r.json") if result.exit_code == 0 else None
    return result, report, folder, vaegan, (started, finished)


@pytest.fixture
def report(full):
    ok(full[0])
    return full[1]


@pytest.fixture(scope="module")
def gan_run(bundle, tmp_path_factory):
    """Both graphs of the gan bundle (a decoder only) with onnxruntime and torch: (result, report)."""
    out = tmp_path_factory.mktemp("bench-gan") / "r.json"
    result = invoke("bench", bundle("gan"), "--graph", "decoder,encoder", "--batch-sizes", "1",
                    "--backend", "onnxruntime,torch", "--precision", "fp32", *FAST, "--json", out)
    return result, load_report(out) if result.exit_code == 0 else None


def gan_results(gan_run):
    """The gan run's results, after checking it exited 0."""
    ok(gan_run[0])
    return gan_run[1].results


@pytest.fixture(scope="module")
def merged(full, tmp_path_factory):
    """The full run's report saved twice, as measured on "desk" and on "jetson", then merged."""
    ok(full[0])
    report, tmp_path = full[1], tmp_path_factory.mktemp("bench-merge")
    paths = []
    for label in ("desk", "jetson"):
        paths.append(tmp_path / f"{label}.json")
        save_report(dataclasses.replace(report, machine=report.machine | {"label": label}), paths[-1])
    result = invoke("bench", "report", *paths, "--markdown", tmp_path / "m.md", "--plot", tmp_path / "m.png",
                    env=WIDE)
    return result, report, tmp_path


class TestFullRun:
    def test_exits_zero(self, full):
        ok(full[0])

    def test_a_result_for_every_device_graph_backend_precision_and_batch(self, report):
        expected = {("cpu", g, b, p, n) for g in GRAPHS for b in BACKENDS for p in PRECISIONS for n in BATCHES}
        assert set(by_key(report)) == expected
        assert len(report.results) == len(expected)

    def test_onnxruntime_cpu_results_are_ok_with_throughput_from_p50(self, report):
        results = [r for r in report.results if r.backend == "onnxruntime-cpu"]
        assert len(results) == len(GRAPHS) * len(PRECISIONS) * len(BATCHES)
        for r in results:
            assert r.status == "ok", r
            s = r.latency
            assert 0 < s.min <= s.p50 <= s.p90 <= s.p99 <= s.max
            assert s.min <= s.mean <= s.max
            assert r.items_per_s == pytest.approx(r.batch / s.p50, rel=1e-12)

    def test_tensorrt_on_the_cpu_is_skipped_because_it_needs_a_gpu(self, report):
        results = [r for r in report.results if r.backend == "tensorrt"]
        assert len(results) == len(GRAPHS) * len(PRECISIONS) * len(BATCHES)
        for r in results:
            assert r.status == "skipped" and r.latency is None
            assert "GPU" in r.reason

    def test_torch_fp16_and_int8_are_skipped_because_the_baseline_is_the_fp32_checkpoint(self, report):
        results = [r for r in report.results if r.backend == "torch" and r.precision != "fp32"]
        assert len(results) == len(GRAPHS) * 2 * len(BATCHES)
        for r in results:
            assert r.status == "skipped"
            assert "fp32 checkpoint" in r.reason

    def test_torch_fp32_ran_eager_since_the_run_is_here(self, report):
        results = [r for r in report.results if r.backend == "torch" and r.precision == "fp32"]
        assert len(results) == len(GRAPHS) * len(BATCHES)
        for r in results:
            assert r.status == "ok", r.reason
            assert r.note == "eager"
            assert r.items_per_s == pytest.approx(r.batch / r.latency.p50, rel=1e-12)

    def test_latency_counts_exactly_the_requested_iterations(self, report):
        assert report.settings["iterations"] == 2
        assert {r.latency.iterations for r in report.results if r.status == "ok"} == {2}

    def test_flops_per_item_come_from_the_manifest_and_gflops_from_throughput(self, full, report):
        manifest = read_manifest(full[3])
        ran = [r for r in report.results if r.status == "ok"]
        assert ran
        for r in ran:
            flops = manifest.graphs[f"{r.graph}.{r.precision}"].flops_per_item
            assert flops and r.flops_per_item == flops
            assert r.gflops == pytest.approx(flops * r.items_per_s / 1e9, rel=1e-12)

    def test_the_cpu_peak_is_a_positive_number(self, report):
        assert set(report.peaks) == {"cpu"}
        assert isinstance(report.peaks["cpu"], float) and report.peaks["cpu"] > 0

    def test_the_machine_names_its_cpu_and_cores(self, report):
        machine = report.machine
        assert isinstance(machine["cpu"], str) and machine["cpu"]
        assert machine["logical_cores"] == os.cpu_count()
        assert 1 <= machine["usable_cores"] <= machine["logical_cores"]
        # what the CUDA driver lists, on a machine with GPUs or without ([] then)
        assert machine["gpus"] == cuda_devices_info()
        assert all(set(g) == {"index", "name", "compute_capability", "driver"} for g in machine["gpus"])

    def test_the_versions_are_those_installed(self, report):
        assert report.versions["numpy"] == np.__version__
        assert report.versions["onnxruntime"] == onnxruntime.__version__
        assert report.versions["gvtool"] == gvtool.__version__

    def test_the_bundle_is_named_with_the_sha256_of_its_manifest(self, full, report):
        bundle = full[3]
        assert report.bundle["path"] == str(bundle)
        assert report.bundle["manifest_sha256"] == hashlib.sha256((bundle / MANIFEST_FILE).read_bytes()).hexdigest()
        assert report.bundle["model"] == read_manifest(bundle).model.to_dict()

    def test_the_date_is_utc_and_within_the_run(self, full, report):
        started, finished = full[4]
        date = datetime.fromisoformat(report.date)
        assert date.utcoffset() == timedelta(0)
        assert started <= date <= finished

    def test_the_settings_are_those_given(self, report):
        assert report.settings == {"warmup_s": 0.0, "duration_s": 3.0, "iterations": 2, "batch_sizes": [1, 3],
                                   "rounds": ROUNDS}

    def test_the_markdown_has_one_table_line_per_result(self, full, report):
        lines = [line for line in (full[2] / "r.md").read_text(encoding="utf-8").splitlines() if line.startswith("|")]
        assert len(lines) == 2 + len(report.results)  # the header and its rule first

    def test_the_plot_opens_with_pillow(self, full, report):
        with Image.open(full[2] / "r.png") as png:
            assert png.format == "PNG"
            png.load()

    def test_the_printed_table_has_a_row_per_result_and_names_the_files(self, full, report):
        rows = [line for line in full[0].stdout.splitlines() if " cpu " in line and any(g in line for g in GRAPHS)]
        assert len(rows) == len(report.results)
        for name in ("r.json", "r.md", "r.png"):
            assert f"wrote {full[2] / name}" in said(full[0])


class TestBundleWithoutEncoder:
    def test_the_run_exits_zero(self, gan_run):
        ok(gan_run[0])

    def test_encoder_cases_are_skipped_because_the_bundle_has_no_encoder(self, gan_run):
        encoder = [r for r in gan_results(gan_run) if r.graph == "encoder"]
        assert len(encoder) == 2  # onnxruntime and torch, fp32, batch 1
        for r in encoder:
            assert r.status == "skipped"
            assert "has no encoder" in r.reason

    def test_decoder_cases_are_measured(self, gan_run):
        decoder = [r for r in gan_results(gan_run) if r.graph == "decoder"]
        assert len(decoder) == 2 and {r.status for r in decoder} == {"ok"}

    def test_a_skipped_onnxruntime_case_has_the_label_of_a_measured_one(self, gan_run):
        backends = {r.graph: r.backend for r in gan_results(gan_run) if r.backend != "torch"}
        assert backends == {"decoder": "onnxruntime-cpu", "encoder": "onnxruntime-cpu"}


class TestRunNotOnThisMachine:
    def test_torch_is_skipped_naming_the_run_and_onnxruntime_still_measured(self, bundle, tmp_path):
        moved = copy_bundle(bundle("vaegan"), tmp_path / "bundle")
        gone = tmp_path / "runs" / "gone"
        edit_manifest(moved, lambda raw: raw["source"].update(run_dir=str(gone)))
        out = tmp_path / "r.json"
        ok(invoke("bench", moved, "--graph", "decoder", "--batch-sizes", "1", "--backend", "onnxruntime,torch",
                  "--precision", "fp32", *FAST, "--json", out))
        results = {r.backend: r for r in load_report(out).results}
        assert set(results) == {"onnxruntime-cpu", "torch"}
        assert results["torch"].status == "skipped"
        assert str(gone) in results["torch"].reason
        assert results["onnxruntime-cpu"].status == "ok"


class TestReportMerge:
    def test_exits_zero(self, merged):
        ok(merged[0])

    def test_the_table_has_the_rows_of_both_reports(self, merged):
        result, report, _ = merged
        for label in ("desk", "jetson"):
            rows = [line for line in ok(result).stdout.splitlines() if f"{label} / cpu" in line]
            assert len(rows) == len(report.results), label

    def test_the_markdown_has_the_rows_of_both_reports(self, merged):
        result, report, folder = merged
        ok(result)
        text = (folder / "m.md").read_text(encoding="utf-8")
        for label in ("desk", "jetson"):
            assert sum(line.startswith(f"| {label} / cpu |") for line in text.splitlines()) == len(report.results)

    def test_the_plot_opens_with_pillow(self, merged):
        ok(merged[0])
        with Image.open(merged[2] / "m.png") as png:
            assert png.format == "PNG"
            png.load()


class TestBadInput:
    @pytest.mark.parametrize("option, value, expected", [
        ("--backend", "cuda-magic", "unknown --backend cuda-magic"),
        ("--precision", "fp8", "unknown --precision fp8"),
        ("--graph", "generator", "unknown --graph generator"),
        ("--batch-sizes", "1,x", "--batch-sizes must be comma-separated integers"),
        ("--batch-sizes", "0", "--batch-sizes must be positive"),
    ])
    def test_a_bad_option_is_one_error_line(self, bundle, option, value, expected):
        line = error_line(invoke("bench", bundle("vaegan"), option, value, *FAST))
        assert expected in line

    def test_a_zero_duration_is_a_usage_error_with_exit_code_2(self, bundle):
        result = invoke("bench", bundle("vaegan"), "--duration-s", "0")
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output
        assert "Invalid value for '--duration-s'" in said(result)

    def test_an_unknown_device_is_one_error_line(self, bundle):
        line = error_line(invoke("bench", bundle("vaegan"), "--device", "tpu", "--backend", "onnxruntime",
                                 "--precision", "fp32", "--graph", "decoder", "--batch-sizes", "1", *FAST))
        assert "--device" in line and "tpu" in line

    def test_a_missing_report_file_is_named(self, tmp_path):
        line = error_line(invoke("bench", "report", tmp_path / "missing.json"))
        assert f"no bench report at {tmp_path / 'missing.json'}" in line

    @pytest.mark.parametrize("content", ['{"hello": 1}', "not json at all", "[]"])
    def test_a_file_that_is_not_a_report_is_named(self, tmp_path, content):
        path = tmp_path / "other.json"
        path.write_text(content, encoding="utf-8")
        line = error_line(invoke("bench", "report", path))
        assert f"{path} is not" in line

    def test_no_bundle_and_no_bundles_folder_says_to_export_one(self, tmp_path, monkeypatch):
        monkeypatch.chdir(tmp_path)
        line = error_line(invoke("bench", *FAST))
        assert "no bundle under bundles" in line and "gvtool export" in line


class TestRouting:
    def test_bench_help_lists_run_and_report(self):
        result = ok(invoke("bench", "--help"))
        assert "report" in result.stdout and "run" in result.stdout

    def test_bench_report_help_describes_merging(self):
        result = ok(invoke("bench", "report", "--help"))
        assert "Merge results" in result.stdout

    def test_a_bundle_path_goes_to_the_run_command(self, bundle):
        # the run command's own check answers, not click's "No such command"
        line = error_line(invoke("bench", bundle("vaegan"), "--graph", "generator"))
        assert "unknown --graph generator" in line

    def test_an_option_before_the_bundle_goes_to_the_run_command(self, bundle):
        line = error_line(invoke("bench", "--graph", "generator", bundle("vaegan")))
        assert "unknown --graph generator" in line


class TestWithoutTorch:
    def test_an_onnxruntime_only_run_exits_zero_and_loads_no_torch_baseline(self, bundle, tmp_path):
        env = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        # at exit, list the gvtool layers that would have needed torch: the baseline lives in export/
        code = ("import sys, atexit; sys.modules['torch'] = None; "
                "atexit.register(lambda: print('LOADED', sorted(m for m in sys.modules "
                "if m.startswith(('gvtool.export', 'gvtool.train'))), file=sys.stderr)); "
                "from gvtool.cli import main; main()")
        result = subprocess.run([sys.executable, "-c", code, "bench", str(bundle("vaegan")), "--backend", "onnxruntime",
                                 "--iterations", "1", "--warmup-ms", "0", "--graph", "decoder", "--batch-sizes", "1",
                                 "--json", "r.json"],
                                cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert "LOADED []" in result.stderr
        assert {r.status for r in load_report(tmp_path / "r.json").results} == {"ok"}
