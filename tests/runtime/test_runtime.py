"""The torch-free runtime (gvtool.runtime.model and the onnxruntime backend) on the tiny bundles of
export_fixtures.py: loading, sampling, agreement with torch, chunking, interpolation, bad input, and
imports with torch blocked.

Everything runs on onnxruntime's CPU provider. Tests that need the `auto` choice (which tries TensorRT
through gvtool.runtime.trt_runner first) skip with a reason where that module is not there.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import gvtool.runtime.model as model_module
from export_fixtures import tiny_bundle, tiny_run  # noqa: F401
from gvtool.errors import BackendUnavailableError, BadBundleError, BadInputError
from gvtool.runtime.model import load, slerp
from runtime_helpers import (TENSORRT_INSTALLED, copy_bundle, cuda_in_onnxruntime,
                             edit_manifest, flip_byte)

LATENT = 4          # export_fixtures' TINY_MODEL latent size
SIDE = 16           # conftest.IMAGE_SIDE
CLASSES = 4         # conftest.NUM_CLASSES
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bundle(tiny_bundle):
    """bundle(name) -> the session's tiny bundle folder for name (never changed)."""
    return lambda name: tiny_bundle(name)[0]


@pytest.fixture(scope="module")
def model(bundle):
    """model(name, precision="fp32") -> a GenerativeModel on onnxruntime's CPU provider, loaded once per
    module. Tests that replace a runner load their own instead."""
    cache = {}

    def get(name: str, precision: str = "fp32"):
        if (name, precision) not in cache:
            cache[name, precision] = load(bundle(name), backend="onnxruntime", device="cpu", precision=precision)
        return cache[name, precision]

    return get


@pytest.fixture
def bundle_copy(bundle, tmp_path):
    """bundle_copy(name) -> a copy of the tiny bundle that a test may change."""
    return lambda name: copy_bundle(bundle(name), tmp_path / name)


class TestLoad:
    @pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
    def test_loads_each_precision_on_onnxruntime_cpu(self, bundle, precision):
        with load(bundle("vaegan"), backend="onnxruntime", device="cpu", precision=precision) as m:
            assert (m.choice.backend, m.choice.device) == ("onnxruntime-cpu", "cpu")
            assert m.choice.runners["decoder"].providers == ["CPUExecutionProvider"]
            assert m.sample(2, seed=0).shape == (2, SIDE, SIDE, 1)

    def test_graphs_decoder_loads_only_the_decoder(self, bundle):
        m = load(bundle("vaegan"), device="cpu", graphs=("decoder",))
        assert set(m.choice.runners) == {"decoder"}
        with pytest.raises(BadInputError, match="encoder graph was not loaded"):
            m.encode(np.zeros((1, SIDE, SIDE, 1), np.uint8))

    def test_default_loads_every_graph_the_bundle_has(self, bundle):
        assert set(load(bundle("vaegan"), device="cpu").choice.runners) == {"encoder", "decoder"}
        assert set(load(bundle("gan"), device="cpu").choice.runners) == {"decoder"}

    def test_gan_bundle_has_no_encoder(self, bundle):
        with pytest.raises(BadInputError, match="no encoder graph") as error:
            load(bundle("gan"), device="cpu", graphs=("encoder",))
        assert "a gan model has decoder" in str(error.value)

    @pytest.mark.parametrize("precision", ["fp32", "int8"])
    def test_description_names_backend_device_precision_and_why(self, bundle, precision):
        m = load(bundle("vaegan"), backend="onnxruntime", device="cpu", precision=precision)
        assert m.description == f"onnxruntime-cpu on cpu ({precision}): asked for onnxruntime on the CPU"

    def test_auto_backend_with_device_cpu_says_the_device_was_asked_for(self, bundle):
        assert load(bundle("vaegan"), device="cpu").description == "onnxruntime-cpu on cpu (fp32): --device cpu"

    @pytest.mark.skipif(TENSORRT_INSTALLED, reason="tensorrt is installed here: auto may pick it")
    def test_auto_device_without_tensorrt_or_cuda_falls_back_to_the_cpu_saying_why(self, bundle):
        if cuda_in_onnxruntime():
            pytest.skip("this onnxruntime has CUDA: auto picks it")
        m = load(bundle("vaegan"), backend="auto", device="auto")
        assert m.choice.backend == "onnxruntime-cpu"
        assert m.description.startswith("onnxruntime-cpu on cpu (fp32): no usable TensorRT engine (")
        assert m.description.endswith("and no CUDA in onnxruntime")

    def test_model_describes_itself_from_the_manifest(self, model):
        image, vector = model("conditional"), model("ring8")
        assert (image.is_image, image.item_shape, image.latent_dim, image.conditional, image.num_classes) == \
            (True, (1, SIDE, SIDE), LATENT, True, CLASSES)
        assert (vector.is_image, vector.item_shape, vector.conditional) == (False, (2,), False)


