"""Bundles of a text-conditioned model, end to end: a tiny run trained on captions, exported with the real
all-MiniLM-L6-v2 text encoder (fp32 and weight-only int8) and its tokenizer; prompts to images in the runtime and the
CLI without torch, a run and its bundle agreeing, the prompt path in bench, and the refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from PIL import Image

from cli_helpers import error_line
from gvtool.cli import main
from gvtool.errors import BadBundleError, BadInputError
from gvtool.manifest import MANIFEST_FILE, SchemaError, check_manifest
from gvtool.prompts import MAX_TOKENS
from gvtool.runtime.model import load
from runtime_helpers import copy_bundle, edit_manifest, flip_byte

REPO = Path(__file__).resolve().parents[2]
PROMPTS = ("a thin 0", "a thick 1", "a thin 2", "a thick 3")
_cache: dict[str, Path] = {}

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.text_encoder]


@pytest.fixture(scope="module")
def text_run(tmp_path_factory, labelled_npz, make_train_config):
    from gvtool.train.loop import train

    if "run" not in _cache:
        folder = tmp_path_factory.mktemp("text")
        (folder / "captions.txt").write_text("".join(f"{PROMPTS[i % 4]}\n" for i in range(40)))
        config = make_train_config(labelled_npz, conditional=True, captions=str(folder / "captions.txt"))
        train(config, folder / "run")
        _cache["run"] = folder / "run"
    return _cache["run"]


@pytest.fixture(scope="module")
def text_bundle(text_run, tmp_path_factory):
    from gvtool.export.bundle import export_bundle

    if "bundle" not in _cache:
        lines = []
        _cache["bundle"], _ = export_bundle(text_run, tmp_path_factory.mktemp("text-bundle") / "bundle",
                                            precisions=("fp32", "int8"), log=lines.append)
    return _cache["bundle"]


@pytest.fixture(scope="module")
def model(text_bundle):
    return load(text_bundle, backend="onnxruntime", device="cpu")


def raw(bundle) -> dict:
    return json.loads((Path(bundle) / MANIFEST_FILE).read_text())


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


class TestManifest:
    def test_records_the_prompts_tokenizer_and_the_text_encoder(self, text_bundle):
        manifest = raw(text_bundle)
        text = manifest["model"]["text"]
        assert (text["dim"], text["max_tokens"], text["tokenizer_file"]) == (384, MAX_TOKENS, "tokenizer.json")
        assert set(manifest["graphs"]) == {f"{g}.{p}" for g in ("encoder", "decoder", "text_encoder")
                                           for p in ("fp32", "int8")}
        decoder = manifest["graphs"]["decoder.fp32"]["inputs"]
        assert decoder[1] == {"name": "text_embedding", "dtype": "float32", "shape": ["batch", 384]}
        assert [i["name"] for i in manifest["graphs"]["text_encoder.fp32"]["inputs"]] == ["input_ids", "attention_mask"]

    def test_the_int8_text_encoder_is_weight_only_and_judged_by_cosine(self, text_bundle):
        entry = raw(text_bundle)["graphs"]["text_encoder.int8"]
        assert entry["validation"]["metric"] == "cosine"
        assert 0 < entry["validation"]["cosine_gap"] < 0.01 and entry["validation"]["passed"]
        graph = onnx.load(str(text_bundle / entry["file"])).graph
        ops = {n.op_type for n in graph.node}
        assert "DequantizeLinear" in ops and "QuantizeLinear" not in ops  # activations stay float
        int8 = [i for i in graph.initializer if i.data_type == onnx.TensorProto.INT8 and len(i.dims) == 2]
        assert len(int8) == 6 * 6 + 1  # six linear layers in each of six layers, and the word table
        assert entry["bytes"] < raw(text_bundle)["graphs"]["text_encoder.fp32"]["bytes"] / 3

    def test_text_on_a_model_without_it_is_refused(self, text_bundle):
        manifest = raw(text_bundle)
        manifest["model"]["kind"] = "ali"
        with pytest.raises(SchemaError, match="model.text is for conditional"):
            check_manifest(manifest)
        manifest = raw(text_bundle)
        del manifest["model"]["text"]
        with pytest.raises(SchemaError):
            check_manifest(manifest)

    def test_a_text_embedding_of_another_size_is_refused(self, text_bundle):
        manifest = raw(text_bundle)
        manifest["model"]["text"]["dim"] = 100
        with pytest.raises(SchemaError, match="model.text.dim is 100"):
            check_manifest(manifest)

    def test_a_changed_tokenizer_is_refused(self, text_bundle, tmp_path):
        bundle = copy_bundle(text_bundle, tmp_path / "b")
        flip_byte(bundle / "tokenizer.json")
        with pytest.raises(BadBundleError, match="does not match the manifest"):
            load(bundle, backend="onnxruntime").sample(2, labels="a thin 0")

    def test_a_tokenizer_outside_the_bundle_is_refused(self, text_bundle, tmp_path):
        bundle = copy_bundle(text_bundle, tmp_path / "b")
        edit_manifest(bundle, lambda m: m["model"]["text"].update(tokenizer_file="../tokenizer.json"))
        with pytest.raises(BadBundleError, match="outside the bundle"):
            load(bundle, backend="onnxruntime")


class TestPrompts:
    def test_a_prompt_gives_images_and_the_same_seed_the_same(self, model):
        a = model.sample(6, seed=1, labels="a thin 0")
        assert a.shape == (6, 16, 16, 1) and a.dtype == np.uint8
        assert np.array_equal(a, model.sample(6, seed=1, labels="a thin 0"))
        assert not np.array_equal(a, model.sample(6, seed=1, labels="a thick 3"))

    def test_one_prompt_per_item(self, model):
        mixed = model.sample(4, seed=2, labels=["a thin 0", "a thin 0", "a thick 3", "a thick 3"])
        assert np.array_equal(mixed[:2], model.sample(4, seed=2, labels="a thin 0")[:2])
        assert np.array_equal(mixed[2:], model.sample(4, seed=2, labels="a thick 3")[2:])

    def test_chunks_give_what_one_call_gives(self, model):
        whole = model.sample(7, seed=3, labels="a thick 1")
        assert np.array_equal(np.concatenate(list(model.sample_chunks(7, 3, "a thick 1", chunk=3))), whole)

    def test_int8_follows_fp32(self, text_bundle, model):
        int8 = load(text_bundle, backend="onnxruntime", precision="int8")
        diff = np.abs(int8.sample(16, seed=0, labels="a thin 2").astype(float) - model.sample(16, seed=0, labels="a thin 2"))
        assert diff.mean() < 0.1 * 255

    def test_decode_and_reconstruct_take_prompts(self, model):
        images = model.sample(3, seed=0, labels="a thin 0")
        assert model.reconstruct(images, labels="a thin 0").shape == images.shape
        assert model.decode(np.zeros((2, 4), np.float32), labels=["a thin 0", "a thick 1"]).shape == (2, 16, 16, 1)

    @pytest.mark.parametrize("prompts, message", [
        (None, "give a prompt"), ("", "has no words"), ("一个细的四", "not in Latin letters"),
        (["a", "b"], "got 2 prompts for 3 items"), (3, "takes prompts as strings"),
    ])
    def test_bad_prompts_are_refused(self, model, prompts, message):
        with pytest.raises(BadInputError, match=message):
            model.sample(3, labels=prompts)

    def test_a_run_and_its_bundle_draw_alike(self, text_run, text_bundle):
        from gvtool.eval.evaluate import open_target

        prompts = ["a thin 0", "a thick 3"] * 4
        from_run = open_target(text_run).sample(8, 5, prompts)
        from_bundle = open_target(text_bundle).sample(8, 5, prompts)
        assert np.abs(from_run.astype(int) - from_bundle).max() <= 2


class TestCommands:
    def test_sample_with_prompts_makes_a_row_per_prompt_without_torch(self, text_bundle, tmp_path):
        env = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        code = "import sys; sys.modules['torch'] = None; from gvtool.cli import main; main()"
        result = subprocess.run([sys.executable, "-c", code, "sample", str(text_bundle), "--prompt", "a thin 0",
                                 "--prompt", "a thick 3", "--n", "5", "--device", "cpu", "--out", "grid.png"],
                                cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert Image.open(tmp_path / "grid.png").size == (5 * 18 + 2, 2 * 18 + 2)  # 5 columns, a row per prompt

    @pytest.mark.parametrize("args, message", [
        ((), "give --prompt"), (("--prompt", "a thin 0", "--label", "1"), "--label is for class-conditional"),
        (("--prompt", "  "), "has no words"),
    ])
    def test_refusals_are_one_line(self, text_bundle, tmp_path, args, message):
        line = error_line(invoke("sample", text_bundle, *args, "--device", "cpu", "--out", tmp_path / "s.png"))
        assert message in line

    def test_a_prompt_to_a_model_without_text_is_one_line(self, labelled_npz, make_train_config, tmp_path):
        from export_fixtures import tiny_bundle  # noqa: F401  (the shared bundles: not needed, a plain run is)
        from gvtool.export.bundle import export_bundle
        from gvtool.train.loop import train

        train(make_train_config(labelled_npz, kind="gan"), tmp_path / "run")
        bundle, _ = export_bundle(tmp_path / "run", tmp_path / "bundle", precisions=("fp32",))
        line = error_line(invoke("sample", bundle, "--prompt", "a thin 0", "--out", tmp_path / "s.png"))
        assert "--prompt is for text-conditioned models" in line

    def test_bench_times_the_prompt_to_images_path(self, text_bundle, tmp_path):
        result = invoke("bench", "run", text_bundle, "--backend", "onnxruntime", "--precision", "fp32",
                        "--batch-sizes", "1,4", "--iterations", 2, "--warmup-ms", 0, "--json", tmp_path / "b.json")
        assert result.exit_code == 0, result.output
        rows = json.loads((tmp_path / "b.json").read_text())["results"]
        assert {r["graph"] for r in rows} == {"encoder", "decoder", "text_encoder", "prompt_to_images"}
        assert all(r["status"] == "ok" for r in rows), [r for r in rows if r["status"] != "ok"]


class TestOtherCommandsTakeAPrompt:
    def test_decode_reconstruct_and_interpolate(self, text_bundle, tmp_path, model):
        import numpy as np

        np.save(tmp_path / "z.npy", np.zeros((3, 4), np.float32))
        assert invoke("decode", text_bundle, tmp_path / "z.npy", "--prompt", "a thin 0", "--out",
                      tmp_path / "d.png").exit_code == 0
        Image.fromarray(model.sample(1, seed=0, labels="a thin 0")[0, :, :, 0]).save(tmp_path / "x.png")
        assert invoke("reconstruct", text_bundle, tmp_path / "x.png", "--prompt", "a thin 0", "--out",
                      tmp_path / "r.png").exit_code == 0
        result = invoke("interpolate", text_bundle, "--from", 0, "--to", 1, "--steps", 4, "--prompt", "a thick 3",
                        "--out", tmp_path / "i.npy")
        assert result.exit_code == 0, result.output
        assert np.load(tmp_path / "i.npy").shape == (4, 16, 16, 1)

    @pytest.mark.parametrize("command", ["decode", "interpolate"])
    def test_without_a_prompt_they_say_so(self, text_bundle, tmp_path, command):
        import numpy as np

        np.save(tmp_path / "z.npy", np.zeros((3, 4), np.float32))
        args = (tmp_path / "z.npy",) if command == "decode" else ("--from", 0, "--to", 1)
        assert "give --prompt" in error_line(invoke(command, text_bundle, *args, "--out", tmp_path / "o.npy"))
