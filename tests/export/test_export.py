"""Export: a run -> a bundle of ONNX graphs (fp32, fp16, int8) validated against torch, with its manifest.

The runs and bundles come from export_fixtures.py: an unconditional vaegan, a conditional vaegan,
a gan (decoder only) and a ring8 vector vaegan, each trained for 1 tiny epoch and exported once.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from export_fixtures import (BUNDLE_PRECISIONS, IMAGE_RUNS, RUNS, copy_run, leftovers, snapshot,  # noqa: F401
                             tiny_bundle, tiny_run)
from gvtool.errors import BadInputError, ExportValidationError
from gvtool.export import validate
from gvtool.export.bundle import WEIGHT_ONLY_INT8, export_bundle
from gvtool.export.contract import contract
from gvtool.train.trained import load_run
from gvtool.export.onnx_export import DEFAULT_OPSET, IR_VERSION
from gvtool.export.validate import TOLERANCES, cpu_session
from gvtool.train.graphs import graph_modules
from gvtool.manifest import CHAINS, MANIFEST_FILE, read_manifest, sha256_file
from gvtool.train import rundir
from gvtool.train.checkpoint import read_meta
from gvtool.train.data import PIXEL_OFFSET, PIXEL_SCALE

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NAMES = tuple(RUNS)
GRAPHS_OF = {name: CHAINS[RUNS[name][1]].graphs for name in NAMES}
# Every (bundle, graph key) the shared bundles hold, e.g. ("vaegan", "encoder.fp16").
KEYS = [(name, f"{graph}.{precision}") for name in NAMES for graph in GRAPHS_OF[name]
        for precision in BUNDLE_PRECISIONS[name]]
KEY_IDS = [f"{name}-{key}" for name, key in KEYS]
INT8_KEYS = [(name, key) for name, key in KEYS if key.endswith(".int8")]
# the graphs with static int8 activations (Q/DQ around them); the others' int8 is weight-only (bundle.WEIGHT_ONLY_INT8)
STATIC_INT8_KEYS = [(name, key) for name, key in INT8_KEYS if key.split(".")[0] not in WEIGHT_ONLY_INT8]
FP16_KEYS = [(name, key) for name, key in KEYS if key.endswith(".fp16")]
# --- helpers -----------------------------------------------------------------------------------------


def _value_infos(values) -> list[tuple[str, str, tuple]]:
    """(name, numpy dtype name, shape with dim_param names for symbolic dims) of ONNX graph inputs/outputs."""
    out = []
    for v in values:
        t = v.type.tensor_type
        dims = tuple(d.dim_param if d.HasField("dim_param") else d.dim_value for d in t.shape.dim)
        out.append((v.name, onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name, dims))
    return out


def _spec_tuples(specs) -> list[tuple[str, str, tuple]]:
    return [(s.name, s.dtype, tuple(s.shape)) for s in specs]


def _entry(tiny_bundle, name, key):
    folder, manifest, _ = tiny_bundle(name)
    return folder, manifest, manifest.graphs[key]


def _feed(entry, model, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs for a graph at `batch`: items in the model range, N(0, I) latents, labels cycling the classes."""
    rng = np.random.default_rng(seed)
    feed = {}
    for spec in entry.inputs:
        shape = (batch, *spec.shape[1:])
        if spec.dtype == "int64":
            feed[spec.name] = np.arange(batch, dtype=np.int64) % model.num_classes
        elif spec.name == "images":
            feed[spec.name] = rng.uniform(-1, 1, shape).astype(np.float32)
        else:
            feed[spec.name] = rng.standard_normal(shape).astype(np.float32)
    return feed


def _initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def _qdq_nodes(model: onnx.ModelProto):
    return [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]


def _axis(node) -> int | None:
    return next((a.i for a in node.attribute if a.name == "axis"), None)


# --- the bundle's files ------------------------------------------------------------------------------