class TestSample:
    def test_same_seed_gives_identical_samples(self, model):
        assert np.array_equal(model("vaegan").sample(8, seed=3), model("vaegan").sample(8, seed=3))

    def test_different_seeds_give_different_samples(self, model):
        assert not np.array_equal(model("vaegan").sample(8, seed=3), model("vaegan").sample(8, seed=4))

    def test_images_are_uint8_n_h_w_c(self, model):
        out = model("vaegan").sample(5, seed=0)
        assert (out.dtype, out.shape) == (np.uint8, (5, SIDE, SIDE, 1))

    def test_vectors_are_float32_n_d(self, model):
        out = model("ring8").sample(5, seed=0)
        assert (out.dtype, out.shape) == (np.float32, (5, 2))

    def test_sample_latents_are_float32_n_k_and_seeded(self, model):
        z = model("vaegan").sample_latents(6, seed=1)
        assert (z.dtype, z.shape) == (np.float32, (6, LATENT))
        assert np.array_equal(z, model("vaegan").sample_latents(6, seed=1))

    def test_temperature_scales_latents(self, model):
        m = model("vaegan")
        np.testing.assert_allclose(m.sample_latents(6, seed=1, temperature=0.5), 0.5 * m.sample_latents(6, seed=1),
                                   rtol=1e-6)

    def test_sample_decodes_the_seeded_latents(self, model):
        m = model("ring8")
        np.testing.assert_array_equal(m.sample(6, seed=2, temperature=0.7),
                                      m.decode(m.sample_latents(6, seed=2, temperature=0.7)))

    @pytest.mark.parametrize("temperature", [0.0, -1.0, float("nan")])
    def test_temperature_not_above_zero_is_refused(self, model, temperature):
        with pytest.raises(BadInputError, match="temperature must be > 0"):
            model("vaegan").sample(2, seed=0, temperature=temperature)

    @pytest.mark.parametrize("name", ["vaegan", "conditional", "ring8"])
    @pytest.mark.parametrize("chunk", [1, 7, 16, 50, 64])
    def test_sample_chunks_concatenated_equal_sample(self, model, name, chunk):
        m = model(name)
        chunks = list(m.sample_chunks(50, seed=5, temperature=0.9, chunk=chunk))
        assert max(len(c) for c in chunks) <= chunk
        np.testing.assert_array_equal(np.concatenate(chunks), m.sample(50, seed=5, temperature=0.9))

    def test_sample_chunks_refuses_a_temperature_that_sample_refuses(self, model):
        with pytest.raises(BadInputError, match="temperature"):
            list(model("vaegan").sample_chunks(3, seed=0, temperature=0.0))

    def test_conditional_labels_none_cycle_the_classes(self, model):
        m = model("conditional")
        cycled = m.sample(8, seed=1)
        for i in range(8):
            np.testing.assert_array_equal(cycled[i], m.sample(8, seed=1, labels=i % CLASSES)[i])

    def test_conditional_int_label_applies_to_all(self, model):
        m = model("conditional")
        for label in range(CLASSES):
            np.testing.assert_array_equal(m.sample(6, seed=1, labels=label),
                                          m.sample(6, seed=1, labels=np.full(6, label)))

    def test_conditional_array_of_labels_gives_each_item_its_class(self, model):
        m = model("conditional")
        labels = np.array([3, 1, 0, 2, 2, 1])
        out = m.sample(6, seed=1, labels=labels)
        for i, label in enumerate(labels):
            np.testing.assert_array_equal(out[i], m.sample(6, seed=1, labels=int(label))[i])

    def test_conditional_labels_change_the_decoder_output(self, model):
        runner = model("conditional").choice.runners["decoder"]
        z = model("conditional").sample_latents(4, seed=0)
        (zero,), (three,) = runner.run({"latents": z, "labels": np.zeros(4, np.int64)}), \
            runner.run({"latents": z, "labels": np.full(4, 3, np.int64)})
        assert not np.array_equal(zero, three)


