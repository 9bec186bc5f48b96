"""Bundles of a translation model (cyclevae), end to end: the domains its manifest names, translating both ways
in the runtime and the CLI (torch-free), a run and its bundle translating alike, the translation paths timed by
bench, the translation metrics of eval, and the refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cli_helpers import error_line
from export_fixtures import tiny_bundle, tiny_run  # noqa: F401
from gvtool.cli import main
from gvtool.errors import BadInputError
from gvtool.manifest import MANIFEST_FILE, ModelInfo, SchemaError, check_manifest
from gvtool.runtime.model import load

CPU = ("--device", "cpu")
REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def model(tiny_bundle):
    return load(tiny_bundle("cyclevae")[0], backend="onnxruntime", device="cpu")


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(5)
    return rng.integers(0, 256, (5, 16, 16, 1), dtype=np.uint8), rng.integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)


def _raw(tiny_bundle) -> dict:
    return json.loads((tiny_bundle("cyclevae")[0] / MANIFEST_FILE).read_text())


class TestManifest:
    def test_it_names_both_domains_and_domain_b_images(self, tiny_bundle):
        _, manifest, _ = tiny_bundle("cyclevae")
        assert manifest.model.domains == ("labelled.npz", "colour.npz")
        assert manifest.model.item_shape == (1, 16, 16) and manifest.model.item_shape_b == (3, 16, 16)
        assert {g.graph for g in manifest.graphs.values()} == {"encoder", "decoder", "encoder_b", "decoder_b"}
        assert {g.precision for g in manifest.graphs.values()} == {"fp32", "fp16", "int8"}
        assert manifest.graphs["decoder_b.fp32"].outputs[0].shape == ("batch", 3, 16, 16)

    def test_domain_b_was_validated_on_its_own_held_out_images(self, tiny_bundle):
        _, manifest, _ = tiny_bundle("cyclevae")
        assert "colour.npz" in manifest.graphs["encoder_b.fp32"].validation.inputs
        assert all(g.validation.passed for g in manifest.graphs.values())

    def test_domains_on_a_one_domain_model_are_refused(self, tiny_bundle):
        raw = json.loads((tiny_bundle("vaegan")[0] / MANIFEST_FILE).read_text())
        raw["model"]["domains"] = ["a", "b"]
        with pytest.raises(SchemaError, match="are for translation models, not vaegan"):
            check_manifest(raw)

    @pytest.mark.parametrize("domains", [["mnist"], ["mnist", "mnist"], ["mnist", 3], []])
    def test_a_translation_model_names_two_different_domains(self, tiny_bundle, domains):
        raw = _raw(tiny_bundle)
        raw["model"]["domains"] = domains
        with pytest.raises(SchemaError, match="model.domains must name two different domains"):
            check_manifest(raw)

    def test_domain_b_items_must_agree_with_its_graphs(self, tiny_bundle):
        raw = _raw(tiny_bundle)
        raw["model"]["item_shape_b"] = [1, 16, 16]
        with pytest.raises(SchemaError, match=r"has items of \[3, 16, 16\], but model.item_shape_b is \[1, 16, 16\]"):
            check_manifest(raw)
        raw["model"]["item_shape_b"] = [2, 16, 16]
        with pytest.raises(SchemaError, match="model.item_shape_b must be"):
            check_manifest(raw)


class TestTranslate:
    def test_both_ways_with_each_domains_channels(self, model, images):
        a, b = images
        assert model.translate(a, "colour.npz").shape == (5, 16, 16, 3)
        assert model.translate(b, "a").shape == (5, 16, 16, 1)
        assert np.array_equal(model.translate(a, "b"), model.translate(a, 1))

    def test_it_is_the_source_encoder_then_the_target_decoder(self, model, images):
        a, _ = images
        x = (a.transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1).astype(np.float32)
        mean = model.choice.runners["encoder"].run({"images": x})[0]
        out = model.choice.runners["decoder_b"].run({"latents": mean})[0]
        np.testing.assert_array_equal(model.translate(a, "b"), model._to_items(out))

    def test_chunks_give_what_one_call_gives(self, tiny_bundle, images, monkeypatch):
        from gvtool.runtime import model as runtime_model

        m = load(tiny_bundle("cyclevae")[0], backend="onnxruntime", device="cpu", operation="translate")
        whole = m.translate(images[1], "a")
        monkeypatch.setattr(runtime_model, "DEFAULT_CHUNK", 2)
        assert np.array_equal(m.translate(images[1], "a"), whole)

    def test_images_of_another_size_are_fitted_to_the_source_domain(self, model):
        big = np.random.default_rng(0).integers(0, 256, (2, 40, 30, 3), dtype=np.uint8)
        with pytest.warns(UserWarning, match="converted"):
            assert model.translate(big, "a").shape == (2, 16, 16, 1)

    def test_a_run_and_its_bundle_translate_alike(self, tiny_run, tiny_bundle, images):
        from gvtool.eval.evaluate import open_target

        run, bundle = open_target(tiny_run("cyclevae")), open_target(tiny_bundle("cyclevae")[0])
        for source, target in ((images[0], 1), (images[1], 0)):
            x = np.ascontiguousarray(source.transpose(0, 3, 1, 2))
            got, want = bundle.translate(x, target), run.translate(x, target)
            assert got.shape == want.shape and np.abs(got.astype(int) - want.astype(int)).max() <= 1

    def test_sampling_encoding_and_reconstruction_work_on_domain_a(self, model, images):
        assert model.sample(3, seed=0).shape == (3, 16, 16, 1)
        assert model.reconstruct(images[0]).shape == (5, 16, 16, 1)


class TestDomainNames:
    @pytest.mark.parametrize("name, index", [("labelled.npz", 0), ("colour.npz", 1), ("a", 0), ("B", 1), (0, 0),
                                             (1, 1)])
    def test_by_name_letter_or_index(self, model, name, index):
        assert model.domain(name) == index

    @pytest.mark.parametrize("name", ["mnist", "c", 2, None])
    def test_an_unknown_domain_names_both(self, model, name):
        with pytest.raises(BadInputError, match="translates between labelled.npz \\(a\\) and colour.npz \\(b\\)"):
            model.domain(name)

    def test_a_one_domain_model_does_not_translate(self, tiny_bundle):
        m = load(tiny_bundle("vaegan")[0], device="cpu")
        with pytest.raises(BadInputError, match="this vaegan model does not translate"):
            m.translate(np.zeros((1, 16, 16, 1), np.uint8), "b")

    def test_loading_a_one_domain_bundle_to_translate_is_refused(self, tiny_bundle):
        with pytest.raises(BadInputError, match="holds a vaegan model, which has no encoder_b or decoder_b graph: it "
                                                "cannot translate"):
            load(tiny_bundle("vaegan")[0], device="cpu", operation="translate")


class TestCommand:
    def test_info_names_the_domains(self, tiny_bundle):
        result = invoke("info", tiny_bundle("cyclevae")[0])
        assert result.exit_code == 0, result.output
        assert "translates labelled.npz (a) <-> colour.npz (b) (3, 16, 16)" in " ".join(result.output.split())

    def _files(self, tmp_path, images):
        from PIL import Image

        paths = []
        for i, image in enumerate(images[0][:3]):
            paths.append(tmp_path / f"a{i}.png")
            Image.fromarray(image[:, :, 0]).save(paths[-1])
        return paths

    def test_png_shows_originals_and_translations_in_colour(self, tiny_bundle, tmp_path, images):
        from PIL import Image

        files = self._files(tmp_path, images)
        result = invoke("translate", tiny_bundle("cyclevae")[0], *files, "--to", "colour.npz",
                        "--out", tmp_path / "t.png", *CPU)
        assert result.exit_code == 0, result.output
        assert "3 translations labelled.npz -> colour.npz" in result.stderr.replace("\n", " ")
        assert Image.open(tmp_path / "t.png").mode == "RGB"

    def test_npy_holds_the_translations(self, tiny_bundle, tmp_path, images, model):
        files = self._files(tmp_path, images)
        assert invoke("translate", tiny_bundle("cyclevae")[0], *files, "--to", "b", "--out", tmp_path / "t.npy",
                      *CPU).exit_code == 0
        np.testing.assert_array_equal(np.load(tmp_path / "t.npy"), model.translate(images[0][:3], "b"))

    def test_an_unknown_domain_is_one_line(self, tiny_bundle, tmp_path, images):
        files = self._files(tmp_path, images)
        line = error_line(invoke("translate", tiny_bundle("cyclevae")[0], *files, "--to", "mnist", *CPU))
        assert "unknown domain 'mnist': this model translates between labelled.npz (a) and colour.npz (b)" in line

    def test_a_bundle_that_does_not_translate_is_one_line(self, tiny_bundle, tmp_path, images):
        files = self._files(tmp_path, images)
        line = error_line(invoke("translate", tiny_bundle("vaegan")[0], *files, "--to", "b", *CPU))
        assert "holds a vaegan model, which has no encoder_b or decoder_b graph: it cannot translate" in line

    def test_translates_with_torch_blocked(self, tiny_bundle, tmp_path, images):
        files = self._files(tmp_path, images)
        env = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        code = "import sys; sys.modules['torch'] = None; from gvtool.cli import main; main()"
        result = subprocess.run([sys.executable, "-c", code, "translate", str(tiny_bundle("cyclevae")[0]),
                                 *map(str, files), "--to", "b", "--device", "cpu", "--out", "OUT.npy"],
                                cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert np.load(tmp_path / "OUT.npy").shape == (3, 16, 16, 3)

    @pytest.mark.parametrize("name", ["cyclevae", "cyclevae-style"])
    def test_bench_times_each_graph_and_both_translation_paths(self, tiny_bundle, tmp_path, name):
        result = invoke("bench", "run", tiny_bundle(name)[0], "--backend", "onnxruntime,torch", "--precision",
                        "fp32", "--batch-sizes", "1,2", "--iterations", 3, "--warmup-ms", 0, "--json", tmp_path / "b.json")
        assert result.exit_code == 0, result.output
        rows = json.loads((tmp_path / "b.json").read_text())["results"]
        graphs = ("encoder", "decoder", "encoder_b", "decoder_b", "translate_ab", "translate_ba")
        assert sorted({r["graph"] for r in rows}) == sorted(graphs)
        assert all(r["status"] == "ok" for r in rows), [r for r in rows if r["status"] != "ok"]
        flops = {r["graph"]: r.get("flops_per_item") for r in rows if r["backend"] == "onnxruntime-cpu"}
        assert flops["translate_ab"] == flops["encoder"] + flops["decoder_b"]


@pytest.fixture(scope="module")
def styled(tiny_bundle):
    return load(tiny_bundle("cyclevae-style")[0], backend="onnxruntime", device="cpu")


class TestStyles:
    """A model with a style code per domain (--style-dim): the content crosses, the target's style is its prior's."""

    def test_the_manifest_names_the_style_part_of_the_latent(self, tiny_bundle):
        assert tiny_bundle("cyclevae-style")[1].model.style_dim == 2
        assert tiny_bundle("cyclevae")[1].model.style_dim == 0
        assert "style_dim" not in json.loads((tiny_bundle("vaegan")[0] / MANIFEST_FILE).read_text())["model"]

    def test_a_translation_is_the_source_content_with_the_targets_typical_style(self, styled, images):
        a, _ = images
        x = (a.transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1).astype(np.float32)
        mean = styled.choice.runners["encoder"].run({"images": x})[0]
        assert np.abs(mean[:, -2:]).max() > 0  # the source's own style, which the translation does not take
        typical = np.concatenate([mean[:, :-2], np.zeros((len(mean), 2), np.float32)], axis=1)
        out = styled.choice.runners["decoder_b"].run({"latents": typical})[0]
        np.testing.assert_array_equal(styled.translate(a, "b"), styled._to_items(out))
        as_is = styled._to_items(styled.choice.runners["decoder_b"].run({"latents": mean})[0])
        assert not np.array_equal(styled.translate(a, "b"), as_is)

    def test_a_style_seed_draws_each_images_style_reproducibly(self, styled, images):
        a, _ = images
        first, again, other = (styled.translate(a, "b", style_seed=s) for s in (3, 3, 4))
        assert np.array_equal(first, again) and not np.array_equal(first, other)
        assert not np.array_equal(first, styled.translate(a, "b"))

    def test_a_style_seed_for_a_model_without_styles_is_refused(self, model, images):
        with pytest.raises(BadInputError, match="this model has no style code to draw"):
            model.translate(images[0], "b", style_seed=0)

    def test_the_command_draws_styles_and_refuses_them_without(self, tiny_bundle, styled, tmp_path, images):
        from PIL import Image

        Image.fromarray(images[0][0, :, :, 0]).save(tmp_path / "a.png")
        result = invoke("translate", tiny_bundle("cyclevae-style")[0], tmp_path / "a.png", "--to", "b",
                        "--style-seed", 7, "--out", tmp_path / "t.npy", *CPU)
        assert result.exit_code == 0, result.output
        np.testing.assert_array_equal(np.load(tmp_path / "t.npy"), styled.translate(images[0][:1], "b", style_seed=7))
        line = error_line(invoke("translate", tiny_bundle("cyclevae")[0], tmp_path / "a.png", "--to", "b",
                                 "--style-seed", 7, *CPU))
        assert "has no style code to draw" in line

    def test_a_run_and_its_bundle_translate_alike(self, tiny_run, tiny_bundle, images):
        from gvtool.eval.evaluate import open_target

        run, bundle = open_target(tiny_run("cyclevae-style")), open_target(tiny_bundle("cyclevae-style")[0])
        for source, target in ((images[0], 1), (images[1], 0)):
            x = np.ascontiguousarray(source.transpose(0, 3, 1, 2))
            got, want = bundle.translate(x, target), run.translate(x, target)
            assert np.abs(got.astype(int) - want.astype(int)).max() <= 1

    def test_info_says_which_values_are_style(self, tiny_bundle):
        result = invoke("info", tiny_bundle("cyclevae-style")[0])
        assert "latent 4 (the last 2 each domain's style)" in " ".join(result.output.split())

    @pytest.mark.parametrize("value, match", [(4, "model.style_dim must be from 0 to 3"),
                                              (-1, "model.style_dim must be from 0 to 3"),
                                              ("2", "model.style_dim")])
    def test_a_style_part_outside_the_latent_is_refused(self, tiny_bundle, value, match):
        raw = json.loads((tiny_bundle("cyclevae-style")[0] / MANIFEST_FILE).read_text())
        raw["model"]["style_dim"] = value
        with pytest.raises(SchemaError, match=match):
            check_manifest(raw)

    def test_a_style_part_on_a_one_domain_model_is_refused(self, tiny_bundle):
        raw = json.loads((tiny_bundle("vaegan")[0] / MANIFEST_FILE).read_text())
        raw["model"]["style_dim"] = 1
        with pytest.raises(SchemaError, match="are for translation models, not vaegan"):
            check_manifest(raw)

    def test_a_manifest_from_before_styles_reads_as_one_shared_code(self, tiny_bundle):
        raw = _raw(tiny_bundle)
        del raw["model"]["style_dim"]
        check_manifest(raw)
        assert ModelInfo.from_dict(raw["model"]).style_dim == 0


@pytest.fixture(scope="module")
def domains(tmp_path_factory):
    """Two labelled domains of 100 items (eval's precision/recall need more held-out items than the tiny runs')."""
    folder, rng = tmp_path_factory.mktemp("eval-domains"), np.random.default_rng(3)
    np.savez(folder / "a.npz", x=rng.integers(0, 256, (100, 16, 16), dtype=np.uint8), y=np.arange(100) % 4)
    np.savez(folder / "b.npz", x=rng.integers(0, 256, (100, 20, 20, 3), dtype=np.uint8), y=np.arange(100) % 4)
    return str(folder / "a.npz"), str(folder / "b.npz")


class TestEval:
    @pytest.mark.parametrize("target", ["run", "bundle"])
    def test_both_directions_are_measured(self, tiny_run, tiny_bundle, domains, target, tmp_path, monkeypatch):
        from gvtool.eval.evaluate import evaluate

        monkeypatch.chdir(tmp_path)  # the evaluators' cache
        path = tiny_run("cyclevae") if target == "run" else tiny_bundle("cyclevae")[0]
        result = evaluate(path, n=20, data_source=domains[0], data_b_source=domains[1])
        assert set(result["translation"]) == {"a_to_b", "b_to_a"}
        ab = result["translation"]["a_to_b"]
        assert (ab["source"], ab["target"], ab["n"]) == ("a.npz", "b.npz", 10)
        assert 0 <= ab["class_kept"] <= 1 and ab["frechet_distance"] >= 0 and ab["cycle_mse"] > 0
        assert set(ab["prdc"]) >= {"precision", "recall"} and ab["real_reference"]["n"] == 10

    def test_domain_b_data_is_refused_for_a_one_domain_model(self, tiny_run, domains):
        from gvtool.eval.evaluate import evaluate

        with pytest.raises(BadInputError, match="--data-b is a translation model's domain B"):
            evaluate(tiny_run("vaegan"), n=20, data_b_source=domains[1])
