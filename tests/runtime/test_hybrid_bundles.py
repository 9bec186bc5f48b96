"""Bundles of the hybrids (ali, prior, hier), end to end: the chains their manifests declare, sampling and
decoding through them in the runtime and the CLI (torch-free), a run and its bundle computing the same, each stage
benchmarked on its own, and what a model cannot do refused in one line."""

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
from gvtool.manifest import CHAINS, MANIFEST_FILE, SchemaError, check_manifest, read_manifest
from gvtool.runtime.model import Noise, load
from runtime_helpers import copy_bundle

CPU = ("--device", "cpu")
REPO = Path(__file__).resolve().parents[2]
HYBRIDS = ("ali", "prior", "prior-conditional", "hier", "hier-conditional", "hier-ring8")


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def model(tiny_bundle):
    cache = {}

    def get(name: str):
        if name not in cache:
            cache[name] = load(tiny_bundle(name)[0], backend="onnxruntime", device="cpu")
        return cache[name]

    return get


class TestChainsInTheManifest:
    @pytest.mark.parametrize("name", HYBRIDS)
    def test_the_manifest_records_the_kinds_graphs_and_chains(self, tiny_bundle, name):
        folder, manifest, _ = tiny_bundle(name)
        declared = CHAINS[manifest.model.kind]
        raw = json.loads((folder / MANIFEST_FILE).read_text())["model"]
        assert (raw["latent_prior"], raw["decoding"]) == (list(declared.latent_prior), list(declared.decoding))
        assert {g.graph for g in manifest.graphs.values()} == set(declared.graphs)

    def test_the_graphs_of_a_chain_are_wired_by_their_tensor_names(self, tiny_bundle):
        _, manifest, _ = tiny_bundle("hier")
        coarse, detail = manifest.graphs["coarse.fp32"], manifest.graphs["detail.fp32"]
        assert [s.name for s in coarse.inputs] == ["latents"] and [s.name for s in coarse.outputs] == ["coarse"]
        assert [s.name for s in detail.inputs] == ["coarse", "detail_noise"]
        assert detail.inputs[0].shape == coarse.outputs[0].shape == ("batch", 1, 4, 4)
        prior = tiny_bundle("prior")[1].graphs["prior.fp32"]
        assert [s.name for s in prior.inputs] == ["noise", "latent_noise"]
        assert [s.name for s in prior.outputs] == ["latents"]

    def _raw(self, tiny_bundle, name="hier") -> dict:
        return json.loads((tiny_bundle(name)[0] / MANIFEST_FILE).read_text())

    def test_a_chain_of_an_unknown_graph_is_refused(self, tiny_bundle):
        raw = self._raw(tiny_bundle)
        raw["model"]["decoding"] = ["coarse", "upscaler"]
        with pytest.raises(SchemaError, match="model.decoding must be a list of graph names"):
            check_manifest(raw)

    def test_a_chain_through_a_graph_the_bundle_lacks_is_refused(self, tiny_bundle):
        raw = self._raw(tiny_bundle)
        raw["graphs"] = {k: v for k, v in raw["graphs"].items() if not k.startswith("detail.")}
        with pytest.raises(SchemaError, match="model.decoding chains detail, which the bundle's graphs lack"):
            check_manifest(raw)

    def test_an_empty_decoding_chain_is_refused(self, tiny_bundle):
        raw = self._raw(tiny_bundle)
        raw["model"]["decoding"] = []
        with pytest.raises(SchemaError, match="not empty"):
            check_manifest(raw)

    def test_a_manifest_from_before_the_chains_takes_its_kinds_declaration(self, tiny_bundle, tmp_path):
        copy = copy_bundle(tiny_bundle("prior")[0], tmp_path / "b")
        raw = json.loads((copy / MANIFEST_FILE).read_text())
        del raw["model"]["latent_prior"], raw["model"]["decoding"]
        (copy / MANIFEST_FILE).write_text(json.dumps(raw))
        got = read_manifest(copy).model
        assert (got.latent_prior, got.decoding) == (("prior",), ("decoder",))


