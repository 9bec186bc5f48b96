"""Hostile and damaged manifests: every one is refused with one clear line and exit code 1, never a traceback.

The named cases are those a hostile-user probe found; the fuzz loop mutates a valid manifest at random (seeded)
and requires that `gvtool info` and `gvtool sample` either work or fail with one `error:` line.
"""

from __future__ import annotations

import copy
import json
import os
import random

import pytest
from click.testing import CliRunner

from cli_helpers import error_line
from export_fixtures import tiny_bundle, tiny_run  # noqa: F401
from gvtool.cli import main
from gvtool.manifest import MANIFEST_FILE, MAX_MANIFEST_BYTES
from runtime_helpers import copy_bundle

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def set_at(path, value):
    def change(raw):
        target = raw
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return change


def drop(path):
    def change(raw):
        target = raw
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]
    return change


CASES = {
    "model is a string": (set_at(["model"], "vaegan"), "manifest.model must be dict"),
    "model lacks kind": (drop(["model", "kind"]), "model.kind is missing"),
    "latent_dim is a string": (set_at(["model", "latent_dim"], "16"), "model.latent_dim must be int"),
    "latent_dim is 1e12": (set_at(["model", "latent_dim"], 10**12), "model.latent_dim must be from 1 to 4096"),
    "latent_dim is a float": (set_at(["model", "latent_dim"], 16.0), "model.latent_dim must be int"),
    "latent_dim disagrees with the graphs": (set_at(["model", "latent_dim"], 5), "but model.latent_dim is 5"),
    "pixels null on an image model": (set_at(["pixels"], None), "pixels is missing"),
    "pixels scale zero": (set_at(["pixels", "scale"], 0), "pixels.scale must be a finite positive number"),
    "num_classes is a string": (set_at(["model", "num_classes"], "x"), "model.num_classes must be int"),
    "sha256 is an integer": (lambda raw: set_at(["graphs", next(iter(raw["graphs"])), "sha256"], 12)(raw), "sha256 must be str"),
    "a graph is a list": (lambda raw: set_at(["graphs", next(iter(raw["graphs"]))], [])(raw), "must be an object"),
    "item_shape of 4 axes": (set_at(["model", "item_shape"], [1, 2, 3, 4]), "model.item_shape must be"),
    "unknown kind": (set_at(["model", "kind"], "diffusion"), "model.kind must be one of vaegan, vae, gan"),
    "conditional without classes": (set_at(["model", "conditional"], True), "does not fit conditional"),
    "engines a list": (set_at(["engines"], []), "manifest.engines must be dict"),
    "model with an unknown key": (set_at(["model", "temperature"], 0.7), "model has unknown keys ['temperature']"),
}


@pytest.fixture
def bundle(tiny_bundle, tmp_path):
    return copy_bundle(tiny_bundle("vaegan")[0], tmp_path / "b")


def rewrite(bundle, text: str) -> None:
    (bundle / MANIFEST_FILE).write_text(text, encoding="utf-8")


def both_refuse(bundle, tmp_path) -> list[str]:
    """`info` and `sample` on the bundle: each must fail with one line; the lines."""
    return [error_line(invoke("info", bundle)),
            error_line(invoke("sample", bundle, "--n", 4, "--out", tmp_path / "s.png", "--device", "cpu"))]