class TestBundleContents:
    @pytest.mark.parametrize("name", ["vaegan", "ring8"])
    def test_vae_bundle_holds_encoder_and_decoder_in_fp32_fp16_int8(self, tiny_bundle, name):
        _, manifest, _ = tiny_bundle(name)
        assert set(manifest.graphs) == {f"{g}.{p}" for g in ("encoder", "decoder") for p in ("fp32", "fp16", "int8")}

    def test_gan_bundle_holds_only_the_decoder(self, tiny_bundle):
        _, manifest, _ = tiny_bundle("gan")
        assert set(manifest.graphs) == {"decoder.fp32", "decoder.fp16", "decoder.int8"}

    def test_conditional_decoder_takes_int64_labels(self, tiny_bundle):
        folder, manifest, _ = tiny_bundle("conditional")
        for key in ("decoder.fp32", "decoder.int8"):
            entry = manifest.graphs[key]
            assert [(s.name, s.dtype, s.shape) for s in entry.inputs][1] == ("labels", "int64", ("batch",))
            inputs = _value_infos(onnx.load(str(folder / entry.file)).graph.input)
            assert inputs[1] == ("labels", "int64", ("batch",))

    def test_unconditional_decoder_takes_latents_only(self, tiny_bundle):
        _, manifest, _ = tiny_bundle("vaegan")
        assert [s.name for s in manifest.graphs["decoder.fp32"].inputs] == ["latents"]

    @pytest.mark.parametrize("name,key", KEYS, ids=KEY_IDS)
    def test_file_is_named_after_graph_and_precision(self, tiny_bundle, name, key):
        _, _, entry = _entry(tiny_bundle, name, key)
        assert entry.file == (f"{entry.graph}.onnx" if entry.precision == "fp32" else f"{entry.graph}.{entry.precision}.onnx")

    @pytest.mark.parametrize("name,key", KEYS, ids=KEY_IDS)
    def test_manifest_sha256_and_size_match_the_file(self, tiny_bundle, name, key):
        folder, _, entry = _entry(tiny_bundle, name, key)
        assert sha256_file(folder / entry.file) == entry.sha256
        assert (folder / entry.file).stat().st_size == entry.bytes

    @pytest.mark.parametrize("name", NAMES)
    def test_bundle_holds_the_listed_files_and_the_manifest_only(self, tiny_bundle, name):
        folder, manifest, _ = tiny_bundle(name)
        assert sorted(p.name for p in folder.iterdir()) == sorted([MANIFEST_FILE, *(g.file for g in manifest.graphs.values())])

    @pytest.mark.parametrize("name", NAMES)
    def test_manifest_on_disk_equals_the_returned_one(self, tiny_bundle, name):
        folder, manifest, _ = tiny_bundle(name)
        assert read_manifest(folder) == manifest

    @pytest.mark.parametrize("name", NAMES)
    def test_bundle_has_no_engines_yet(self, tiny_bundle, name):
        assert tiny_bundle(name)[1].engines == {}


class TestOnnxVersions:
    @pytest.mark.parametrize("name,key", KEYS, ids=KEY_IDS)
    def test_file_has_opset_17_and_ir_version_8(self, tiny_bundle, name, key):
        folder, _, entry = _entry(tiny_bundle, name, key)
        model = onnx.load(str(folder / entry.file))
        assert {o.version for o in model.opset_import if o.domain in ("", "ai.onnx")} == {DEFAULT_OPSET} == {17}
        assert model.ir_version == IR_VERSION == 8

    @pytest.mark.parametrize("name,key", KEYS, ids=KEY_IDS)
    def test_manifest_records_opset_17_and_ir_version_8(self, tiny_bundle, name, key):
        _, _, entry = _entry(tiny_bundle, name, key)
        assert (entry.opset, entry.ir_version) == (17, 8)

    def test_another_opset_is_written_and_recorded(self, tiny_run, tmp_path):
        out, manifest = export_bundle(tiny_run("vaegan"), tmp_path / "b", opset=13)
        assert len(manifest.graphs) == 6
        for entry in manifest.graphs.values():
            model = onnx.load(str(out / entry.file))
            assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [13], entry.key
            assert entry.opset == 13
            assert entry.ir_version == model.ir_version <= IR_VERSION