def _within_validation(ours: np.ndarray, theirs: np.ndarray, validation) -> None:
    """Assert ours ~ theirs by the manifest's own metric and tolerance for that graph."""
    diff = np.abs(ours.astype(np.float64) - theirs.astype(np.float64))
    value = diff.max() if validation.metric == "max_abs" else diff.mean()
    assert value <= validation.tolerance, f"{validation.metric} {value:.3g} > {validation.tolerance:g}"


@pytest.fixture(scope="module")
def nets(tiny_bundle, one_torch_thread):
    """nets(name) -> the torch networks rebuilt from the source run of the tiny bundle `name`."""
    from gvtool.train.trained import load_run

    cache = {}

    def get(name: str):
        if name not in cache:
            cache[name] = load_run(tiny_bundle(name)[1].source["run_dir"]).nets
        return cache[name]

    return get


class TestAgreementWithTorch:
    """The bundle's graphs against the torch networks rebuilt from the bundle's source run."""

    @staticmethod
    def torch_decode(nets, z, labels):
        import torch

        with torch.no_grad():
            return nets["decoder"](torch.from_numpy(z), None if labels is None else torch.from_numpy(labels)).numpy()

    @pytest.mark.parametrize("name", ["vaegan", "conditional", "gan", "ring8"])
    @pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
    def test_decoder_output_equals_torch_within_the_manifest_tolerance(self, model, nets, name, precision):
        m = model(name, precision)
        z = m.sample_latents(32, seed=11)
        labels = np.arange(32, dtype=np.int64) % CLASSES if m.conditional else None
        feeds = {"latents": z} | ({} if labels is None else {"labels": labels})
        (ours,) = m.choice.runners["decoder"].run(feeds)
        theirs = self.torch_decode(nets(name), z, labels)
        _within_validation(ours, theirs, m.manifest.graph("decoder", precision).validation)

    def test_fp32_tolerance_is_max_abs(self, model):
        assert model("vaegan").manifest.graph("decoder", "fp32").validation.metric == "max_abs"

    @pytest.mark.parametrize("name", ["vaegan", "conditional", "gan"])
    def test_fp32_decode_pixels_are_within_one_level_of_torch(self, model, nets, name):
        m = model(name)
        z = m.sample_latents(32, seed=12)
        labels = np.arange(32, dtype=np.int64) % CLASSES if m.conditional else None
        out = self.torch_decode(nets(name), z, labels)  # (N, C, H, W) in model range
        p = m.manifest.pixels
        expected = np.clip(np.rint((out - p["offset"]) * p["scale"]), 0, 255).transpose(0, 2, 3, 1)
        assert np.abs(m.decode(z, labels).astype(int) - expected).max() <= 1

    @pytest.mark.parametrize("name", ["vaegan", "conditional", "ring8"])
    def test_fp32_encode_equals_torch_within_the_manifest_tolerance(self, model, nets, name):
        import torch

        m = model(name)
        items = m.sample(24, seed=13)
        if m.is_image:
            p = m.manifest.pixels
            x = items.transpose(0, 3, 1, 2).astype(np.float32) / p["scale"] + p["offset"]
        else:
            x = items
        mean, logvar = m.encode(items, return_logvar=True)
        with torch.no_grad():
            t_mean, t_logvar = (t.numpy() for t in nets(name)["encoder"](torch.from_numpy(x)))
        validation = m.manifest.graph("encoder", "fp32").validation
        _within_validation(mean, t_mean, validation)
        _within_validation(logvar, t_logvar, validation)


class LimitedRunner:
    """Wraps a runner, taking at most max_batch items per run() and recording each batch size."""

    def __init__(self, runner, max_batch: int | None):
        self.runner, self.max_batch, self.backend, self.batches = runner, max_batch, runner.backend, []

    def run(self, feeds):
        n = len(next(iter(feeds.values())))
        assert self.max_batch is None or n <= self.max_batch, f"got {n} items, max_batch {self.max_batch}"
        self.batches.append(n)
        return self.runner.run(feeds)