class TestNamedCases:
    @pytest.mark.parametrize("name", CASES)
    def test_each_is_one_line_naming_the_field(self, bundle, tmp_path, name):
        change, expected = CASES[name]
        raw = json.loads((bundle / MANIFEST_FILE).read_text())
        change(raw)
        rewrite(bundle, json.dumps(raw))
        for line in both_refuse(bundle, tmp_path):
            assert "is malformed" in line and expected in line, line

    def test_nan_is_not_a_number_gvtool_writes(self, bundle, tmp_path):
        raw = json.loads((bundle / MANIFEST_FILE).read_text())
        raw["pixels"]["scale"] = float("nan")
        rewrite(bundle, json.dumps(raw))  # json.dumps writes NaN
        for line in both_refuse(bundle, tmp_path):
            assert "not valid JSON: NaN is not a JSON number" in line

    def test_100000_nested_brackets_are_refused_before_parsing(self, bundle, tmp_path):
        rewrite(bundle, "[" * 100_000 + "]" * 100_000)
        for line in both_refuse(bundle, tmp_path):
            assert "nests its brackets over 32 deep" in line

    def test_a_manifest_larger_than_any_gvtool_writes_is_not_read(self, bundle, tmp_path):
        text = (bundle / MANIFEST_FILE).read_text()
        rewrite(bundle, text[:-2] + " " * MAX_MANIFEST_BYTES + text[-2:])
        for line in both_refuse(bundle, tmp_path):
            assert "far larger than any bundle manifest gvtool writes" in line

    def test_text_that_is_not_utf8(self, bundle, tmp_path):
        (bundle / MANIFEST_FILE).write_bytes(b'{"format": 1, "x": "\xff\xfe"}')
        for line in both_refuse(bundle, tmp_path):
            assert "is not UTF-8 text" in line

    def test_a_manifest_symlinked_out_of_the_bundle_is_not_followed(self, bundle, tmp_path):
        outside = tmp_path / "elsewhere.json"
        os.replace(bundle / MANIFEST_FILE, outside)
        os.symlink(outside, bundle / MANIFEST_FILE)
        for line in both_refuse(bundle, tmp_path):
            assert "outside the bundle" in line


MUTANTS = [None, "x", "16", -1, 0, 1, 10**12, 1.5, True, [], {}, [1, "a"], {"a": None}, "batch", "../x.onnx", "0" * 64]


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _paths(item, (*prefix, i))


class TestFuzz:
    def test_random_mutations_either_work_or_fail_with_one_line(self, bundle, tmp_path):
        original = json.loads((bundle / MANIFEST_FILE).read_text())
        paths = [p for p in _paths(original) if p]
        rng = random.Random(13)
        failures = 0
        for round_ in range(150):
            raw = copy.deepcopy(original)
            for _ in range(rng.choice([1, 1, 2, 3])):
                path = rng.choice(paths)
                try:
                    parent = raw
                    for key in path[:-1]:
                        parent = parent[key]
                    if rng.random() < 0.2 and isinstance(parent, dict):
                        parent.pop(path[-1], None)
                    else:
                        parent[path[-1]] = copy.deepcopy(rng.choice(MUTANTS))
                except (KeyError, IndexError, TypeError):
                    continue  # an earlier mutation replaced this path's parent
            rewrite(bundle, json.dumps(raw))
            for args in (("info", bundle), ("sample", bundle, "--n", 2, "--out", tmp_path / "s.png", "--device", "cpu")):
                result = invoke(*args)
                assert "Traceback" not in result.output, (round_, args[0], result.output[-1500:])
                assert result.exception is None or isinstance(result.exception, SystemExit), (
                    round_, args[0], repr(result.exception), json.dumps(raw)[:500])
                if result.exit_code:
                    error_line(result)
                    failures += 1
        assert failures > 100  # most mutations break something: the loop exercised the refusals


class TestExternalData:
    def test_a_graph_that_pulls_unlisted_files_from_the_bundle_is_refused(self, tiny_bundle, tmp_path):
        import onnx

        from gvtool.manifest import sha256_file

        bundle = copy_bundle(tiny_bundle("gan")[0], tmp_path / "b")
        model = onnx.load(str(bundle / "decoder.onnx"))
        onnx.save_model(model, str(bundle / "decoder.onnx"), save_as_external_data=True, location="weights.bin",
                        size_threshold=0)
        assert (bundle / "weights.bin").is_file()
        raw = json.loads((bundle / MANIFEST_FILE).read_text())
        raw["graphs"]["decoder.fp32"].update(sha256=sha256_file(bundle / "decoder.onnx"),
                                             bytes=(bundle / "decoder.onnx").stat().st_size)
        rewrite(bundle, json.dumps(raw))  # the graph's own hash matches; weights.bin is in no manifest
        line = error_line(invoke("sample", bundle, "--n", 2, "--out", tmp_path / "s.png", "--device", "cpu"))
        assert "onnxruntime cannot load decoder.onnx" in line