class TestContract:
    @pytest.mark.parametrize("name,key", KEYS, ids=KEY_IDS)
    def test_manifest_specs_equal_the_declared_contract(self, tiny_bundle, name, key):
        _, manifest, entry = _entry(tiny_bundle, name, key)
        from gvtool.train.config import TrainConfig
        from gvtool.train.graphs import graph_modules
        from gvtool.train.models import build_networks

        cfg = TrainConfig.from_file(Path(manifest.source["run_dir"]) / "config.json").model
        assert (entry.inputs, entry.outputs) == contract(graph_modules(cfg, build_networks(cfg))[entry.graph])

    @pytest.mark.parametrize("name,key", KEYS, ids=KEY_IDS)
    def test_file_inputs_equal_the_contract(self, tiny_bundle, name, key):
        folder, _, entry = _entry(tiny_bundle, name, key)
        assert _value_infos(onnx.load(str(folder / entry.file)).graph.input) == _spec_tuples(entry.inputs)

    @pytest.mark.parametrize("name,key", KEYS, ids=KEY_IDS)
    def test_file_outputs_equal_the_contract(self, tiny_bundle, name, key):
        folder, _, entry = _entry(tiny_bundle, name, key)
        assert _value_infos(onnx.load(str(folder / entry.file)).graph.output) == _spec_tuples(entry.outputs)

    @pytest.mark.parametrize("name,key", KEYS, ids=KEY_IDS)
    def test_file_output_names_and_dtypes_equal_the_contract(self, tiny_bundle, name, key):
        folder, _, entry = _entry(tiny_bundle, name, key)
        got = _value_infos(onnx.load(str(folder / entry.file)).graph.output)
        assert [(n, d, s[0]) for n, d, s in got] == [(s.name, s.dtype, "batch") for s in entry.outputs]

    @pytest.mark.parametrize("name", NAMES)
    def test_image_items_are_channels_first_and_vectors_flat(self, tiny_bundle, name):
        _, manifest, _ = tiny_bundle(name)
        item = manifest.graphs[f"{manifest.model.decoding[-1]}.fp32"].outputs[0]
        expected = ("vectors", ("batch", 2)) if RUNS[name][0] == "ring8" else ("images", ("batch", 1, 16, 16))
        assert (item.name, item.shape) == expected


class TestRunsUnderOnnxruntime:
    @pytest.mark.parametrize("batch", [1, 37])
    @pytest.mark.parametrize("name,key", KEYS, ids=KEY_IDS)
    def test_graph_runs_at_batch(self, tiny_bundle, name, key, batch):
        folder, manifest, entry = _entry(tiny_bundle, name, key)
        outputs = cpu_session(folder / entry.file).run(None, _feed(entry, manifest.model, batch))
        assert [o.shape for o in outputs] == [(batch, *s.shape[1:]) for s in entry.outputs]
        assert all(o.dtype == np.float32 and np.isfinite(o).all() for o in outputs)

    @pytest.mark.parametrize("batch", [1, 37])
    @pytest.mark.parametrize("name,key", [(n, k) for n, k in KEYS if k.endswith(".fp32")],
                             ids=[f"{n}-{k}" for n, k in KEYS if k.endswith(".fp32")])
    def test_fp32_matches_the_torch_network_within_tolerance(self, tiny_run, tiny_bundle, name, key, batch):
        folder, manifest, entry = _entry(tiny_bundle, name, key)
        feed = _feed(entry, manifest.model, batch, seed=batch)
        got = cpu_session(folder / entry.file).run(None, feed)
        run = load_run(tiny_run(name))
        net = graph_modules(run.config.model, run.nets)[entry.graph]
        with torch.no_grad():
            want = net(*(torch.from_numpy(a) for a in feed.values()))
        want = want if isinstance(want, tuple) else (want,)
        worst = max(float(np.abs(g - w.numpy()).max()) for g, w in zip(got, want))
        assert worst <= entry.validation.tolerance == TOLERANCES["fp32"][1]

    @pytest.mark.parametrize("name,key", FP16_KEYS, ids=[f"{n}-{k}" for n, k in FP16_KEYS])
    def test_fp16_graph_keeps_float32_inputs_and_outputs(self, tiny_bundle, name, key):
        folder, _, entry = _entry(tiny_bundle, name, key)
        graph = onnx.load(str(folder / entry.file)).graph
        assert [d for _, d, _ in _value_infos(graph.input)] == [s.dtype for s in entry.inputs]
        assert {d for _, d, _ in _value_infos(graph.output)} == {"float32"}

    @pytest.mark.parametrize("name,key", FP16_KEYS, ids=[f"{n}-{k}" for n, k in FP16_KEYS])
    def test_fp16_graph_holds_its_weights_in_float16(self, tiny_bundle, name, key):
        folder, _, entry = _entry(tiny_bundle, name, key)
        dtypes = {a.dtype for a in _initializers(onnx.load(str(folder / entry.file))).values() if a.size > 1}
        assert np.dtype(np.float16) in dtypes and np.dtype(np.float32) not in dtypes