class TestChunking:
    N = 50

    @pytest.fixture
    def spied(self, bundle):
        """spied(name, graph, max_batch) -> (a freshly loaded model, the LimitedRunner now running graph)."""

        def get(name: str, graph: str, max_batch: int | None):
            m = load(bundle(name), backend="onnxruntime", device="cpu")
            m.choice.runners[graph] = spy = LimitedRunner(m.choice.runners[graph], max_batch)
            return m, spy

        return get

    def test_decode_in_default_chunks_equals_unchunked(self, model, spied, monkeypatch):
        z = model("vaegan").sample_latents(self.N, seed=1)
        whole = model("vaegan").decode(z)
        monkeypatch.setattr(model_module, "DEFAULT_CHUNK", 7)
        m, spy = spied("vaegan", "decoder", None)
        np.testing.assert_array_equal(m.decode(z), whole)
        assert spy.batches == [7] * 7 + [1]

    def test_decode_in_max_batch_chunks_equals_unchunked(self, model, spied):
        z = model("ring8").sample_latents(self.N, seed=1)
        m, spy = spied("ring8", "decoder", 8)
        np.testing.assert_array_equal(m.decode(z), model("ring8").decode(z))
        assert spy.batches == [8] * 6 + [2]

    def test_conditional_decode_in_chunks_keeps_each_item_its_label(self, model, spied):
        z = model("conditional").sample_latents(self.N, seed=1)
        labels = np.random.default_rng(0).integers(0, CLASSES, self.N)
        m, spy = spied("conditional", "decoder", 7)
        np.testing.assert_array_equal(m.decode(z, labels), model("conditional").decode(z, labels))
        assert max(spy.batches) == 7

    def test_encode_in_default_chunks_equals_unchunked(self, model, spied, monkeypatch):
        images = model("vaegan").sample(self.N, seed=2)
        whole = model("vaegan").encode(images, return_logvar=True)
        monkeypatch.setattr(model_module, "DEFAULT_CHUNK", 7)
        m, spy = spied("vaegan", "encoder", None)
        for chunked, unchunked in zip(m.encode(images, return_logvar=True), whole):
            np.testing.assert_array_equal(chunked, unchunked)
        assert spy.batches == [7] * 7 + [1]

    def test_encode_in_max_batch_chunks_equals_unchunked(self, model, spied):
        vectors = model("ring8").sample(self.N, seed=2)
        m, spy = spied("ring8", "encoder", 16)
        np.testing.assert_array_equal(m.encode(vectors), model("ring8").encode(vectors))
        assert spy.batches == [16, 16, 16, 2]

    def test_a_batch_within_the_limit_runs_once(self, model, spied):
        m, spy = spied("vaegan", "decoder", 64)
        m.decode(model("vaegan").sample_latents(self.N, seed=1))
        assert spy.batches == [self.N]


