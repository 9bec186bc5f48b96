"""`gvtool export` and `gvtool info` through click's test runner, on the tiny runs of export_fixtures.py."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil

import pytest
from click.testing import CliRunner

from export_fixtures import copy_run, leftovers, tiny_bundle, tiny_run  # noqa: F401
from gvtool.cli import main
from gvtool.export import validate
from gvtool.manifest import MANIFEST_FILE, read_manifest
from gvtool.train import rundir
from cli_helpers import error_line, said

pytestmark = pytest.mark.usefixtures("one_torch_thread")

KEYS = [f"{g}.{p}" for g in ("encoder", "decoder") for p in ("fp32", "fp16", "int8")]
WIDE = {"COLUMNS": "200"}  # rich tables take the terminal's width; 80 without a terminal


def invoke(*args, env=None):
    # catch_exceptions=False: anything but a SystemExit surfaces as the test's own traceback
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False, env=env)


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
    """`gvtool export RUN --out B` on the unconditional vaegan run: (B, result)."""
    out = tmp_path_factory.mktemp("cli-export") / "b"
    return out, invoke("export", tiny_run("vaegan"), "--out", out)


class TestExportCommand:
    def test_exits_0(self, exported):
        _, result = exported
        assert result.exit_code == 0, result.output

    def test_prints_a_line_for_each_graph_and_precision(self, exported):
        _, result = exported
        lines = result.stderr.splitlines()
        for key in KEYS:
            graph, precision = key.split(".")
            assert sum(line.startswith(f"{graph} {precision}: ") and line.endswith(" ok") for line in lines) == 1, key

    def test_prints_the_bundle_and_its_graph_count(self, exported):
        out, result = exported
        assert f"bundle {out}: 6 graphs" in said(result)

    def test_writes_a_complete_bundle(self, exported):
        out, _ = exported
        assert set(read_manifest(out).graphs) == set(KEYS)

    def test_without_argument_exports_the_newest_run_into_bundles_run_name(self, tiny_run, tmp_path, monkeypatch):
        newer = copy_run(tiny_run("gan"), tmp_path / "runs" / "newer")
        older = copy_run(tiny_run("gan"), tmp_path / "runs" / "older")
        stamp = (newer / rundir.CHECKPOINT_FILE).stat().st_mtime - 3600
        os.utime(older / rundir.CHECKPOINT_FILE, (stamp, stamp))
        monkeypatch.chdir(tmp_path)
        result = invoke("export")
        assert result.exit_code == 0, result.output
        assert sorted(p.name for p in (tmp_path / "bundles").iterdir()) == ["newer"]
        assert read_manifest(tmp_path / "bundles" / "newer").source["run_dir"] == str(newer.resolve())

    def test_precision_fp32_writes_only_fp32_graphs(self, tiny_run, tmp_path):
        result = invoke("export", tiny_run("vaegan"), "--out", tmp_path / "b", "--precision", "fp32")
        assert result.exit_code == 0, result.output
        assert set(read_manifest(tmp_path / "b").graphs) == {"encoder.fp32", "decoder.fp32"}
        assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["decoder.onnx", "encoder.onnx", MANIFEST_FILE]

    def test_bundle_without_trt_exits_1_telling_to_pass_trt(self, tiny_bundle):
        bundle = tiny_bundle("gan")[0]
        assert "pass --trt" in error_line(invoke("export", bundle))

    def test_min_batch_above_max_batch_exits_1_before_any_export_work(self, tiny_run, tmp_path, monkeypatch):
        import gvtool.export.bundle

        calls = []
        monkeypatch.setattr(gvtool.export.bundle, "export_bundle", lambda *a, **k: calls.append(a))
        result = invoke("export", tiny_run("gan"), "--out", tmp_path / "b", "--min-batch", 8, "--max-batch", 4)
        assert "--min-batch <= --opt-batch <= --max-batch, got 8 / 8 / 4" in error_line(result)
        assert calls == [] and list(tmp_path.iterdir()) == []

    def test_unknown_precision_exits_1(self, tiny_run, tmp_path):
        result = invoke("export", tiny_run("gan"), "--out", tmp_path / "b", "--precision", "fp32,fp8")
        assert "unknown --precision fp8" in error_line(result)
        assert list(tmp_path.iterdir()) == []

    def test_missing_run_exits_1(self, tmp_path):
        assert "no run folder at" in error_line(invoke("export", tmp_path / "nowhere", "--out", tmp_path / "b"))

    def test_no_run_under_runs_exits_1(self, tmp_path, monkeypatch):
        monkeypatch.chdir(tmp_path)
        assert "no run with a checkpoint under runs" in error_line(invoke("export"))

    def test_validation_failure_exits_1_and_writes_nothing(self, tiny_run, tmp_path, monkeypatch):
        monkeypatch.setitem(validate.TOLERANCES, "fp16", ("max_abs", 0.0))
        result = invoke("export", tiny_run("gan"), "--out", tmp_path / "b", "--precision", "fp32,fp16")
        assert "decoder fp16 differs from torch" in error_line(result)
        assert list(tmp_path.iterdir()) == []

    def test_allow_mismatch_exits_0_and_flags_the_graph(self, tiny_run, tmp_path, monkeypatch):
        monkeypatch.setitem(validate.TOLERANCES, "fp16", ("max_abs", 0.0))
        result = invoke("export", tiny_run("gan"), "--out", tmp_path / "b", "--precision", "fp32,fp16", "--allow-mismatch")
        assert result.exit_code == 0, result.output
        assert any(line.startswith("decoder fp16:") and line.endswith("MISMATCH") for line in result.stderr.splitlines())
        assert read_manifest(tmp_path / "b").graphs["decoder.fp16"].validation.passed is False

    def test_replacing_a_bundle_leaves_no_temporary_folder(self, tiny_run, tmp_path):
        for _ in range(2):
            assert invoke("export", tiny_run("gan"), "--out", tmp_path / "b", "--precision", "fp32").exit_code == 0
        assert leftovers(tmp_path) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["b"]

    @pytest.mark.skipif(importlib.util.find_spec("gvtool.export.trt_build") is None, reason="trt_build not yet written")
    @pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed here")
    def test_trt_without_tensorrt_exits_1_with_one_error_line(self, tiny_run, tmp_path):
        result = invoke("export", tiny_run("gan"), "--out", tmp_path / "b", "--precision", "fp32", "--trt")
        assert "TensorRT" in error_line(result)
        assert not (tmp_path / "b").exists()  # checked before the export, not after it

    def test_int8_export_prints_no_quantizer_axis_warning(self, tiny_run, tmp_path):
        import subprocess
        import sys

        done = subprocess.run([sys.executable, "-m", "gvtool", "export", str(tiny_run("conditional")), "--out",
                               str(tmp_path / "b"), "--precision", "int8"], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        assert "out-of-range" not in done.stderr and "WARNING" not in done.stderr

    def test_conditional_run_exports_without_a_traceback(self, tiny_run, tmp_path):
        result = CliRunner().invoke(main, ["export", str(tiny_run("conditional")), "--out", str(tmp_path / "b")])
        assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
        assert "Traceback" not in result.output


@pytest.fixture(scope="module")
def info(tiny_bundle):
    """`gvtool info` on the vaegan bundle in a 200-column terminal: (manifest, result)."""
    folder, manifest, _ = tiny_bundle("vaegan")
    return manifest, invoke("info", folder, env=WIDE)


@pytest.fixture
def bundle_copy(tiny_bundle, tmp_path):
    """A copy of the gan bundle that a test may damage."""
    return shutil.copytree(tiny_bundle("gan")[0], tmp_path / "b")


def _rewrite(bundle, change) -> None:
    raw = json.loads((bundle / MANIFEST_FILE).read_text())
    change(raw)
    (bundle / MANIFEST_FILE).write_text(json.dumps(raw))


class TestInfoCommand:
    def test_exits_0(self, info):
        _, result = info
        assert result.exit_code == 0, result.output

    def test_shows_each_graph_key(self, info):
        _, result = info
        rows = [line for line in result.stdout.splitlines() if line.startswith("│")]
        assert sorted(row.split("│")[1].strip() for row in rows) == sorted(KEYS)

    def test_shows_the_validation_columns(self, info):
        manifest, result = info
        assert all(header in result.stdout for header in ("max|d|", "mean|d|", "check"))
        for key, entry in manifest.graphs.items():
            row = next(line for line in result.stdout.splitlines() if f" {key} " in line)
            v = entry.validation
            assert f"{v.max_abs_diff:.1e}" in row and f"{v.mean_abs_diff:.1e}" in row, row
            assert f"{v.metric.split('_')[0]} <= {v.tolerance:g} ok" in row, row

    def test_shows_the_model_summary(self, info):
        _, result = info
        assert "vaegan, image (1, 16, 16), latent 4" in result.stdout

    def test_says_there_are_no_engines(self, info):
        _, result = info
        assert "no TensorRT engines" in result.stdout

    def test_shows_each_graph_key_at_80_columns(self, tiny_bundle):
        result = invoke("info", tiny_bundle("vaegan")[0], env={"COLUMNS": "80"})
        assert all(key in result.stdout for key in KEYS), result.stdout

    def test_folder_without_manifest_exits_1(self, tmp_path):
        assert "not a complete bundle" in error_line(invoke("info", tmp_path))

    def test_missing_folder_exits_1(self, tmp_path):
        assert "not a folder" in error_line(invoke("info", tmp_path / "nowhere"))

    @pytest.mark.parametrize("change,message", [
        pytest.param(lambda raw: raw.update(format=99), "format 99; this gvtool reads format 1", id="unknown-version"),
        pytest.param(lambda raw: raw["graphs"]["decoder.fp32"].update(file="../../x.onnx"), "outside the bundle",
                     id="file-outside"),
        pytest.param(lambda raw: raw["graphs"]["decoder.fp32"].pop("sha256"), "is malformed", id="entry-without-hash"),
        pytest.param(lambda raw: raw.update(graphs=[]), "is malformed", id="graphs-as-a-list"),
    ])
    def test_tampered_manifest_exits_1(self, bundle_copy, change, message):
        _rewrite(bundle_copy, change)
        assert message in error_line(invoke("info", bundle_copy))

    def test_every_file_shows_its_hash_check(self, info):
        manifest, result = info
        for key in manifest.graphs:
            row = next(line for line in result.stdout.splitlines() if f" {key} " in line)
            assert row.rstrip(" │").endswith("ok"), row

    def test_a_changed_or_missing_file_is_shown_and_exits_1(self, bundle_copy):
        from runtime_helpers import flip_byte

        flip_byte(bundle_copy / "decoder.onnx")
        (bundle_copy / "decoder.fp16.onnx").unlink()
        result = invoke("info", bundle_copy, env=WIDE)
        line = error_line(result)
        assert "2 of the bundle's 3 files do not match its manifest" in line
        assert "decoder.onnx (changed since export)" in line and "decoder.fp16.onnx (missing)" in line
        lines = result.stdout.splitlines()
        rows = {key: next(row for row in lines if f" {key} " in row) for key in ("decoder.fp32", "decoder.int8")}
        assert "changed since export" in rows["decoder.fp32"] and rows["decoder.int8"].rstrip(" │").endswith("ok")

    def test_manifest_that_is_not_json_exits_1(self, bundle_copy):
        (bundle_copy / MANIFEST_FILE).write_text("{ not json")
        assert "not valid JSON" in error_line(invoke("info", bundle_copy))