class TestInt8Graph:
    @pytest.mark.parametrize("name,key", STATIC_INT8_KEYS, ids=[f"{n}-{k}" for n, k in STATIC_INT8_KEYS])
    def test_has_quantize_and_dequantize_nodes(self, tiny_bundle, name, key):
        folder, _, entry = _entry(tiny_bundle, name, key)
        ops = {n.op_type for n in onnx.load(str(folder / entry.file)).graph.node}
        assert {"QuantizeLinear", "DequantizeLinear"} <= ops

    @pytest.mark.parametrize("name,key", INT8_KEYS, ids=[f"{n}-{k}" for n, k in INT8_KEYS])
    def test_zero_points_are_zero(self, tiny_bundle, name, key):
        folder, _, entry = _entry(tiny_bundle, name, key)
        model = onnx.load(str(folder / entry.file))
        inits = _initializers(model)
        zero_points = [inits[n.input[2]] for n in _qdq_nodes(model)]
        assert zero_points and all((z == 0).all() for z in zero_points)

    @pytest.mark.parametrize("name,key", STATIC_INT8_KEYS, ids=[f"{n}-{k}" for n, k in STATIC_INT8_KEYS])
    def test_activations_are_quantized_to_signed_int8(self, tiny_bundle, name, key):
        folder, _, entry = _entry(tiny_bundle, name, key)
        model = onnx.load(str(folder / entry.file))
        inits = _initializers(model)
        quantize = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
        assert quantize and {inits[n.input[2]].dtype for n in quantize} == {np.dtype(np.int8)}

    @pytest.mark.parametrize("name,key", INT8_KEYS, ids=[f"{n}-{k}" for n, k in INT8_KEYS])
    def test_weights_are_quantized_per_channel(self, tiny_bundle, name, key):
        folder, _, entry = _entry(tiny_bundle, name, key)
        model = onnx.load(str(folder / entry.file))
        inits = _initializers(model)
        weights = [n for n in model.graph.node if n.op_type == "DequantizeLinear"
                   and n.input[0] in inits and inits[n.input[0]].dtype == np.int8 and inits[n.input[0]].ndim >= 2]
        assert weights
        for node in weights:
            axis, scale = _axis(node), inits[node.input[1]]
            assert axis is not None, node.name
            assert scale.ndim == 1 and len(scale) == inits[node.input[0]].shape[axis], node.name


class TestInt8FloatOutput:
    """to_int8(float_last_conv=True), as a translation model's decoders take it: the conv that writes the pixels keeps
    its float weights (and runs in float on its dequantized input), the others are quantized."""

    def _convs(self, tmp_path, float_last_conv):
        from gvtool.export.onnx_export import export_onnx
        from gvtool.export.variants import to_int8
        from gvtool.manifest import TensorSpec

        net = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 3, 3, padding=1))
        src, dst = tmp_path / "net.onnx", tmp_path / f"net.{float_last_conv}.onnx"
        export_onnx(net, (TensorSpec("x", "float32", ("batch", 2, 8, 8)),),
                    (TensorSpec("y", "float32", ("batch", 3, 8, 8)),), src)
        rng = np.random.default_rng(0)
        to_int8(src, dst, [{"x": rng.standard_normal((4, 2, 8, 8)).astype(np.float32)} for _ in range(2)],
                float_last_conv=float_last_conv)
        model = onnx.load(str(dst))
        made_by = {out: n.op_type for n in model.graph.node for out in n.output}
        return [[made_by.get(name, "initializer") for name in n.input[:2]] for n in model.graph.node
                if n.op_type == "Conv"]

    def test_the_last_conv_stays_float(self, tmp_path):
        first, last = self._convs(tmp_path, True)
        assert first == ["DequantizeLinear", "DequantizeLinear"]  # input and weights quantized
        assert last[1] == "initializer"  # float weights

    def test_without_it_every_conv_is_quantized(self, tmp_path):
        assert self._convs(tmp_path, False) == [["DequantizeLinear", "DequantizeLinear"]] * 2

    def test_a_translation_models_decoders_take_it(self):
        from gvtool.export.bundle import INT8_FLOAT_OUTPUT

        assert {("cyclevae", "decoder"), ("cyclevae", "decoder_b")} <= INT8_FLOAT_OUTPUT