class TestInterpolate:
    @pytest.mark.parametrize("method", ["slerp", "lerp"])
    def test_endpoints_equal_decode_of_the_endpoint_latents(self, model, method):
        m = model("vaegan")
        za, zb = m.sample_latents(2, seed=7)
        path = m.interpolate(za, zb, steps=6, method=method)
        assert path.shape == (6, SIDE, SIDE, 1)
        np.testing.assert_array_equal(path[[0, -1]], m.decode(np.stack([za, zb])))

    def test_seeds_as_endpoints_equal_sample_latents_of_one(self, model):
        m = model("vaegan")
        path = m.interpolate(1, 2, steps=4)
        np.testing.assert_array_equal(path[0], m.decode(m.sample_latents(1, seed=1))[0])
        np.testing.assert_array_equal(path[-1], m.decode(m.sample_latents(1, seed=2))[0])

    def test_image_endpoints_are_encoded_first(self, model):
        m = model("vaegan")
        a, b = m.sample(2, seed=8)
        path = m.interpolate(a, b, steps=5)
        np.testing.assert_array_equal(path[0], m.decode(m.encode(a[None]))[0])
        np.testing.assert_array_equal(path[-1], m.decode(m.encode(b[None]))[0])

    def test_vector_item_endpoints_are_encoded_first(self, model):
        m = model("ring8")
        a, b = m.sample(2, seed=8)  # (2,) items; the latent size is 4, so no ambiguity
        path = m.interpolate(a, b, steps=5)
        np.testing.assert_array_equal(path[[0, -1]], m.decode(m.encode(np.stack([a, b]))))

    def test_conditional_path_uses_the_label(self, model):
        m = model("conditional")
        za, zb = m.sample_latents(2, seed=9)
        path = m.interpolate(za, zb, steps=4, method="lerp", label=2)
        lerp = np.stack([(1 - t) * za + t * zb for t in np.linspace(0, 1, 4)]).astype(np.float32)
        np.testing.assert_array_equal(path, m.decode(lerp, np.full(4, 2)))

    @pytest.mark.parametrize("steps", [1, 0, -3])
    def test_fewer_than_two_steps_is_refused(self, model, steps):
        with pytest.raises(BadInputError, match="steps must be >= 2"):
            model("vaegan").interpolate(1, 2, steps=steps)

    def test_unknown_method_is_refused(self, model):
        with pytest.raises(BadInputError, match="unknown interpolation method 'cubic'"):
            model("vaegan").interpolate(1, 2, method="cubic")

    @pytest.mark.parametrize("end", [np.zeros(3, np.float32), np.zeros((4, 4), np.float32), True, "seed"])
    def test_an_end_that_is_no_seed_latent_or_item_is_refused(self, model, end):
        with pytest.raises(BadInputError, match="an interpolation end must be"):
            model("vaegan").interpolate(end, 2)

    def test_a_latent_end_with_nan_is_refused(self, model):
        with pytest.raises(BadInputError, match="NaN or infinite"):
            model("vaegan").interpolate(np.full(LATENT, np.nan, np.float32), 2)

    def test_slerp_of_a_vector_with_itself_returns_it(self):
        a = np.array([0.3, -1.2, 2.0, 0.5], np.float32)
        np.testing.assert_allclose(slerp(a, a, np.linspace(0, 1, 5)), np.tile(a, (5, 1)), rtol=1e-6)

    def test_slerp_ends_are_the_two_vectors(self):
        a, b = np.array([1.0, 2.0, 0.0, -1.0], np.float32), np.array([0.5, -1.0, 3.0, 0.0], np.float32)
        path = slerp(a, b, np.linspace(0, 1, 7))
        np.testing.assert_allclose(path[[0, -1]], np.stack([a, b]), rtol=1e-6, atol=1e-7)

    def test_slerp_keeps_norms_between_the_ends_for_orthogonal_equal_norm_vectors(self):
        a, b = np.array([2.0, 0, 0, 0], np.float32), np.array([0, 0, 2.0, 0], np.float32)
        norms = np.linalg.norm(slerp(a, b, np.linspace(0, 1, 11)), axis=1)
        assert np.all(norms >= 2.0 - 1e-5) and np.all(norms <= 2.0 + 1e-5)

    def test_slerp_of_opposite_vectors_falls_back_to_lerp(self):
        a = np.array([1.0, 0, 0, 0], np.float32)
        np.testing.assert_allclose(slerp(a, -a, np.array([0.0, 0.25, 1.0])), [a, 0.5 * a, -a], atol=1e-7)


