"""The bundle manifest (stdlib only): its JSON round trip, reading with every refusal, file checks, writing.

These tests build bundles by hand from a few bytes per "graph": no torch, no ONNX.
"""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from gvtool.errors import BadBundleError
from gvtool.manifest import (FORMAT, MANIFEST_FILE, EngineEntry, GraphEntry, Manifest, TensorSpec, Validation,
                             is_bundle, read_manifest, sha256_file, verify_file, write_manifest)

ENCODER_BYTES = b"encoder graph bytes"
DECODER_BYTES = b"decoder graph bytes, a little longer"
ENGINE_BYTES = b"engine bytes"


def _graph(graph: str, precision: str, file: str, content: bytes) -> GraphEntry:
    if graph == "encoder":
        inputs = (TensorSpec("images", "float32", ("batch", 1, 16, 16)),)
        outputs = (TensorSpec("mean", "float32", ("batch", 4)), TensorSpec("logvar", "float32", ("batch", 4)))
    else:
        inputs = (TensorSpec("latents", "float32", ("batch", 4)), TensorSpec("labels", "int64", ("batch",)))
        outputs = (TensorSpec("images", "float32", ("batch", 1, 16, 16)),)
    return GraphEntry(graph=graph, precision=precision, file=file, sha256=hashlib.sha256(content).hexdigest(),
                      bytes=len(content), opset=17, ir_version=8, inputs=inputs, outputs=outputs,
                      validation=Validation(max_abs_diff=1.5e-7, mean_abs_diff=2e-8, metric="max_abs", tolerance=1e-4,
                                            passed=True, batch_sizes=(1, 16), inputs="seeded N(0, I) latents"))


def make_manifest() -> Manifest:
    encoder = _graph("encoder", "fp32", "encoder.onnx", ENCODER_BYTES)
    decoder = _graph("decoder", "fp16", "decoder.fp16.onnx", DECODER_BYTES)
    engine = EngineEntry(graph_key="decoder.fp16", precision="fp16", file="engines/decoder.fp16.engine",
                         sha256=hashlib.sha256(ENGINE_BYTES).hexdigest(), bytes=len(ENGINE_BYTES),
                         profile={"min": 1, "opt": 8, "max": 64}, tensorrt_version="10.3.0",
                         gpu_name="Orin", compute_capability="8.7", dla_core=None)
    return Manifest(gvtool_version="0.1.0",
                    model={"kind": "vaegan", "conditional": True, "num_classes": 4, "class_names": ["0", "1", "2", "3"],
                           "data_kind": "image", "item_shape": [1, 16, 16], "latent_dim": 4},
                    pixels={"scale": 127.5, "offset": -1.0, "channels": 1},
                    source={"run_dir": "/runs/x", "checkpoint_sha256": "ab" * 32, "step": 4},
                    graphs={encoder.key: encoder, decoder.key: decoder}, engines={"decoder.fp16": engine})


@pytest.fixture
def bundle(tmp_path):
    """A complete hand-made bundle: two graph files, one engine, the manifest."""
    folder = tmp_path / "bundle"
    (folder / "engines").mkdir(parents=True)
    (folder / "encoder.onnx").write_bytes(ENCODER_BYTES)
    (folder / "decoder.fp16.onnx").write_bytes(DECODER_BYTES)
    (folder / "engines" / "decoder.fp16.engine").write_bytes(ENGINE_BYTES)
    write_manifest(folder, make_manifest())
    return folder


def rewrite(bundle, change) -> None:
    """Edit the bundle's manifest.json as a dict, in place."""
    path = bundle / MANIFEST_FILE
    raw = json.loads(path.read_text())
    change(raw)
    path.write_text(json.dumps(raw))


