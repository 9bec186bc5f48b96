"""The TensorRT engine builder (gvtool/export/trt_build.py), against a fake `tensorrt` that records calls.

What the fake does NOT model, so what these tests never ran for real: TensorRT's parsing of the
ONNX graphs (op support, int64 labels, Q/DQ and fp16 handling under strong typing), engine building
and tactic timing, the real timing-cache format and its mismatch rules, DLA layer placement and
GPU fallback, deserializing the engines, the CUDA calls and their error codes on a real driver, and
the memory cost of a build. TestRealTensorRT covers part of that where tensorrt and a GPU exist.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest

from export_fixtures import tiny_bundle, tiny_run  # noqa: F401
from fake_tensorrt import make_fake_cudart, make_fake_trt
from gvtool.errors import BackendUnavailableError, BadBundleError, BadInputError, ExportValidationError
from gvtool.export.trt_build import TIMING_CACHE, build_engines, engine_file_name, gpu_properties
from gvtool.manifest import GraphEntry, Manifest, TensorSpec, Validation, read_manifest, sha256_file, write_manifest

LATENT, SIDE, CLASSES = 4, 8, 3
ENCODER_IO = ((TensorSpec("images", "float32", ("batch", 1, SIDE, SIDE)),),
              (TensorSpec("mean", "float32", ("batch", LATENT)), TensorSpec("logvar", "float32", ("batch", LATENT))))
DECODER_IO = ((TensorSpec("latents", "float32", ("batch", LATENT)), TensorSpec("labels", "int64", ("batch",))),
              (TensorSpec("images", "float32", ("batch", 1, SIDE, SIDE)),))


def _onnx_bytes(graph: str, precision: str) -> bytes:
    """A real, tiny ONNX model for `graph` (fp32 weights for every precision: the fake never reads them)."""
    try:
        import numpy as np
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:  # the runtime-only install has no onnx; the fake parser takes any bytes
        return f"not onnx: {graph}.{precision}".encode()
    rng = np.random.default_rng(0)
    weight = lambda name, *shape: numpy_helper.from_array(rng.normal(size=shape).astype(np.float32), name)  # noqa: E731
    if graph == "encoder":
        nodes = [helper.make_node("Flatten", ["images"], ["flat"]),
                 helper.make_node("MatMul", ["flat", "w_mean"], ["mean"]),
                 helper.make_node("MatMul", ["flat", "w_logvar"], ["logvar"])]
        inits = [weight("w_mean", SIDE * SIDE, LATENT), weight("w_logvar", SIDE * SIDE, LATENT)]
        inputs, outputs = ENCODER_IO
    else:
        nodes = [helper.make_node("Gather", ["embed", "labels"], ["label_vec"]),
                 helper.make_node("Add", ["latents", "label_vec"], ["h"]),
                 helper.make_node("MatMul", ["h", "w_out"], ["flat"]),
                 helper.make_node("Tanh", ["flat"], ["pixels"]),
                 helper.make_node("Reshape", ["pixels", "shape"], ["images"])]
        inits = [weight("embed", CLASSES, LATENT), weight("w_out", LATENT, SIDE * SIDE),
                 numpy_helper.from_array(np.array([-1, 1, SIDE, SIDE], dtype=np.int64), "shape")]
        inputs, outputs = DECODER_IO
    types = {"float32": TensorProto.FLOAT, "int64": TensorProto.INT64}
    value = lambda t: helper.make_tensor_value_info(t.name, types[t.dtype], list(t.shape))  # noqa: E731
    model = helper.make_model(helper.make_graph(nodes, f"{graph}_{precision}", [value(t) for t in inputs],
                                                [value(t) for t in outputs], inits),
                              opset_imports=[helper.make_opsetid("", 17)], doc_string=f"{graph} {precision}")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def make_bundle(folder, precisions=("fp32", "fp16")):
    """A bundle with encoder and decoder graphs in `precisions` and no engines."""
    folder.mkdir(parents=True, exist_ok=True)
    graphs = {}
    for graph, (inputs, outputs) in (("encoder", ENCODER_IO), ("decoder", DECODER_IO)):
        for precision in precisions:
            file = f"{graph}.onnx" if precision == "fp32" else f"{graph}.{precision}.onnx"
            (folder / file).write_bytes(_onnx_bytes(graph, precision))
            graphs[f"{graph}.{precision}"] = GraphEntry(
                graph=graph, precision=precision, file=file, sha256=sha256_file(folder / file),
                bytes=(folder / file).stat().st_size, opset=17, ir_version=8, inputs=inputs, outputs=outputs,
                validation=Validation(max_abs_diff=1e-6, mean_abs_diff=1e-7, metric="max_abs", tolerance=1e-4,
                                      passed=True, batch_sizes=(1, 16)))
    model = {"kind": "vaegan", "conditional": True, "num_classes": CLASSES, "class_names": None,
             "data_kind": "image", "item_shape": [1, SIDE, SIDE], "latent_dim": LATENT}
    write_manifest(folder, Manifest(gvtool_version="0.1.0", model=model, pixels={"scale": 127.5, "offset": -1.0},
                                    source={"run_dir": "runs/x", "checkpoint_sha256": "0" * 64, "step": 1}, graphs=graphs))
    return folder


@pytest.fixture
def bundle(tmp_path):
    return make_bundle(tmp_path / "bundle")


def build(bundle, trt=None, cudart=None, **options):
    """build_engines with fakes (TensorRT 10.3, one Orin Nano) unless given."""
    return build_engines(bundle, trt=trt or make_fake_trt(), cudart=cudart or make_fake_cudart(), **options)


def configs(trt):
    return [config for builder in trt.builders for config in builder.configs]


def networks(trt):
    return [network for builder in trt.builders for network in builder.networks]


class TestOptions:
    @pytest.mark.parametrize("batches, message", [
        ((0, 8, 64), "--min-batch must be at least 1, got 0"),
        ((8, 8, 4), "--max-batch 4 is smaller than --min-batch 8"),
        ((2, 1, 64), "--opt-batch 1 must lie between --min-batch 2 and --max-batch 64"),
        ((1, 65, 64), "--opt-batch 65 must lie between --min-batch 1 and --max-batch 64"),
    ])
    def test_batch_order_is_checked(self, bundle, batches, message):
        min_batch, opt_batch, max_batch = batches
        trt = make_fake_trt()
        with pytest.raises(BadInputError, match=message):
            build(bundle, trt, min_batch=min_batch, opt_batch=opt_batch, max_batch=max_batch)
        assert trt.builders == []

    def test_workspace_must_be_positive(self, bundle):
        with pytest.raises(BadInputError, match="--workspace-mb must be at least 1"):
            build(bundle, workspace_mb=0)

    def test_negative_dla_core_is_refused(self, bundle):
        with pytest.raises(BadInputError, match="--dla-core must be 0 or more"):
            build(bundle, dla_core=-1)


class TestSelection:
    def test_default_builds_every_graph(self, bundle):
        manifest = build(bundle)
        assert sorted(e.graph_key for e in manifest.engines.values()) == sorted(manifest.graphs)

    def test_only_the_asked_precision_and_graph(self, bundle):
        manifest = build(bundle, graphs=["decoder"], precisions=["fp16"])
        assert [e.graph_key for e in manifest.engines.values()] == ["decoder.fp16"]

    def test_a_precision_the_bundle_lacks_names_what_it_has(self, bundle):
        trt = make_fake_trt()
        with pytest.raises(BadInputError, match=r"no int8 graphs \(it has fp32, fp16\); export with --precision fp32,fp16,int8"):
            build(bundle, trt, precisions=["int8"])
        assert trt.builders == []

    def test_a_graph_the_bundle_lacks_names_what_it_has(self, bundle):
        with pytest.raises(BadInputError, match="no critic graph; it has encoder, decoder"):
            build(bundle, graphs=["critic"])


class TestProfile:
    def test_every_batch_input_gets_min_opt_max_with_static_dims_from_the_manifest(self, bundle):
        trt = make_fake_trt()
        build(bundle, trt, graphs=["encoder", "decoder"], precisions=["fp32"], min_batch=2, opt_batch=16, max_batch=32)
        encoder, decoder = (config.profiles for config in configs(trt))
        assert encoder == [{"images": ((2, 1, SIDE, SIDE), (16, 1, SIDE, SIDE), (32, 1, SIDE, SIDE))}]
        assert decoder == [{"latents": ((2, LATENT), (16, LATENT), (32, LATENT)), "labels": ((2,), (16,), (32,))}]

    def test_manifest_records_the_profile(self, bundle):
        manifest = build(bundle, min_batch=1, opt_batch=4, max_batch=8)
        assert {json.dumps(e.profile, sort_keys=True) for e in manifest.engines.values()} == {'{"max": 8, "min": 1, "opt": 4}'}


class TestStrongTyping:
    def test_tensorrt_10_creates_strongly_typed_networks(self, bundle):
        trt = make_fake_trt("10.3.0")
        build(bundle, trt)
        assert {n.flags for n in networks(trt)} == {1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)}

    @pytest.mark.parametrize("flag_present", [True, False], ids=["deprecated-flag", "flag-removed"])
    def test_tensorrt_11_networks_are_strongly_typed_without_a_flag(self, bundle, flag_present):
        trt = make_fake_trt("11.0.0", strongly_typed_flag=flag_present)
        manifest = build(bundle, trt)
        assert {n.flags for n in networks(trt)} == {0}
        assert {e.tensorrt_version for e in manifest.engines.values()} == {"11.0.0"}

    @pytest.mark.parametrize("version", ["10.3.0", "11.0.0"])
    def test_no_precision_builder_flag_is_ever_set(self, bundle, version):
        trt = make_fake_trt(version)
        build(bundle, trt)  # fp16 graphs included: their precision comes from the graph alone
        assert [config.flags_set for config in configs(trt)] == [[]] * 4

    def test_tensorrt_10_without_the_flag_is_refused(self, bundle):
        with pytest.raises(BackendUnavailableError, match="no strongly typed networks"):
            build(bundle, make_fake_trt("10.0.0", strongly_typed_flag=False))

    def test_tensorrt_8_is_refused(self, bundle):
        with pytest.raises(BackendUnavailableError, match="TensorRT 10 or newer; this is TensorRT 8.6.1"):
            build(bundle, make_fake_trt("8.6.1"))


class TestWorkspace:
    def test_limit_is_given_in_bytes(self, bundle):
        trt = make_fake_trt()
        build(bundle, trt, workspace_mb=256)
        assert [c.pool_limits for c in configs(trt)] == [{trt.MemoryPoolType.WORKSPACE: 256 * 1024 * 1024}] * 4


class TestDla:
    def test_dla_core_device_type_and_gpu_fallback(self, bundle):
        trt = make_fake_trt(num_dla_cores=2)
        manifest = build(bundle, trt, dla_core=1, max_batch=16)
        for config in configs(trt):
            assert (config.default_device_type, config.DLA_core) == (trt.DeviceType.DLA, 1)
            assert config.flags_set == [trt.BuilderFlag.GPU_FALLBACK]
        assert all(e.file.endswith(".trt10.3.0.dla1.engine") and e.dla_core == 1 for e in manifest.engines.values())

    def test_without_dla_the_gpu_builds_everything(self, bundle):
        trt = make_fake_trt(num_dla_cores=2)
        manifest = build(bundle, trt)
        assert {(c.default_device_type, c.DLA_core) for c in configs(trt)} == {(trt.DeviceType.GPU, -1)}
        assert {e.dla_core for e in manifest.engines.values()} == {None}

    @pytest.mark.parametrize("cores, there", [(2, "DLA cores 0 to 1"), (0, "no DLA cores")])
    def test_a_core_beyond_the_device_lists_the_cores_there_are(self, bundle, cores, there):
        trt = make_fake_trt(num_dla_cores=cores)
        with pytest.raises(BadInputError, match=f"--dla-core 2 does not exist: this device has {there}"):
            build(bundle, trt, dla_core=2)
        assert trt.build_calls == 0

    def test_fp32_and_large_batches_are_announced_as_gpu_fallback(self, bundle):
        lines = []
        build(bundle, make_fake_trt(num_dla_cores=1, max_dla_batch_size=32), dla_core=0, max_batch=64, log=lines.append)
        assert any("DLA takes batches up to 32" in line for line in lines)
        assert any("DLA runs fp16 and int8 layers only; encoder.fp32" in line for line in lines)


class TestTimingCache:
    def test_first_build_starts_empty_and_saves_the_cache(self, bundle):
        trt = make_fake_trt()
        build(bundle, trt)
        assert configs(trt)[0].created_caches == [b""]
        assert (bundle / TIMING_CACHE).read_bytes().startswith(b"FAKE-TIMING-CACHE trt10.3.0")
        assert {c.ignore_mismatch for c in configs(trt)} == {False}

    def test_second_build_reuses_the_saved_bytes(self, bundle):
        build(bundle)
        saved = (bundle / TIMING_CACHE).read_bytes()
        trt = make_fake_trt()
        build(bundle, trt)
        assert configs(trt)[0].created_caches == [saved]

    def test_each_graph_starts_from_the_timings_of_the_ones_before(self, bundle):
        trt = make_fake_trt()
        build(bundle, trt)
        first, second = configs(trt)[:2]
        assert second.created_caches == [first.get_timing_cache().serialize()]
        assert len((bundle / TIMING_CACHE).read_bytes().split(b"\n")) == 1 + 4  # header + one entry per build

    def test_a_cache_from_another_gpu_or_version_is_replaced(self, bundle):
        (bundle / "engines").mkdir()
        (bundle / TIMING_CACHE).write_bytes(b"cache made by TensorRT 8 on another GPU")
        lines, trt = [], make_fake_trt()
        build(bundle, trt, log=lines.append)
        assert configs(trt)[0].created_caches == [b"cache made by TensorRT 8 on another GPU", b""]
        assert any("another GPU or TensorRT version" in line for line in lines)
        assert (bundle / TIMING_CACHE).read_bytes().startswith(b"FAKE-TIMING-CACHE trt10.3.0")


class TestOutput:
    @pytest.mark.parametrize("gpu, capability, version, dla, expected", [
        ("NVIDIA Jetson Orin Nano", "8.7", "10.3.0", None, "decoder.fp16.nvidia-jetson-orin-nano.sm87.trt10.3.0.engine"),
        ("NVIDIA GeForce RTX 4090", "8.9", "11.0.0.114", None, "decoder.fp16.nvidia-geforce-rtx-4090.sm89.trt11.0.0.114.engine"),
        ("NVIDIA B200 (SXM)", "10.0", "10.13.0+cuda13", None, "decoder.fp16.nvidia-b200-sxm.sm100.trt10.13.0-cuda13.engine"),
        ("Orin", "8.7", "10.3.0", 0, "decoder.fp16.orin.sm87.trt10.3.0.dla0.engine"),
    ])
    def test_engine_file_name(self, gpu, capability, version, dla, expected):
        assert engine_file_name("decoder", "fp16", gpu, capability, version, dla) == expected

    def test_engines_are_written_and_listed_with_their_target(self, bundle):
        manifest = build(bundle)
        assert len(manifest.engines) == 4
        for key, entry in manifest.engines.items():
            path = bundle / entry.file
            assert entry.file == f"engines/{key}.engine"
            assert path.read_bytes().startswith(b"FAKE-ENGINE trt10.3.0")
            assert (entry.sha256, entry.bytes) == (sha256_file(path), path.stat().st_size)
            assert (entry.gpu_name, entry.compute_capability, entry.tensorrt_version) == \
                ("NVIDIA Jetson Orin Nano", "8.7", "10.3.0")
        assert "decoder.fp16.nvidia-jetson-orin-nano.sm87.trt10.3.0" in manifest.engines

    def test_manifest_on_disk_is_valid_and_graphs_are_untouched(self, bundle):
        before = read_manifest(bundle)
        returned = build(bundle)
        after = read_manifest(bundle)
        assert after == returned
        assert after.graphs == before.graphs
        assert dataclasses.replace(after, engines={}) == before

    def test_a_rebuild_replaces_the_entry_of_the_same_name_and_keeps_others(self, bundle):
        build(bundle, precisions=["fp32"])
        dla = build(bundle, make_fake_trt(num_dla_cores=1), precisions=["fp32"], dla_core=0)
        dla_engines = {key: e for key, e in dla.engines.items() if e.dla_core == 0}
        again = build(bundle, precisions=["fp32"], opt_batch=4)
        assert len(dla_engines) == 2 and len(again.engines) == 4  # two GPU engines replaced, two DLA engines kept
        assert {e.profile["opt"] for e in again.engines.values() if e.dla_core is None} == {4}
        assert {key: e for key, e in again.engines.items() if e.dla_core == 0} == dla_engines

    def test_progress_goes_to_log_not_stdout(self, bundle, capsys):
        lines = []
        build(bundle, log=lines.append)
        assert any(line.startswith("GPU 0: NVIDIA Jetson Orin Nano, compute capability 8.7, CUDA driver 12.6") for line in lines)
        assert sum(line.startswith("wrote engines/") for line in lines) == 4
        assert capsys.readouterr() == ("", "")


class TestFailures:
    ERRORS = ((3, "gather_labels", "Gather", "INT64 indices out of range"),
              (-1, "", "", "model has no opset import"),
              (7, "reshape_out", "Reshape", "unsupported shape tensor"))

    def test_parser_failure_lists_every_error(self, bundle):
        with pytest.raises(ExportValidationError) as caught:
            build(bundle, make_fake_trt(parse_ok=False, errors=self.ERRORS))
        message = str(caught.value)
        assert "cannot parse encoder.onnx (encoder.fp32): 3 error(s)" in message
        assert "[0] node 3 'gather_labels' (Gather): INT64 indices out of range" in message
        assert "[1] graph: model has no opset import" in message
        assert "[2] node 7 'reshape_out' (Reshape): unsupported shape tensor" in message

    def test_build_returning_none_points_at_the_tensorrt_log(self, bundle):
        with pytest.raises(ExportValidationError, match="could not build an engine for encoder.fp32 .*TensorRT log above"):
            build(bundle, make_fake_trt(build_ok=False))

    @pytest.mark.parametrize("fake", [dict(parse_ok=False), dict(fail_build_number=3)], ids=["parse", "third-build"])
    def test_a_failure_changes_neither_manifest_nor_timing_cache(self, bundle, fake):
        before = (bundle / "manifest.json").read_bytes()
        with pytest.raises(ExportValidationError):
            build(bundle, make_fake_trt(**fake))
        assert (bundle / "manifest.json").read_bytes() == before
        assert read_manifest(bundle).engines == {}
        assert not (bundle / TIMING_CACHE).exists()

    def test_tampered_onnx_fails_before_any_build(self, bundle):
        (bundle / "decoder.fp16.onnx").write_bytes(b"changed after export")
        trt = make_fake_trt()
        with pytest.raises(BadBundleError, match="does not match the manifest"):
            build(bundle, trt)
        assert trt.builders == [] and trt.parsed == []

    def test_a_second_dynamic_axis_is_a_bad_bundle(self, bundle):
        manifest = read_manifest(bundle)
        entry = manifest.graphs["encoder.fp32"]
        odd = dataclasses.replace(entry, inputs=(TensorSpec("images", "float32", ("batch", 1, "height", SIDE)),))
        write_manifest(bundle, dataclasses.replace(manifest, graphs={"encoder.fp32": odd}))
        with pytest.raises(BadBundleError, match="only the first \\(batch\\) axis may be dynamic"):
            build(bundle)


class TestBackend:
    def test_missing_tensorrt_says_what_to_install_where(self, bundle, monkeypatch):
        monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` now raises ImportError
        with pytest.raises(BackendUnavailableError) as caught:
            build_engines(bundle, cudart=make_fake_cudart())
        message = str(caught.value)
        assert "pip install 'gvtool[trt]'" in message and "pypi.nvidia.com" in message
        assert "JetPack 6" in message and "sudo apt install python3-libnvinfer" in message

    def test_missing_cuda_bindings_say_what_to_install(self, bundle, monkeypatch):
        for name in ("cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart"):
            monkeypatch.setitem(sys.modules, name, None)
        with pytest.raises(BackendUnavailableError, match="pip install cuda-python"):
            build_engines(bundle, trt=make_fake_trt())

    def test_no_gpu_means_build_on_the_target(self, bundle):
        trt = make_fake_trt()
        with pytest.raises(BackendUnavailableError, match="no CUDA device.*built on the NVIDIA GPU they will run on"):
            build(bundle, trt, cudart=make_fake_cudart(device_count=0))
        assert trt.builders == []

    def test_a_cuda_error_counts_as_no_gpu(self, bundle):
        with pytest.raises(BackendUnavailableError, match="cudaGetDeviceCount failed with cudaErrorInsufficientDriver"):
            build(bundle, cudart=make_fake_cudart(count_error="cudaErrorInsufficientDriver"))

    def test_the_chosen_device_is_made_current(self, bundle):
        cudart = make_fake_cudart(device_count=2)
        build(bundle, cudart=cudart, device_index=1)
        assert cudart.current_device == 1

    def test_a_device_beyond_the_machine_is_bad_input(self, bundle):
        with pytest.raises(BadInputError, match="--device 2 does not exist: this machine has 2 CUDA device"):
            build(bundle, cudart=make_fake_cudart(device_count=2), device_index=2)


class TestGpuProperties:
    def test_name_capability_and_driver(self):
        cudart = make_fake_cudart(name=b"NVIDIA H200\x00\x00", major=9, minor=0, driver_version=12080)
        assert gpu_properties(cudart, 0) == ("NVIDIA H200", "9.0", 12080)

    def test_a_failed_call_is_backend_unavailable(self):
        with pytest.raises(BackendUnavailableError, match="cudaErrorNoDevice"):
            gpu_properties(make_fake_cudart(count_error="cudaErrorNoDevice"), 0)


@pytest.mark.tensorrt
class TestRealTensorRT:
    """Builds real engines; runs only where tensorrt, cuda-python and an NVIDIA GPU are present."""

    @pytest.fixture
    def real(self):
        trt = pytest.importorskip("tensorrt", reason="TensorRT is not installed here (pip install 'gvtool[trt]', or JetPack)")
        pytest.importorskip("onnx", reason="the real-TensorRT test writes real ONNX graphs (pip install 'gvtool[export]')")
        from gvtool.runtime.gpu import import_cudart

        try:
            cudart = import_cudart()
            gpu_properties(cudart, 0)
        except (BackendUnavailableError, BadInputError) as error:
            pytest.skip(f"no usable NVIDIA GPU: {error}")
        return trt, cudart

    def test_builds_and_deserializes_engines(self, real, tmp_path):
        trt, cudart = real
        bundle = make_bundle(tmp_path / "bundle", precisions=("fp32",))
        manifest = build_engines(bundle, min_batch=1, opt_batch=2, max_batch=4, workspace_mb=256)
        assert len(manifest.engines) == 2 and (bundle / TIMING_CACHE).stat().st_size > 0
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        for entry in manifest.engines.values():
            engine = runtime.deserialize_cuda_engine((bundle / entry.file).read_bytes())
            assert engine is not None, entry.file
            names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
            graph = manifest.graphs[entry.graph_key]
            assert set(names) == {t.name for t in graph.inputs + graph.outputs}
        again = build_engines(bundle, min_batch=1, opt_batch=2, max_batch=4, workspace_mb=256)  # reuses the timing cache
        assert again.engines.keys() == manifest.engines.keys()


class TestHybridBundles:
    def test_every_stage_of_a_hier_bundle_gets_an_engine_with_its_own_inputs_profiled(self, tiny_bundle, tmp_path):
        import shutil

        folder = Path(shutil.copytree(tiny_bundle("hier")[0], tmp_path / "hier"))
        trt = make_fake_trt()
        manifest = build(folder, trt, precisions=["fp16"], min_batch=1, opt_batch=2, max_batch=4)
        assert sorted(e.graph_key for e in manifest.engines.values()) == ["coarse.fp16", "detail.fp16", "encoder.fp16"]
        profiles = [config.profiles[0] for config in configs(trt)]
        detail = next(p for p in profiles if "detail_noise" in p)
        assert detail == {"coarse": ((1, 1, 4, 4), (2, 1, 4, 4), (4, 1, 4, 4)),
                          "detail_noise": ((1, 16), (2, 16), (4, 16))}

    def test_both_domains_of_a_cyclevae_bundle_get_engines_with_their_own_image_shapes(self, tiny_bundle, tmp_path):
        import shutil

        folder = Path(shutil.copytree(tiny_bundle("cyclevae")[0], tmp_path / "cyclevae"))
        trt = make_fake_trt()
        manifest = build(folder, trt, precisions=["fp16"], min_batch=1, opt_batch=2, max_batch=4)
        assert sorted(e.graph_key for e in manifest.engines.values()) == [
            "decoder.fp16", "decoder_b.fp16", "encoder.fp16", "encoder_b.fp16"]
        images = sorted(p["images"] for p in (c.profiles[0] for c in configs(trt)) if "images" in p)
        assert images == [((1, 1, 16, 16), (2, 1, 16, 16), (4, 1, 16, 16)),
                          ((1, 3, 16, 16), (2, 3, 16, 16), (4, 3, 16, 16))]