class TestBadInput:
    def test_a_graph_changed_after_export_is_refused_at_load_naming_sha256(self, bundle_copy):
        copy = bundle_copy("vaegan")
        flip_byte(copy / "decoder.onnx")
        with pytest.raises(BadBundleError, match="sha256") as error:
            load(copy, device="cpu", graphs=("decoder",))
        assert "decoder.onnx does not match the manifest" in str(error.value)
        assert "re-export the bundle" in str(error.value)

    def test_a_changed_graph_that_is_not_loaded_is_not_read(self, bundle_copy):
        copy = bundle_copy("vaegan")
        flip_byte(copy / "encoder.onnx")
        assert load(copy, device="cpu", graphs=("decoder",)).sample(1, seed=0).shape == (1, SIDE, SIDE, 1)

    def test_a_missing_graph_file_is_refused(self, bundle_copy):
        copy = bundle_copy("gan")
        (copy / "decoder.onnx").unlink()
        with pytest.raises(BadBundleError, match="lacks decoder.onnx, which its manifest lists"):
            load(copy, device="cpu")

    def test_unknown_manifest_version_is_refused(self, bundle_copy):
        copy = bundle_copy("gan")
        edit_manifest(copy, lambda raw: raw.update(format=99))
        with pytest.raises(BadBundleError, match="manifest format 99; this gvtool reads format 1"):
            load(copy, device="cpu")

    def test_a_folder_without_manifest_is_refused(self, tmp_path):
        with pytest.raises(BadBundleError, match="not a complete bundle"):
            load(tmp_path, device="cpu")

    @pytest.mark.parametrize("name", ["../decoder.onnx", "/tmp/decoder.onnx", "sub/../../decoder.onnx"])
    def test_a_manifest_file_name_leaving_the_bundle_is_refused(self, bundle_copy, name):
        copy = bundle_copy("gan")
        edit_manifest(copy, lambda raw: raw["graphs"]["decoder.fp32"].update(file=name))
        with pytest.raises(BadBundleError, match="outside the bundle"):
            load(copy, device="cpu")

    def test_a_symlink_leaving_the_bundle_is_refused(self, bundle_copy, tmp_path):
        copy = bundle_copy("gan")
        (copy / "out.onnx").symlink_to(tmp_path / "elsewhere.onnx")
        edit_manifest(copy, lambda raw: raw["graphs"]["decoder.fp32"].update(file="out.onnx"))
        with pytest.raises(BadBundleError, match="outside the bundle: 'out.onnx' resolves to"):
            load(copy, device="cpu")

    def test_a_precision_the_bundle_lacks_is_refused(self, bundle_copy):
        copy = bundle_copy("gan")
        edit_manifest(copy, lambda raw: raw["graphs"].pop("decoder.int8"))
        with pytest.raises(BadBundleError, match="no decoder graph in int8"):
            load(copy, device="cpu", precision="int8")

    @pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
    def test_nan_or_infinite_latents_are_refused(self, model, bad):
        z = np.zeros((3, LATENT), np.float32)
        z[1, 2] = bad
        with pytest.raises(BadInputError, match="1 NaN or infinite values"):
            model("vaegan").decode(z)

    @pytest.mark.parametrize("shape", [(3, LATENT + 1), (3, LATENT - 1), (0, LATENT), (2, 2, LATENT), (LATENT + 2,)])
    def test_latents_of_the_wrong_size_are_refused(self, model, shape):
        with pytest.raises(BadInputError, match=rf"expected \(N, {LATENT}\) with N >= 1"):
            model("vaegan").decode(np.zeros(shape, np.float32))

    def test_one_latent_of_shape_k_decodes_as_one_item(self, model):
        assert model("vaegan").decode(np.zeros(LATENT, np.float32)).shape == (1, SIDE, SIDE, 1)

    def test_latents_that_are_not_numbers_are_refused(self, model):
        with pytest.raises(BadInputError):
            model("vaegan").decode(np.array([["a", "b", "c", "d"]]))

    @pytest.mark.parametrize("n", [0, -1])
    def test_n_not_above_zero_is_refused(self, model, n):
        with pytest.raises(BadInputError, match=f"positive integer, got {n}"):
            model("vaegan").sample(n)

    @pytest.mark.parametrize("n", [2.0, 2.5, "3", True, None])
    def test_n_that_is_not_an_integer_is_refused(self, model, n):
        with pytest.raises(BadInputError, match="the number of items must be a positive integer"):
            model("vaegan").sample(n)

    def test_a_numpy_integer_n_is_accepted(self, model):
        assert len(model("vaegan").sample(np.int64(3), seed=0)) == 3

    @pytest.mark.parametrize("labels", [CLASSES, -1, [0, 1, 99]])
    def test_a_label_out_of_range_is_refused(self, model, labels):
        with pytest.raises(BadInputError, match=f"out of range: this model has classes 0 to {CLASSES - 1}"):
            model("conditional").sample(3, seed=0, labels=labels)

    def test_labels_of_another_count_are_refused(self, model):
        with pytest.raises(BadInputError, match="got 2 labels for 3 items"):
            model("conditional").sample(3, seed=0, labels=[0, 1])

    def test_labels_that_are_not_integers_are_refused(self, model):
        with pytest.raises(BadInputError, match="labels must be integers, got float64"):
            model("conditional").sample(2, seed=0, labels=[0.0, 1.0])

    def test_a_label_given_to_an_unconditional_model_is_refused(self, model):
        with pytest.raises(BadInputError, match="unconditional: it takes no labels"):
            model("vaegan").sample(2, seed=0, labels=1)

    def test_an_unknown_backend_is_refused(self, bundle):
        with pytest.raises(BadInputError, match="unknown --backend 'tflite'; expected one of auto, tensorrt"):
            load(bundle("vaegan"), backend="tflite", device="cpu")

    @pytest.mark.parametrize("device", ["gpu", "cuda:x", "cpu:0"])
    def test_an_unknown_device_is_refused(self, bundle, device):
        with pytest.raises(BadInputError, match=f"unknown --device '{device}'"):
            load(bundle("vaegan"), device=device)

    def test_onnxruntime_on_cuda_without_the_cuda_provider_names_it(self, bundle):
        if cuda_in_onnxruntime():
            pytest.skip("this onnxruntime has the CUDA provider")
        with pytest.raises(BackendUnavailableError,
                           match="onnxruntime-cuda needs onnxruntime's CUDAExecutionProvider") as error:
            load(bundle("vaegan"), backend="onnxruntime", device="cuda:0")
        assert "has only" in str(error.value) and "CPUExecutionProvider" in str(error.value)

    @pytest.mark.parametrize("backend", ["tensorrt", "onnxruntime-tensorrt"])
    def test_a_tensorrt_backend_on_the_cpu_is_refused(self, bundle, backend):
        with pytest.raises(BadInputError, match=f"--backend {backend} runs on an NVIDIA GPU"):
            load(bundle("vaegan"), backend=backend, device="cpu")

    @pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
    def test_images_of_another_dtype_are_refused(self, model, dtype):
        with pytest.raises(BadInputError, match=f"images must be uint8 pixels 0..255, got {np.dtype(dtype).name}"):
            model("vaegan").encode(np.zeros((2, SIDE, SIDE, 1), dtype))

    def test_images_with_two_channels_are_refused(self, model):
        with pytest.raises(BadInputError, match=r"an image has shape \(16, 16, 2\)"):
            model("vaegan").encode(np.zeros((1, SIDE, SIDE, 2), np.uint8))

    def test_no_images_are_refused(self, model):
        with pytest.raises(BadInputError, match="no images given"):
            model("vaegan").encode([])

    def test_images_of_another_size_and_colour_are_converted_with_a_warning(self, model):
        rgb = np.random.default_rng(0).integers(0, 256, (3, 20, 28, 3), dtype=np.uint8)
        with pytest.warns(UserWarning, match=r"3 image\(s\) converted to the model's \(16, 16, 1\)"):
            z = model("vaegan").encode(rgb)
        assert (z.dtype, z.shape) == (np.float32, (3, LATENT))

    def test_a_list_of_images_of_different_sizes_is_converted(self, model):
        images = [np.zeros((SIDE, SIDE, 1), np.uint8), np.zeros((40, 30, 3), np.uint8), np.zeros((8, 8, 4), np.uint8)]
        with pytest.warns(UserWarning, match=r"2 image\(s\) converted"):
            assert model("vaegan").encode(images).shape == (3, LATENT)

    def test_images_of_the_model_shape_are_not_warned_about(self, model):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            model("vaegan").encode(np.zeros((2, SIDE, SIDE, 1), np.uint8))

    def test_grey_h_w_images_of_the_model_size_are_not_warned_about(self, model):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            model("vaegan").encode(np.zeros((2, SIDE, SIDE), np.uint8))

    def test_vectors_of_the_wrong_shape_are_refused(self, model):
        with pytest.raises(BadInputError, match=r"vectors have shape \(3, 5\), expected \(N, 2\)"):
            model("ring8").encode(np.zeros((3, 5), np.float32))

    def test_vectors_with_nan_are_refused(self, model):
        with pytest.raises(BadInputError, match="vectors hold NaN or infinite values"):
            model("ring8").encode(np.array([[0.0, np.nan]], np.float32))


def _run_without_torch(code: str, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """Python with `torch` blocked (an import of it raises ImportError), running code."""
    env = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-c", "import sys; sys.modules['torch'] = None; " + code, *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


class TestWithoutTorch:
    def test_runtime_modules_import_with_torch_blocked(self, tmp_path):
        code = ("import gvtool.runtime.model, gvtool.runtime.backends, gvtool.runtime.ort_runner, "
                "gvtool.runtime.outputs, gvtool.runtime.bundles; "
                "print(sorted(m for m in sys.modules if m.startswith(('gvtool.train', 'gvtool.export'))))")
        result = _run_without_torch(code, tmp_path)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "[]"

    def test_a_model_samples_with_torch_blocked(self, bundle, tmp_path):
        code = ("from gvtool.runtime.model import load; "
                "print(load(sys.argv[1], device='cpu').sample(3, seed=0).shape)")
        result = _run_without_torch(code, tmp_path, str(bundle("vaegan")))
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "(3, 16, 16, 1)"