class TestValidationRecord:
    @pytest.mark.parametrize("name,key", KEYS, ids=KEY_IDS)
    def test_manifest_records_a_passed_validation(self, tiny_bundle, name, key):
        _, _, entry = _entry(tiny_bundle, name, key)
        v = entry.validation
        assert (v.metric, v.tolerance) == TOLERANCES[entry.precision]
        assert 0 <= v.mean_abs_diff <= v.max_abs_diff < float("inf")
        assert v.passed is True
        assert (v.mean_abs_diff if v.metric == "mean_abs" else v.max_abs_diff) <= v.tolerance

    @pytest.mark.parametrize("name,key", KEYS, ids=KEY_IDS)
    def test_validated_at_batch_1_and_16(self, tiny_bundle, name, key):
        assert _entry(tiny_bundle, name, key)[2].validation.batch_sizes == (1, 16)

    @pytest.mark.parametrize("name", NAMES)
    def test_vector_decoders_are_judged_in_data_stds_everything_else_as_is(self, tiny_run, tiny_bundle, name):
        _, manifest, _ = tiny_bundle(name)
        std = load_run(tiny_run(name)).config.model.vector_std
        for entry in manifest.graphs.values():
            vector_items = entry.graph in ("decoder", "coarse", "detail") and manifest.model.data_kind == "vector"
            assert entry.validation.scale == (std if vector_items else ())
        assert (len(std) == 2) == (RUNS[name][0] == "ring8")

    def test_scale_divides_the_differences_per_feature(self, tiny_bundle):
        folder, manifest, entry = _entry(tiny_bundle, "ring8", "decoder.fp32")
        session = cpu_session(folder / entry.file)
        feeds = [_feed(entry, manifest.model, 16)]
        offset = np.array([0.05, -0.1], dtype=np.float32)  # off by 0.05 and 0.1 in data units

        def reference(feed):
            return [session.run(None, feed)[0] + offset]

        raw = validate.validate_graph(folder / entry.file, entry.outputs, reference, feeds, "fp16", "test")
        scaled = validate.validate_graph(folder / entry.file, entry.outputs, reference, feeds, "fp16", "test",
                                         scale=(5.0, 10.0))
        assert raw.max_abs_diff == pytest.approx(0.1, abs=1e-6) and not raw.passed
        assert scaled.max_abs_diff == pytest.approx(0.01, abs=1e-6) and scaled.passed
        assert scaled.mean_abs_diff == pytest.approx(0.01, abs=1e-6) and scaled.scale == (5.0, 10.0)

    def test_a_log_variance_is_judged_as_the_std_it_gives(self, tiny_bundle):
        folder, manifest, entry = _entry(tiny_bundle, "vaegan", "encoder.fp32")
        session = cpu_session(folder / entry.file)
        feeds = [_feed(entry, manifest.model, 16)]
        mean, logvar = session.run(None, feeds[0])

        def reference(shift, at):  # the graph's own outputs, its log-variance set to `at` and then moved by `shift`
            return lambda feed: [session.run(None, feed)[0], np.full_like(logvar, at + shift)]

        def check(shift, at):
            graph = folder / "lv.onnx"
            import onnx
            from onnx import helper

            model = onnx.load(folder / entry.file)  # the same graph, its logvar replaced by the constant `at`
            const = helper.make_node("ConstantOfShape", ["shape_of_lv"], ["lv_const"],
                                     value=helper.make_tensor("v", onnx.TensorProto.FLOAT, [1], [at]))
            shape = helper.make_node("Shape", ["logvar_raw"], ["shape_of_lv"])
            for node in model.graph.node:
                node.output[:] = ["logvar_raw" if o == "logvar" else o for o in node.output]
            model.graph.node.extend([shape, const, helper.make_node("Identity", ["lv_const"], ["logvar"])])
            onnx.save(model, graph)
            return validate.validate_graph(graph, entry.outputs, reference(shift, at), feeds, "fp32", "test")

        # -11 against -11.4: a std of 0.0041 against 0.0034, the same near-zero noise
        assert check(0.4, -11.0).max_abs_diff < 1e-3
        # 0 against 0.4: a std of 1 against 1.22, a real difference
        assert check(0.4, 0.0).max_abs_diff == pytest.approx(np.exp(0.2) - 1, rel=1e-5)

    @pytest.mark.parametrize("name", ["vaegan", "ring8"])
    def test_encoder_validated_on_held_out_items(self, tiny_bundle, name):
        _, manifest, _ = tiny_bundle(name)
        assert manifest.graphs["encoder.fp32"].validation.inputs.startswith("held-out items of ")

    @pytest.mark.parametrize("name", NAMES)
    def test_sampling_graphs_validated_on_seeded_noise_through_the_chain(self, tiny_bundle, name):
        _, manifest, _ = tiny_bundle(name)
        first, *rest = manifest.model.sampling
        assert manifest.graphs[f"{first}.fp32"].validation.inputs == "seeded N(0, I) latents"
        for i, graph in enumerate(rest, start=1):
            through = " -> ".join(manifest.model.sampling[:i])
            assert manifest.graphs[f"{graph}.fp32"].validation.inputs == f"seeded N(0, I) noise through {through}"

    @pytest.mark.parametrize("name", NAMES)
    def test_log_has_one_line_per_graph_and_precision(self, tiny_bundle, name):
        _, manifest, lines = tiny_bundle(name)
        for entry in manifest.graphs.values():
            assert sum(line.startswith(f"{entry.graph} {entry.precision}: ") and line.endswith(" ok") for line in lines) == 1