class TestSampling:
    @pytest.mark.parametrize("name", HYBRIDS)
    def test_sampling_is_seeded_and_chunks_give_what_one_call_gives(self, model, name):
        m = model(name)
        whole = m.sample(7, seed=3)
        assert np.array_equal(whole, m.sample(7, seed=3))
        assert not np.array_equal(whole, m.sample(7, seed=4))
        assert np.array_equal(np.concatenate(list(m.sample_chunks(7, seed=3, chunk=3))), whole)

    def test_a_prior_model_samples_its_latents_through_the_prior_graph(self, model, tiny_bundle):
        m = model("prior")
        noise = Noise(5)
        feeds = {"noise": noise("noise", 6, (m.latent_dim,)), "latent_noise": noise("latent_noise", 6, (m.latent_dim,))}
        prior = m.choice.runners["prior"].run(feeds)[0]
        np.testing.assert_array_equal(m.sample_latents(6, seed=5), prior)
        np.testing.assert_array_equal(m.sample(6, seed=5), m.decode(prior))

    def test_a_hier_model_samples_coarse_then_detail(self, model):
        m = model("hier")
        noise = Noise(2)
        latents, detail_noise = noise("latents", 4, (m.latent_dim,)), noise("detail_noise", 4, (16,))
        coarse = m.choice.runners["coarse"].run({"latents": latents})[0]
        images = m.choice.runners["detail"].run({"coarse": coarse, "detail_noise": detail_noise})[0]
        np.testing.assert_array_equal(m.sample(4, seed=2), m._to_items(images))
        np.testing.assert_array_equal(m.sample_latents(4, seed=2), latents)  # hier's latents are N(0, I)

    def test_the_latent_stream_is_the_one_bundles_always_drew(self, model):
        """"latents" come from default_rng(seed), as before chains: a vaegan bundle samples what it sampled."""
        got = Noise(9, 0.5)("latents", 3, (4,))
        np.testing.assert_array_equal(got, (np.random.default_rng(9).standard_normal((3, 4)) * 0.5).astype(np.float32))

    def test_hier_decoding_draws_its_detail_with_the_seed_given(self, model):
        m = model("hier")
        z = m.sample_latents(3, seed=0)
        assert np.array_equal(m.decode(z, seed=1), m.decode(z, seed=1))
        assert not np.array_equal(m.decode(z, seed=1), m.decode(z, seed=2))

    def test_an_interpolation_keeps_one_detail_along_its_path(self, model):
        m = model("hier")
        z = m.sample_latents(1, seed=0)[0]
        path = m.interpolate(z, z, steps=4)  # the same latent at every step: every frame equal
        assert all(np.array_equal(path[0], frame) for frame in path[1:])

    @pytest.mark.parametrize("name", ["prior-conditional", "hier-conditional"])
    def test_conditional_hybrids_take_labels(self, model, name):
        m = model(name)
        assert m.sample(4, seed=0, labels=1).shape == (4, 16, 16, 1)
        with pytest.raises(BadInputError, match="out of range"):
            m.sample(2, labels=9)


class TestRunAndBundleAgree:
    @pytest.mark.parametrize("name", ["ali", "prior", "hier", "hier-ring8"])
    def test_samples_and_reconstructions_of_a_run_equal_its_bundles(self, tiny_run, tiny_bundle, name):
        from gvtool.eval.evaluate import open_target

        run, bundle = open_target(tiny_run(name)), open_target(tiny_bundle(name)[0])
        a, b = run.sample(20, 1), bundle.sample(20, 1)
        assert a.shape == b.shape
        assert np.abs(a.astype(np.float64) - b.astype(np.float64)).max() <= (1 if a.dtype == np.uint8 else 1e-4)
        items = b[:5] if a.dtype == np.uint8 else b[:5].astype(np.float32)
        labels = np.arange(5) % 4 if run.config.model.conditional else None
        r, s = run.reconstruct(items, labels), bundle.reconstruct(items, labels)
        assert np.abs(r.astype(np.float64) - s.astype(np.float64)).max() <= (1 if r.dtype == np.uint8 else 1e-4)