class TestRoundTrip:
    def test_to_dict_from_dict_round_trips_graphs_and_engines(self):
        manifest = make_manifest()
        assert Manifest.from_dict(json.loads(json.dumps(manifest.to_dict()))) == manifest

    def test_round_trip_keeps_tuples_as_tuples(self):
        back = Manifest.from_dict(json.loads(json.dumps(make_manifest().to_dict())))
        entry = back.graphs["encoder.fp32"]
        assert entry.inputs[0].shape == ("batch", 1, 16, 16)
        assert entry.validation.batch_sizes == (1, 16)

    def test_validation_scale_round_trips_and_defaults_to_none_in_older_manifests(self):
        scaled = Validation(0.1, 0.01, "max_abs", 0.02, False, (1, 16), "latents", scale=(0.7, 2.8))
        assert Validation.from_dict(json.loads(json.dumps(scaled.to_dict()))) == scaled
        older = {k: v for k, v in scaled.to_dict().items() if k != "scale"}
        assert Validation.from_dict(older).scale == ()

    def test_to_dict_records_the_format_version(self):
        assert make_manifest().to_dict()["format"] == FORMAT

    def test_graph_key_is_graph_dot_precision(self):
        assert set(make_manifest().graphs) == {"encoder.fp32", "decoder.fp16"}
        assert all(key == entry.key for key, entry in make_manifest().graphs.items())

    def test_graph_lookup_names_what_the_bundle_has(self):
        manifest = make_manifest()
        assert manifest.graph("decoder", "fp16").file == "decoder.fp16.onnx"
        with pytest.raises(BadBundleError, match="no decoder graph in int8; it has encoder.fp32, decoder.fp16"):
            manifest.graph("decoder", "int8")


class TestReadManifest:
    def test_reads_what_write_manifest_wrote(self, bundle):
        assert read_manifest(bundle) == make_manifest()

    def test_refuses_a_missing_folder(self, tmp_path):
        with pytest.raises(BadBundleError, match="not a folder"):
            read_manifest(tmp_path / "nowhere")

    def test_refuses_a_folder_without_manifest_as_incomplete(self, bundle):
        (bundle / MANIFEST_FILE).unlink()
        with pytest.raises(BadBundleError, match="not a complete bundle"):
            read_manifest(bundle)
        assert not is_bundle(bundle)

    def test_refuses_invalid_json(self, bundle):
        (bundle / MANIFEST_FILE).write_text('{"format": 1, "graphs": ')
        with pytest.raises(BadBundleError, match="not valid JSON"):
            read_manifest(bundle)

    @pytest.mark.parametrize("version", [FORMAT + 1, 0, "1", None])
    def test_refuses_an_unknown_format_naming_it_and_the_one_it_reads(self, bundle, version):
        rewrite(bundle, lambda raw: raw.update(format=version))
        with pytest.raises(BadBundleError) as caught:
            read_manifest(bundle)
        assert f"format {version!r}" in str(caught.value)
        assert f"this gvtool reads format {FORMAT}" in str(caught.value)

    def test_refuses_a_manifest_that_is_not_an_object(self, bundle):
        (bundle / MANIFEST_FILE).write_text("[1, 2]")
        with pytest.raises(BadBundleError, match="format None"):
            read_manifest(bundle)

    @pytest.mark.parametrize("change", [
        pytest.param(lambda raw: raw.pop("model"), id="no-model"),
        pytest.param(lambda raw: raw.pop("source"), id="no-source"),
        pytest.param(lambda raw: raw["graphs"]["encoder.fp32"].pop("sha256"), id="entry-without-sha256"),
        pytest.param(lambda raw: raw["graphs"]["encoder.fp32"].update(colour="red"), id="entry-with-unknown-key"),
        pytest.param(lambda raw: raw["graphs"].update({"encoder.fp32": "encoder.onnx"}), id="entry-is-a-string"),
        pytest.param(lambda raw: raw["graphs"]["encoder.fp32"].update(inputs=3), id="inputs-not-a-list"),
        pytest.param(lambda raw: raw["graphs"]["encoder.fp32"]["inputs"][0].pop("dtype"), id="spec-without-dtype"),
        pytest.param(lambda raw: raw["graphs"]["encoder.fp32"].update(validation=None), id="validation-null"),
        pytest.param(lambda raw: raw["graphs"]["encoder.fp32"]["validation"].pop("batch_sizes"),
                     id="validation-without-batch-sizes"),
        pytest.param(lambda raw: raw["engines"]["decoder.fp16"].pop("profile"), id="engine-without-profile"),
    ])
    def test_refuses_malformed_entries(self, bundle, change):
        rewrite(bundle, change)
        with pytest.raises(BadBundleError, match="is malformed"):
            read_manifest(bundle)

    @pytest.mark.parametrize("section", ["graphs", "engines"])
    def test_refuses_a_section_that_is_a_list(self, bundle, section):
        rewrite(bundle, lambda raw: raw.update({section: []}))
        with pytest.raises(BadBundleError):
            read_manifest(bundle)

    @pytest.mark.parametrize("name", [5, None])
    def test_refuses_a_file_name_that_is_not_a_string(self, bundle, name):
        rewrite(bundle, lambda raw: raw["graphs"]["encoder.fp32"].update(file=name))
        with pytest.raises(BadBundleError):
            read_manifest(bundle)