class TestModelInfo:
    @pytest.mark.parametrize("name", IMAGE_RUNS)
    def test_image_bundle_records_the_pixel_mapping(self, tiny_bundle, name):
        pixels = tiny_bundle(name)[1].pixels
        assert (pixels["scale"], pixels["offset"], pixels["channels"]) == (PIXEL_SCALE, PIXEL_OFFSET, 1) == (127.5, -1.0, 1)

    def test_vector_bundle_has_no_pixel_mapping(self, tiny_bundle):
        assert tiny_bundle("ring8")[1].pixels is None

    @pytest.mark.parametrize("name,expected", [
        ("vaegan", {"kind": "vaegan", "conditional": False, "num_classes": 0, "data_kind": "image", "item_shape": [1, 16, 16]}),
        ("conditional", {"kind": "vaegan", "conditional": True, "num_classes": 4, "data_kind": "image",
                         "item_shape": [1, 16, 16]}),
        ("gan", {"kind": "gan", "conditional": False, "num_classes": 0, "data_kind": "image", "item_shape": [1, 16, 16]}),
        ("ring8", {"kind": "vaegan", "conditional": False, "num_classes": 0, "data_kind": "vector", "item_shape": [2]}),
    ])
    def test_model_info(self, tiny_bundle, name, expected):
        model = tiny_bundle(name)[1].model.to_dict()
        assert {k: model[k] for k in expected} == expected
        assert model["latent_dim"] == 4

    def test_conditional_bundle_names_its_classes(self, tiny_bundle):
        assert tiny_bundle("conditional")[1].model.class_names == ("0", "1", "2", "3")

    def test_source_run_dir_is_the_resolved_run_folder(self, tiny_run, tmp_path, monkeypatch):
        run = tiny_run("gan")
        monkeypatch.chdir(run.parent)
        _, manifest = export_bundle(run.name, tmp_path / "b", precisions=("fp32",))  # a relative path
        assert manifest.source["run_dir"] == str(run.resolve())

    @pytest.mark.parametrize("name", NAMES)
    def test_source_records_checkpoint_hash_and_step(self, tiny_run, tiny_bundle, name):
        checkpoint = tiny_run(name) / rundir.CHECKPOINT_FILE
        source = tiny_bundle(name)[1].source
        assert source["checkpoint_sha256"] == sha256_file(checkpoint)
        assert (source["step"], source["complete"]) == (read_meta(checkpoint)["step"], True)


class TestBadInput:
    def test_missing_run_folder(self, tmp_path):
        with pytest.raises(BadInputError, match="no run folder at"):
            export_bundle(tmp_path / "nowhere", tmp_path / "b")

    def test_run_folder_without_checkpoint(self, tiny_run, tmp_path):
        run = copy_run(tiny_run("vaegan"), tmp_path / "half", without=(rundir.CHECKPOINT_FILE,))
        with pytest.raises(BadInputError, match=f"has no {rundir.CHECKPOINT_FILE}"):
            export_bundle(run, tmp_path / "b")
        assert not (tmp_path / "b").exists()

    def test_corrupted_checkpoint_names_the_file(self, tiny_run, tmp_path):
        run = copy_run(tiny_run("vaegan"), tmp_path / "bad")
        (run / rundir.CHECKPOINT_FILE).write_bytes(b"\x13garbage, not safetensors" * 40)
        with pytest.raises(BadInputError) as caught:
            export_bundle(run, tmp_path / "b")
        assert str(run / rundir.CHECKPOINT_FILE) in str(caught.value)
        assert not (tmp_path / "b").exists()

    @pytest.mark.parametrize("precisions", [("fp8",), ("fp32", "fp8"), ()])
    def test_unknown_precision(self, tiny_run, tmp_path, precisions):
        with pytest.raises(BadInputError, match="unknown --precision"):
            export_bundle(tiny_run("gan"), tmp_path / "b", precisions=precisions)

    def test_opset_below_13(self, tiny_run, tmp_path):
        with pytest.raises(BadInputError, match="--opset 12 is too old"):
            export_bundle(tiny_run("gan"), tmp_path / "b", opset=12)