class TestCommands:
    @pytest.mark.parametrize("name", ["ali", "prior", "hier"])
    def test_sample_encode_reconstruct_and_interpolate(self, tiny_bundle, tmp_path, name):
        folder = tiny_bundle(name)[0]
        assert invoke("sample", folder, "--n", 8, "--out", tmp_path / "s.png", *CPU).exit_code == 0
        assert invoke("sample", folder, "--n", 8, "--seed", 1, "--out", tmp_path / "s.npy", *CPU).exit_code == 0
        m = load(folder, device="cpu")
        assert np.array_equal(np.load(tmp_path / "s.npy"), m.sample(8, seed=1))
        assert invoke("encode", folder, tmp_path / "s.png", "--out", tmp_path / "z.npy", *CPU).exit_code == 0
        assert np.load(tmp_path / "z.npy").shape == (1, m.latent_dim)
        assert invoke("decode", folder, tmp_path / "z.npy", "--out", tmp_path / "d.png", *CPU).exit_code == 0
        rebuilt = invoke("reconstruct", folder, tmp_path / "s.png", "--out", tmp_path / "r.png", *CPU)
        if m.conditional:  # the tiny ali is conditional: its decoder needs each image's label
            assert "needs each image's label" in error_line(rebuilt)
        else:
            assert rebuilt.exit_code == 0
        assert invoke("interpolate", folder, "--from", 1, "--to", 2, "--out", tmp_path / "i.png", *CPU).exit_code == 0

    def test_a_vector_hybrid_encodes_and_reconstructs_npy_vectors(self, tiny_bundle, tmp_path):
        folder = tiny_bundle("hier-ring8")[0]
        np.save(tmp_path / "v.npy", np.array([[1.0, 0.0], [0.0, -1.0]], np.float32))
        assert invoke("encode", folder, tmp_path / "v.npy", "--out", tmp_path / "z.npy", *CPU).exit_code == 0
        assert invoke("reconstruct", folder, tmp_path / "v.npy", "--out", tmp_path / "r.npy", *CPU).exit_code == 0
        assert np.load(tmp_path / "r.npy").shape == (2, 2)
        np.save(tmp_path / "bad.npy", np.zeros((2, 3), np.float32))
        line = error_line(invoke("encode", folder, tmp_path / "bad.npy", "--out", tmp_path / "z.npy", *CPU))
        assert "a vector model encodes numbers of shape (N, 2)" in line

    def test_the_hier_stages_are_each_timed_by_bench(self, tiny_bundle, tmp_path):
        result = invoke("bench", "run", tiny_bundle("hier")[0], "--backend", "onnxruntime", "--precision", "fp32",
                        "--batch-sizes", "1,2", "--iterations", 3, "--warmup-ms", 0, "--json", tmp_path / "b.json")
        assert result.exit_code == 0, result.output
        rows = json.loads((tmp_path / "b.json").read_text())["results"]
        assert [(r["graph"], r["batch"]) for r in rows] == [(g, b) for g in ("encoder", "coarse", "detail")
                                                            for b in (1, 2)]
        assert all(r["status"] == "ok" for r in rows)

    def test_a_prior_bundle_samples_with_torch_blocked(self, tiny_bundle, tmp_path):
        env = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        code = "import sys; sys.modules['torch'] = None; from gvtool.cli import main; main()"
        result = subprocess.run([sys.executable, "-c", code, "sample", str(tiny_bundle("prior")[0]), "--n", "4",
                                 "--device", "cpu", "--out", "OUT.npy"],
                                cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert np.load(tmp_path / "OUT.npy").shape == (4, 16, 16, 1)


class TestTrainCommand:
    def test_a_prior_refuses_options_that_describe_another_model(self, tiny_run, tmp_path):
        line = error_line(invoke("train", "--model", "prior", "--base", tiny_run("vaegan"), "--width", 8,
                                 "--out", tmp_path / "p"))
        assert "takes its model and data from its base run" in line and "--width" in line

    def test_base_is_for_priors_only(self, tiny_run, tmp_path):
        line = error_line(invoke("train", "--model", "hier", "--base", tiny_run("vaegan"), "--out", tmp_path / "h"))
        assert "--base applies to --model prior, not to --model hier" in line

    def test_a_prior_of_a_gan_is_refused(self, tiny_run, tmp_path):
        line = error_line(invoke("train", "--model", "prior", "--base", tiny_run("gan"), "--out", tmp_path / "p"))
        assert "is a gan run; a prior learns the codes of a vaegan, vae, ali run" in line

    def test_without_base_a_prior_takes_the_newest_run_with_an_encoder(self, tiny_run, tmp_path, monkeypatch):
        import shutil

        runs = tmp_path / "runs"
        shutil.copytree(tiny_run("vaegan"), runs / "a-vaegan")
        shutil.copytree(tiny_run("gan"), runs / "b-gan")  # newer, but no encoder
        monkeypatch.chdir(tmp_path)
        result = invoke("train", "--model", "prior", "--epochs", 1, "--batch-size", 8, "--prior-hidden", 8,
                        "--prior-layers", 1, "--out", tmp_path / "p", *CPU)
        assert result.exit_code == 0, result.output
        config = json.loads((tmp_path / "p" / "config.json").read_text())
        assert config["base"] == str((runs / "a-vaegan").resolve())
        assert config["model"]["prior_hidden"] == 8


class TestRefusals:
    def test_a_model_without_an_encoder_cannot_reconstruct(self, tiny_bundle):
        with pytest.raises(BadInputError, match="holds a gan model, which has no encoder graph: it cannot reconstruct"):
            load(tiny_bundle("gan")[0], device="cpu", operation="reconstruct")

    def test_an_unknown_operation_is_refused(self, tiny_bundle):
        with pytest.raises(BadInputError, match="unknown operation 'upscale'"):
            load(tiny_bundle("hier")[0], device="cpu", operation="upscale")

    def test_sampling_with_a_stage_left_out_names_it(self, tiny_bundle):
        m = load(tiny_bundle("hier")[0], device="cpu", graphs=("coarse",))
        with pytest.raises(BadInputError, match="sample runs coarse -> detail, and the detail graph was not loaded"):
            m.sample(2)