class TestFileNamesStayInside:
    @pytest.mark.parametrize("name", ["../x.onnx", "/etc/passwd", "engines/../../x.onnx", "..", "a\\..\\x.onnx", ""])
    def test_refuses_a_graph_file_name_that_leaves_the_bundle(self, bundle, name):
        rewrite(bundle, lambda raw: raw["graphs"]["encoder.fp32"].update(file=name))
        with pytest.raises(BadBundleError, match="outside the bundle"):
            read_manifest(bundle)

    def test_refuses_an_engine_file_name_that_leaves_the_bundle(self, bundle):
        rewrite(bundle, lambda raw: raw["engines"]["decoder.fp16"].update(file="../../engine"))
        with pytest.raises(BadBundleError, match="outside the bundle"):
            read_manifest(bundle)

    def test_refuses_a_symlink_inside_the_bundle_that_points_outside(self, bundle, tmp_path):
        outside = tmp_path / "elsewhere.onnx"
        outside.write_bytes(ENCODER_BYTES)
        (bundle / "encoder.onnx").unlink()
        os.symlink(outside, bundle / "encoder.onnx")
        with pytest.raises(BadBundleError, match="resolves to"):
            read_manifest(bundle)

    def test_accepts_a_symlink_that_stays_inside(self, bundle):
        (bundle / "encoder.onnx").rename(bundle / "real.onnx")
        os.symlink("real.onnx", bundle / "encoder.onnx")
        assert verify_file(bundle, "encoder.onnx", make_manifest().graphs["encoder.fp32"].sha256).name == "real.onnx"

    def test_accepts_a_file_in_a_subfolder(self, bundle):
        assert read_manifest(bundle).engines["decoder.fp16"].file == "engines/decoder.fp16.engine"


class TestVerifyFile:
    def test_returns_the_path_of_an_unchanged_file(self, bundle):
        entry = make_manifest().graphs["encoder.fp32"]
        assert verify_file(bundle, entry.file, entry.sha256) == (bundle / "encoder.onnx").resolve()

    def test_detects_one_changed_byte(self, bundle):
        entry = make_manifest().graphs["decoder.fp16"]
        data = bytearray((bundle / entry.file).read_bytes())
        data[3] ^= 0x01
        (bundle / entry.file).write_bytes(bytes(data))
        with pytest.raises(BadBundleError, match="sha256") as caught:
            verify_file(bundle, entry.file, entry.sha256)
        assert "re-export" in str(caught.value)

    def test_detects_a_missing_file(self, bundle):
        entry = make_manifest().graphs["encoder.fp32"]
        (bundle / entry.file).unlink()
        with pytest.raises(BadBundleError, match="lacks encoder.onnx"):
            verify_file(bundle, entry.file, entry.sha256)

    def test_refuses_a_name_that_leaves_the_bundle(self, bundle):
        with pytest.raises(BadBundleError, match="outside the bundle"):
            verify_file(bundle, "../bundle/encoder.onnx", sha256_file(bundle / "encoder.onnx"))


class TestWriteManifest:
    def test_leaves_no_temporary_file(self, bundle):
        write_manifest(bundle, make_manifest())  # over an existing manifest too
        assert sorted(p.name for p in bundle.iterdir()) == ["decoder.fp16.onnx", "encoder.onnx", "engines",
                                                             MANIFEST_FILE]

    def test_makes_the_folder_a_bundle(self, tmp_path):
        assert not is_bundle(tmp_path)
        write_manifest(tmp_path, make_manifest())
        assert is_bundle(tmp_path)

    def test_writes_plain_json(self, bundle):
        raw = json.loads((bundle / MANIFEST_FILE).read_text(encoding="utf-8"))
        assert raw["format"] == FORMAT
        assert raw["graphs"]["encoder.fp32"]["inputs"][0]["shape"] == ["batch", 1, 16, 16]


class TestGraphKeys:
    def test_refuses_a_key_that_disagrees_with_its_entry(self, bundle):
        def swap(raw):
            raw["graphs"]["decoder.fp32"] = raw["graphs"].pop("encoder.fp32")
        rewrite(bundle, swap)
        with pytest.raises(BadBundleError, match="disagree"):
            read_manifest(bundle)