class TestDestination:
    def test_bundle_of_another_run_is_refused_and_left_untouched(self, tiny_run, tiny_bundle, tmp_path):
        other = tmp_path / "b"
        shutil.copytree(tiny_bundle("gan")[0], other)
        before = snapshot(other)
        with pytest.raises(BadInputError, match="holds another bundle"):
            export_bundle(tiny_run("vaegan"), other)
        assert snapshot(other) == before
        assert leftovers(tmp_path) == []

    def test_non_empty_folder_that_is_not_a_bundle_is_refused(self, tiny_run, tmp_path):
        (tmp_path / "b").mkdir()
        (tmp_path / "b" / "notes.txt").write_text("mine")
        with pytest.raises(BadInputError, match="no bundle"):
            export_bundle(tiny_run("gan"), tmp_path / "b")
        assert snapshot(tmp_path / "b") == {"notes.txt": b"mine"}

    def test_a_file_is_refused(self, tiny_run, tmp_path):
        (tmp_path / "b").write_text("mine")
        with pytest.raises(BadInputError, match="is a file"):
            export_bundle(tiny_run("gan"), tmp_path / "b")

    def test_empty_folder_is_used(self, tiny_run, tmp_path):
        (tmp_path / "b").mkdir()
        out, _ = export_bundle(tiny_run("gan"), tmp_path / "b", precisions=("fp32",))
        assert read_manifest(out).graphs.keys() == {"decoder.fp32"}

    def test_same_run_replaces_its_bundle_cleanly(self, tiny_run, tmp_path):
        run = tiny_run("gan")
        export_bundle(run, tmp_path / "b", precisions=("fp32", "int8"))
        assert (tmp_path / "b" / "decoder.int8.onnx").is_file()
        out, manifest = export_bundle(run, tmp_path / "b", precisions=("fp32",))
        assert set(manifest.graphs) == set(read_manifest(out).graphs) == {"decoder.fp32"}
        assert sorted(p.name for p in out.iterdir()) == ["decoder.onnx", MANIFEST_FILE]
        assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]

    def test_default_destination_is_bundles_run_name(self, tiny_run, tmp_path, monkeypatch):
        monkeypatch.chdir(tmp_path)
        out, _ = export_bundle(tiny_run("gan"), precisions=("fp32",))
        assert out == Path("bundles", "gan")
        assert read_manifest(tmp_path / "bundles" / "gan").graphs.keys() == {"decoder.fp32"}


class TestValidationFailure:
    @pytest.fixture
    def strict_fp16(self, monkeypatch):
        """fp16 must match torch exactly, which it never does: its validation fails."""
        monkeypatch.setitem(validate.TOLERANCES, "fp16", ("max_abs", 0.0))

    def test_raises_naming_graph_precision_and_tolerance(self, tiny_run, tmp_path, strict_fp16):
        with pytest.raises(ExportValidationError, match=r"decoder fp16 differs from torch: max abs \S+ > tolerance 0"):
            export_bundle(tiny_run("gan"), tmp_path / "b", precisions=("fp32", "fp16"))

    def test_leaves_no_bundle_and_no_temporary_folder(self, tiny_run, tmp_path, strict_fp16):
        with pytest.raises(ExportValidationError):
            export_bundle(tiny_run("gan"), tmp_path / "b", precisions=("fp32", "fp16"))
        assert list(tmp_path.iterdir()) == []

    def test_leaves_an_existing_bundle_intact(self, tiny_run, tmp_path, monkeypatch):
        run = tiny_run("gan")
        export_bundle(run, tmp_path / "b", precisions=("fp32",))
        before = snapshot(tmp_path / "b")
        monkeypatch.setitem(validate.TOLERANCES, "fp16", ("max_abs", 0.0))
        with pytest.raises(ExportValidationError):
            export_bundle(run, tmp_path / "b", precisions=("fp32", "fp16"))
        assert snapshot(tmp_path / "b") == before
        assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]

    def test_allow_mismatch_writes_the_bundle_and_records_the_failure(self, tiny_run, tmp_path, strict_fp16):
        lines = []
        out, manifest = export_bundle(tiny_run("gan"), tmp_path / "b", precisions=("fp32", "fp16"),
                                      allow_mismatch=True, log=lines.append)
        v = read_manifest(out).graphs["decoder.fp16"].validation
        assert (v.passed, v.tolerance) == (False, 0.0) and v.max_abs_diff > 0
        assert manifest.graphs["decoder.fp32"].validation.passed is True
        assert any(line.startswith("decoder fp16:") and line.endswith("MISMATCH") for line in lines)


