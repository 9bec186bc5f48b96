"""Bundles of a joint model of images and labels (mvae), end to end: its graphs in the manifest, the masks, imputing
and classifying in the runtime and the CLI (torch-free), a run and its bundle agreeing, the paths bench times, the
imputation metrics of eval, and the refusals; with captions as a third modality, prompts through the caption's
expert."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from cli_helpers import error_line
from export_fixtures import tiny_bundle, tiny_run  # noqa: F401
from gvtool.cli import main
from gvtool.errors import BadInputError
from gvtool.masks import MASK_KINDS, make_masks, mask_from_image, mixed_masks, resolve_masks
from gvtool.runtime.model import load

CPU = ("--device", "cpu")
REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def model(tiny_bundle):
    return load(tiny_bundle("mvae")[0], backend="onnxruntime", device="cpu")


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(5).integers(0, 256, (5, 16, 16, 1), dtype=np.uint8)


@pytest.fixture
def files(images, tmp_path):
    paths = []
    for i, image in enumerate(images[:3]):
        paths.append(tmp_path / f"digit{i}.png")
        Image.fromarray(image[:, :, 0]).save(paths[-1])
    return paths


class TestMasks:
    @pytest.mark.parametrize("kind, hidden_rows, hidden_cols", [
        ("top", slice(0, 4), slice(None)), ("bottom", slice(12, 16), slice(None)),
        ("left", slice(None), slice(0, 4)), ("right", slice(None), slice(12, 16))])
    def test_bands_hide_that_share_of_lines_from_their_edge(self, kind, hidden_rows, hidden_cols):
        mask = make_masks(kind, 2, 16, 0.25)
        assert mask.shape == (2, 1, 16, 16) and mask.dtype == np.float32
        want = np.ones((16, 16), np.float32)
        want[hidden_rows, hidden_cols] = 0
        assert (mask[:, 0] == want).all()

    @pytest.mark.parametrize("missing, rows", [(0.25, 7), (0.5, 14), (0.75, 21)])
    def test_a_28_pixel_side_hides_the_rounded_share(self, missing, rows):
        assert (make_masks("top", 1, 28, missing)[0, 0] == 0).all(axis=1).sum() == rows

    def test_random_masks_are_seeded_and_hide_about_the_share(self):
        a, b = make_masks("random", 50, 16, 0.75, seed=3), make_masks("random", 50, 16, 0.75, seed=3)
        assert (a == b).all() and not (a == make_masks("random", 50, 16, 0.75, seed=4)).all()
        assert 1 - a.mean() == pytest.approx(0.75, abs=0.02)

    def test_a_mask_image_marks_what_to_fill_in_white_and_is_resized(self, tmp_path):
        picture = np.zeros((32, 32), np.uint8)
        picture[16:] = 255  # the bottom half is missing
        Image.fromarray(picture).save(tmp_path / "m.png")
        mask = mask_from_image(tmp_path / "m.png", 16)
        assert mask.shape == (1, 1, 16, 16) and (mask[0, 0, :8] == 1).all() and (mask[0, 0, 8:] == 0).all()
        assert (resolve_masks(str(tmp_path / "m.png"), 3, 16) == mask).all()

    def test_mixed_masks_cycle_through_whole_and_every_kind(self):
        masks = mixed_masks(16, 16)
        assert masks[0].all() and not masks[1:].all(axis=(1, 2, 3)).any()

    def test_arrays_are_taken_per_image_or_for_all(self):
        one = make_masks("left", 1, 16, 0.5)[0, 0]
        assert resolve_masks(one, 4, 16).shape == (4, 1, 16, 16)
        assert resolve_masks(None, 2, 16).all()

    @pytest.mark.parametrize("mask, message", [
        ("diagonal", "neither a mask kind"), (np.full((16, 16), 0.5), "0 \\(missing\\) and 1"),
        (np.ones((3, 16, 16)), "one per image"), (np.ones((8, 8)), "expected \\(16, 16\\)")])
    def test_bad_masks(self, mask, message):
        with pytest.raises(BadInputError, match=message):
            resolve_masks(mask, 2, 16)

    @pytest.mark.parametrize("picture", [np.zeros((8, 8), np.uint8), np.full((8, 8), 255, np.uint8)])
    def test_a_mask_image_that_hides_nothing_or_everything(self, picture, tmp_path):
        Image.fromarray(picture).save(tmp_path / "m.png")
        with pytest.raises(BadInputError, match="marks (no|every) pixel"):
            mask_from_image(tmp_path / "m.png", 16)

    def test_an_unreadable_mask_image(self, tmp_path):
        (tmp_path / "m.png").write_bytes(b"not a picture")
        with pytest.raises(BadInputError, match="cannot read the mask image"):
            mask_from_image(tmp_path / "m.png", 16)

    @pytest.mark.parametrize("missing", [0.0, 1.0, -0.5])
    def test_the_share_missing_is_strictly_between_0_and_1(self, missing):
        with pytest.raises(BadInputError, match="between 0 and 1"):
            make_masks("top", 1, 16, missing)


class TestManifest:
    def test_graphs_and_the_encoders_mask(self, tiny_bundle):
        _, manifest, _ = tiny_bundle("mvae")
        assert {g.graph for g in manifest.graphs.values()} == {"encoder", "label_encoder", "decoder", "classifier"}
        encoder = manifest.graphs["encoder.fp32"]
        assert [t.name for t in encoder.inputs] == ["images", "mask"]
        assert encoder.inputs[1].shape == ("batch", 1, 16, 16)
        assert "whole and masked" in encoder.validation.inputs
        assert manifest.model.latent_prior == ("label_encoder",) and manifest.model.conditional
        assert all(g.validation.passed for g in manifest.graphs.values())


    def test_the_int8_encoder_quantizes_its_convs_and_linears_only(self, tiny_bundle):
        import onnx

        folder, manifest, _ = tiny_bundle("mvae")
        graph = onnx.load(str(folder / manifest.graphs["encoder.int8"].file)).graph
        made_by = {out: n.op_type for n in graph.node for out in n.output}
        quantized = {made_by.get(n.input[0], "input") for n in graph.node if n.op_type == "QuantizeLinear"}
        assert {"Conv", "Gemm"} & quantized  # what the convs and linear layers make is quantized
        # and nothing of the product of experts: the precisions and the posterior stay float
        assert not quantized & {"Tanh", "Exp", "Add", "Mul", "Div", "Log", "Neg"}

    @pytest.mark.parametrize("graph, layers", [("label_encoder", 3), ("classifier", 2)])
    def test_the_int8_mlps_are_weight_only_and_close_to_fp32(self, tiny_bundle, graph, layers):
        import onnx
        import onnxruntime as ort

        folder, manifest, _ = tiny_bundle("mvae")
        int8 = onnx.load(str(folder / manifest.graphs[f"{graph}.int8"].file)).graph
        assert {n.op_type for n in int8.node} >= {"DequantizeLinear"} and "QuantizeLinear" not in {n.op_type for n in int8.node}
        weights = [i for i in int8.initializer if i.data_type == onnx.TensorProto.INT8 and len(i.dims) == 2]
        assert len(weights) == layers  # every Linear's weight, one scale per output row (a torch Linear's Gemm)
        axes = [a.i for n in int8.node if n.op_type == "DequantizeLinear" for a in n.attribute if a.name == "axis"]
        assert axes == [0] * layers
        feeds = {"labels": np.arange(4, dtype=np.int64), "latent_noise": np.zeros((4, 4), np.float32)} \
            if graph == "label_encoder" else {"latents": np.random.default_rng(0).standard_normal((4, 4)).astype(np.float32)}
        runs = [ort.InferenceSession(str(folder / manifest.graphs[f"{graph}.{p}"].file)).run(None, feeds)
                for p in ("fp32", "int8")]
        for a, b in zip(*runs):
            np.testing.assert_allclose(a, b, atol=0.05 * max(1.0, np.abs(a).max()))


class TestRuntime:
    def test_classify_gives_probabilities(self, model, images):
        p = model.classify(images)
        assert p.shape == (5, 4) and p.dtype == np.float32 and np.allclose(p.sum(axis=1), 1, atol=1e-5)

    def test_classify_reads_only_the_visible_part(self, model, images):
        mask = make_masks("bottom", 5, 16, 0.5)
        changed = images.copy()
        changed[:, 8:] = 255 - changed[:, 8:]
        np.testing.assert_allclose(model.classify(images, "bottom"), model.classify(changed, mask), atol=1e-6)

    @pytest.mark.parametrize("kind", MASK_KINDS)
    def test_impute_keeps_every_observed_pixel(self, model, images, kind):
        out = model.impute(images, kind, n=3, missing=0.5, seed=1)
        assert out.shape == (5, 3, 16, 16, 1) and out.dtype == np.uint8
        seen = make_masks(kind, 5, 16, 0.5, seed=1).transpose(0, 2, 3, 1).astype(bool)  # as impute drew them
        assert all((out[i, j][seen[i]] == images[i][seen[i]]).all() for i in range(5) for j in range(3))
        assert (out[:, :, ~seen.all(axis=0)[:, :, 0]] != images[:, None][:, :, ~seen.all(axis=0)[:, :, 0]]).any()

    def test_completions_differ_and_a_seed_repeats_them(self, model, images):
        a = model.impute(images, "top", n=4, seed=2)
        assert (a == model.impute(images, "top", n=4, seed=2)).all()
        assert np.ptp(a.astype(int), axis=1).max() > 0  # the draws differ
        still = model.impute(images, "top", n=3, temperature=0.0)
        assert (still == still[:, :1]).all()  # the posterior mean, three times

    def test_a_known_label_moves_the_completions(self, model, images):
        assert not (model.impute(images, "top", labels=0, temperature=0.0)
                    == model.impute(images, "top", labels=3, temperature=0.0)).all()

    def test_sampling_from_labels_runs_the_label_encoder(self, model):
        assert model.sample(8, seed=0, labels=2).shape == (8, 16, 16, 1)

    def test_encode_sees_whole_images(self, model, images):
        np.testing.assert_allclose(model.encode(images), model._encode(model._to_model(images))[0])

    def test_a_run_and_its_bundle_classify_and_impute_alike(self, tiny_run, tiny_bundle, images):
        from gvtool.eval.evaluate import open_target

        run, bundle = open_target(tiny_run("mvae")), open_target(tiny_bundle("mvae")[0])
        x = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
        masks = make_masks("left", 5, 16, 0.5)
        np.testing.assert_allclose(run.classify(x, masks), bundle.classify(x, masks), atol=1e-4)
        assert np.abs(run.impute(x, masks, 2, 0).astype(int) - bundle.impute(x, masks, 2, 0)).max() <= 1

    @pytest.mark.parametrize("call, message", [
        (lambda m, x: m.impute(x, "top", labels=9), "out of range"),
        (lambda m, x: m.impute(x, "top", n=0), "positive integer"),
        (lambda m, x: m.impute(x, "top", temperature=-1), "temperature"),
        (lambda m, x: m.classify(x, "nowhere"), "neither a mask kind")])
    def test_refusals(self, model, images, call, message):
        with pytest.raises(BadInputError, match=message):
            call(model, images)

    def test_another_model_cannot_impute(self, tiny_bundle, images):
        vaegan = load(tiny_bundle("vaegan")[0], backend="onnxruntime", device="cpu")
        with pytest.raises(BadInputError, match="cannot impute: that takes a joint model"):
            vaegan.impute(images)
        with pytest.raises(BadInputError, match="has no label_encoder graph: it cannot impute"):
            load(tiny_bundle("vaegan")[0], backend="onnxruntime", device="cpu", operation="impute")


class TestCommands:
    def test_impute_and_classify_without_torch(self, tiny_bundle, files, tmp_path):
        env = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        code = "import sys; sys.modules['torch'] = None; from gvtool.cli import main; main()"
        bundle = str(tiny_bundle("mvae")[0])
        result = subprocess.run([sys.executable, "-c", code, "impute", bundle, *map(str, files), "--n", "3",
                                 "--mask", "left", *CPU, "--out", "grid.png"],
                                cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert Image.open(tmp_path / "grid.png").size == (5 * 18 + 2, 3 * 18 + 2)  # original, seen, 3 completions
        result = subprocess.run([sys.executable, "-c", code, "classify", bundle, *map(str, files), *CPU],
                                cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert len(lines) == 3 and all(line.split("\t")[0] == str(f) for line, f in zip(lines, files))
        assert all(0 < float(line.split("\t")[2]) <= 1 for line in lines)

    def test_impute_writes_the_completions_as_npy(self, tiny_bundle, files, tmp_path):
        result = invoke("impute", tiny_bundle("mvae")[0], *files, "--n", "2", "--mask", "random", "--missing", "0.75",
                        "--label", "1", *CPU, "--out", tmp_path / "c.npy")
        assert result.exit_code == 0, result.output
        assert np.load(tmp_path / "c.npy").shape == (3, 2, 16, 16, 1)

    def test_classify_writes_json(self, tiny_bundle, files, tmp_path):
        result = invoke("classify", tiny_bundle("mvae")[0], *files, "--mask", "top", *CPU, "--json", tmp_path / "c.json")
        assert result.exit_code == 0, result.output
        written = json.loads((tmp_path / "c.json").read_text())
        assert len(written["images"]) == 3 and len(written["classes"]) == 4
        assert all(abs(sum(row["probabilities"]) - 1) < 1e-4 for row in written["images"])

    @pytest.mark.parametrize("args, message", [
        (("--mask", "diagonal"), "neither a mask kind"), (("--label", "7"), "out of range"),
        (("--out", "c.gif"), ".png or .npy")])
    def test_refusals_are_one_line(self, tiny_bundle, files, tmp_path, args, message):
        args = tuple(str(tmp_path / a) if a == "c.gif" else a for a in args)
        line = error_line(invoke("impute", tiny_bundle("mvae")[0], *files, *CPU, *args))
        assert message in line

    def test_impute_with_a_model_that_cannot(self, tiny_bundle, files):
        line = error_line(invoke("impute", tiny_bundle("vaegan")[0], *files, *CPU))
        assert "it cannot impute" in line

    def test_bench_times_the_graphs_and_both_joint_paths(self, tiny_bundle, tmp_path):
        result = invoke("bench", "run", tiny_bundle("mvae")[0], "--backend", "onnxruntime,torch", "--precision",
                        "fp32", "--batch-sizes", "1,2", "--iterations", 3, "--warmup-ms", 0, "--json", tmp_path / "b.json")
        assert result.exit_code == 0, result.output
        rows = json.loads((tmp_path / "b.json").read_text())["results"]
        graphs = ("encoder", "label_encoder", "decoder", "classifier", "impute", "classify")
        assert sorted({r["graph"] for r in rows}) == sorted(graphs)
        assert all(r["status"] == "ok" for r in rows), [r for r in rows if r["status"] != "ok"]
        flops = {r["graph"]: r.get("flops_per_item") for r in rows if r["backend"] == "onnxruntime-cpu"}
        assert flops["impute"] == flops["encoder"] + flops["decoder"]

    def test_bench_of_another_model_has_no_joint_paths(self, tiny_bundle, tmp_path):
        result = invoke("bench", "run", tiny_bundle("vaegan")[0], "--backend", "onnxruntime", "--precision", "fp32",
                        "--batch-sizes", "1", "--iterations", 2, "--warmup-ms", 0, "--json", tmp_path / "b.json")
        assert result.exit_code == 0, result.output
        rows = json.loads((tmp_path / "b.json").read_text())["results"]
        assert not {"impute", "classify"} & {r["graph"] for r in rows}


class TestEval:
    def test_imputation_metrics(self, tiny_run, tmp_path, monkeypatch):
        from gvtool.eval.evaluate import _evaluator, open_target
        from gvtool.eval.imputation import IMPUTE_MISSING, imputation_metrics
        from gvtool.train.data import split
        from gvtool.train.loop import load_data

        monkeypatch.chdir(tmp_path)  # the evaluator cache
        target = open_target(tiny_run("mvae"))
        data, _ = load_data(target.config)
        data_split = split(data, 0.25, 0)  # the tiny data's default holds out too few for the whole of eval
        evaluator, meta = _evaluator(data, target.config, lambda _: None)
        result = imputation_metrics(target.classify, target.impute, target.sample(8, 0), data_split, 4, 0,
                                    evaluator, meta)
        assert 0 <= result["label_from_image"]["accuracy"] <= 1
        assert 0 <= result["image_from_label"]["accuracy"] <= 1
        assert list(result["inpainting"]) == [f"{m:g}" for m in IMPUTE_MISSING]
        for block in result["inpainting"].values():
            assert set(block["by_kind"]) == set(MASK_KINDS)
            m = block["mean_over_kinds"]
            assert m["masked_mse_best"] <= m["masked_mse"] and m["diversity"] > 0


PROMPTS = ("a thin 0", "a thick 1", "a thin 2", "a thick 3")  # the tiny data's labels are i % 4
_captioned: dict[str, Path] = {}


@pytest.fixture(scope="module")
def captioned_run(tmp_path_factory, labelled_npz, make_train_config):
    """A tiny joint model of images, labels and captions (one caption per item, naming its label)."""
    from gvtool.train.loop import train

    if "run" not in _captioned:
        folder = tmp_path_factory.mktemp("captioned")
        (folder / "captions.txt").write_text("".join(f"{PROMPTS[i % 4]}\n" for i in range(40)))
        train(make_train_config(labelled_npz, kind="mvae", conditional=True, captions=str(folder / "captions.txt")),
              folder / "run")
        _captioned["run"] = folder / "run"
    return _captioned["run"]


@pytest.fixture(scope="module")
def captioned_bundle(captioned_run):
    from gvtool.export.bundle import export_bundle

    if "bundle" not in _captioned:
        _captioned["bundle"] = captioned_run.parent / "bundle"
        export_bundle(captioned_run, _captioned["bundle"], precisions=("fp32", "int8"))
    return _captioned["bundle"]


@pytest.fixture(scope="module")
def joint(captioned_bundle):
    return load(captioned_bundle, backend="onnxruntime", device="cpu")


@pytest.mark.text_encoder
class TestCaptions:
    """A joint model with captions: prompts draw through the caption's expert, labels through the label's; both
    condition imputation; the manifest records classes and text together."""

    def test_the_manifest_has_classes_text_and_the_caption_expert(self, captioned_bundle):
        from gvtool.manifest import read_manifest

        manifest = read_manifest(captioned_bundle)
        assert manifest.model.num_classes == 4 and manifest.model.text is not None
        assert {"caption_encoder", "text_encoder", "label_encoder"} <= {g.graph for g in manifest.graphs.values()}
        caption = manifest.graph("caption_encoder", "fp32")
        assert [t.name for t in caption.inputs] == ["text_embedding", "latent_noise"]
        assert [t.name for t in caption.outputs] == ["latents", "label_mean", "label_logvar"]

    @pytest.mark.parametrize("change, message", [
        (lambda m: m.update(num_classes=0, conditional=True), "joint \\(mvae\\) models with them"),
        (lambda m: m.update(kind="vaegan"), "without classes")])
    def test_text_beside_classes_is_a_joint_models_only(self, captioned_bundle, change, message):
        from gvtool.manifest import MANIFEST_FILE, SchemaError, check_manifest

        raw = json.loads((captioned_bundle / MANIFEST_FILE).read_text())
        change(raw["model"])
        with pytest.raises(SchemaError, match=message):
            check_manifest(raw)

    def test_a_prompt_draws_through_the_caption_expert_and_a_label_through_the_labels(self, joint, monkeypatch):
        ran = []
        original = joint._run
        monkeypatch.setattr(joint, "_run", lambda graph, feeds: ran.append(graph) or original(graph, feeds))
        by_prompt = joint.sample(4, seed=1, labels="a thick 1")
        assert ran == ["text_encoder", "caption_encoder", "decoder"]
        ran.clear()
        by_label = joint.sample(4, seed=1, labels=1)
        assert ran == ["label_encoder", "decoder"]
        assert by_prompt.shape == by_label.shape == (4, 16, 16, 1) and not (by_prompt == by_label).all()
        assert (joint.sample(4, seed=1, labels="a thick 1") == by_prompt).all()
        assert (joint.sample(2, seed=1, labels=["a thin 0", "a thick 3"])
                != joint.sample(2, seed=1, labels="a thin 0")).any()

    def test_a_prompt_moves_the_completions_and_keeps_the_observed_pixels(self, joint, images):
        from_prompt = joint.impute(images, "top", labels="a thick 3", temperature=0.0)
        assert not (from_prompt == joint.impute(images, "top", temperature=0.0)).all()
        mask = make_masks("top", len(images), 16, 0.5)[:, 0, :, :, None] > 0
        assert (np.where(mask, from_prompt[:, 0], 0) == np.where(mask, images, 0)).all()

    def test_a_run_and_its_bundle_draw_from_prompts_alike(self, captioned_run, captioned_bundle):
        from gvtool.eval.evaluate import open_target

        prompts = list(PROMPTS) * 2
        run, bundle = open_target(captioned_run), open_target(captioned_bundle)
        assert np.abs(run.sample(8, 0, prompts).astype(int) - bundle.sample(8, 0, prompts)).max() <= 1
        assert np.abs(run.sample(8, 0).astype(int) - bundle.sample(8, 0)).max() <= 1  # labels cycled

    def test_sample_and_impute_take_prompts_without_torch(self, captioned_bundle, files, tmp_path):
        env = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        code = "import sys; sys.modules['torch'] = None; from gvtool.cli import main; main()"
        for args in (("sample", captioned_bundle, "--prompt", "a thin 2", "--prompt", "a thick 1", "--n", "3",
                      "--out", "s.png"),
                     ("impute", captioned_bundle, *files, "--prompt", "a thick 3", "--n", "2", "--out", "i.png")):
            result = subprocess.run([sys.executable, "-c", code, *map(str, args), *CPU], cwd=tmp_path, env=env,
                                    capture_output=True, text=True, timeout=180)
            assert result.returncode == 0, result.stderr
        assert Image.open(tmp_path / "s.png").size == (3 * 18 + 2, 2 * 18 + 2)  # a row per prompt
        assert Image.open(tmp_path / "i.png").size == (4 * 18 + 2, 3 * 18 + 2)

    @pytest.mark.parametrize("args, message", [
        (("sample", "--label", "1", "--prompt", "a thin 1"), "give --label or --prompt, not both"),
        (("sample", "--prompt", ""), "has no words")])
    def test_refusals_are_one_line(self, captioned_bundle, tmp_path, args, message):
        command, *rest = args
        line = error_line(invoke(command, captioned_bundle, *rest, "--out", tmp_path / "o.png", *CPU))
        assert message in line

    def test_bench_times_the_caption_expert_and_the_prompt_path_through_it(self, captioned_bundle, tmp_path):
        result = invoke("bench", "run", captioned_bundle, "--backend", "onnxruntime", "--precision", "fp32",
                        "--batch-sizes", "1,4", "--iterations", 2, "--warmup-ms", 0, "--json", tmp_path / "b.json")
        assert result.exit_code == 0, result.output
        rows = json.loads((tmp_path / "b.json").read_text())["results"]
        assert {"caption_encoder", "text_encoder", "impute", "classify", "prompt_to_images"} <= {r["graph"] for r in rows}
        assert all(r["status"] == "ok" for r in rows), [r for r in rows if r["status"] != "ok"]
        flops = {r["graph"]: r.get("flops_per_item") for r in rows}
        assert flops["prompt_to_images"] == flops["caption_encoder"] + flops["decoder"]

    def test_a_prompt_path_runs_the_caption_expert_between(self, joint, captioned_bundle):
        from gvtool.bench.cases import PromptRunner
        from gvtool.manifest import TEXT_INPUTS
        from gvtool.prompts import PromptTokenizer

        ran = []

        class Recording:
            backend, max_batch = "onnxruntime-cpu", None

            def __init__(self, graph):
                self.graph = graph

            def run(self, feeds):
                ran.append((self.graph, sorted(feeds)))
                return joint._run(self.graph, feeds)

        runner = PromptRunner(Recording("text_encoder"), Recording("decoder"), joint.latent_dim,
                              Recording("caption_encoder"))
        tokenizer = PromptTokenizer(captioned_bundle / joint.text.tokenizer_file)
        ids, mask = tokenizer.encode(["a thin 0"] * 3, length=joint.text.max_tokens)
        images = runner.run(dict(zip(TEXT_INPUTS, (ids, mask))))[0]
        assert images.shape == (3, 1, 16, 16)
        assert ran == [("text_encoder", sorted(TEXT_INPUTS)), ("caption_encoder", ["latent_noise", "text_embedding"]),
                       ("decoder", ["latents"])]