@pytest.fixture(scope="module")
def npz_run(tmp_path_factory, unlabelled_npz, make_train_config, one_torch_thread):
    """A run trained on its own copy of the npz: (run folder, that npz). Tests set the npz up as they need."""
    from gvtool.train.loop import train

    folder = tmp_path_factory.mktemp("own-data")
    npz = folder / "own.npz"
    shutil.copy(unlabelled_npz, npz)
    train(make_train_config(str(npz)), folder / "run")
    return folder / "run", npz


@pytest.fixture(scope="module")
def exported_without_data(npz_run, tmp_path_factory):
    """The npz_run exported after its npz was deleted: (bundle, manifest, log lines)."""
    run, npz = npz_run
    npz.unlink(missing_ok=True)
    lines = []
    out, manifest = export_bundle(run, tmp_path_factory.mktemp("no-data") / "b", log=lines.append)
    return out, manifest, lines


class TestMissingTrainingData:
    def test_still_exports_every_graph(self, exported_without_data):
        out, manifest, _ = exported_without_data
        assert set(read_manifest(out).graphs) == {f"{g}.{p}" for g in ("encoder", "decoder") for p in ("fp32", "fp16", "int8")}
        assert all(g.validation.passed for g in manifest.graphs.values())

    def test_validates_the_encoder_on_generated_items(self, exported_without_data):
        _, manifest, _ = exported_without_data
        for precision in ("fp32", "fp16", "int8"):
            assert manifest.graphs[f"encoder.{precision}"].validation.inputs == "generated items (training data unavailable)"
            assert manifest.graphs[f"decoder.{precision}"].validation.inputs == "seeded N(0, I) latents"

    def test_says_the_data_is_unavailable(self, exported_without_data, npz_run):
        _, _, lines = exported_without_data
        assert any("unavailable" in line and str(npz_run[1]) in line for line in lines)

    def test_training_data_of_another_shape_is_refused_or_replaced(self, npz_run, tmp_path):
        run, npz = npz_run
        np.savez(npz, x=np.zeros((40, 20, 20), dtype=np.uint8))  # the same file now holds 20x20 images
        _, manifest = export_bundle(run, tmp_path / "b", precisions=("fp32",))
        assert manifest.graphs["encoder.fp32"].validation.inputs.startswith("generated items")


class TestFp16OfConditionalDecoder:
    """onnxconverter-common retypes Cast(one_hot(labels)) to float16 but leaves its to=FLOAT (#320)."""

    def test_conditional_decoder_exports_in_fp16(self, tiny_run, tmp_path):
        _, manifest = export_bundle(tiny_run("conditional"), tmp_path / "b", precisions=("fp16",))
        assert manifest.graphs["decoder.fp16"].validation.passed


class TestDefaultPrecisions:
    def test_images_get_every_variant_and_vectors_no_int8(self):
        from gvtool.export.bundle import default_precisions

        assert default_precisions("image") == ("fp32", "fp16", "int8")
        assert default_precisions("vector") == ("fp32", "fp16")

    def test_a_vector_run_exported_without_precisions_has_no_int8_and_says_why(self, tiny_run, tmp_path):
        lines = []
        _, manifest = export_bundle(tiny_run("ring8"), tmp_path / "b", log=lines.append)
        assert {entry.precision for entry in manifest.graphs.values()} == {"fp32", "fp16"}
        assert any("int8 not written for vector data" in line for line in lines)
