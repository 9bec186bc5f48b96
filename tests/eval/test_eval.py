"""`gvtool eval`: evaluate() on the tiny runs and bundles of export_fixtures.py, its errors, and the CLI command.

Every test chdirs into its tmp_path, so the evaluator cache (./evaluators) lands in a temporary folder.
The conditional tiny run holds out only 4 items, fewer than precision/recall with k = 5 needs (7), so its
image metrics are measured against `eval_npz`: 100 labelled 16x16 images of the same shape and 4 classes
(10 held out), passed as data_source.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from cli_helpers import error_line
from conftest import IMAGE_SIDE, NUM_CLASSES
from export_fixtures import tiny_bundle, tiny_run  # noqa: F401
from gvtool.cli import main
from gvtool.errors import BadInputError
from gvtool.eval import evaluate as evaluate_module
from gvtool.eval.evaluate import evaluate
from gvtool.manifest import MANIFEST_FILE

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N = 50
WIDE = {"COLUMNS": "200"}  # rich tables take the terminal's width; 80 without a terminal
PRDC_KEYS = {"precision", "recall", "density", "coverage", "k"}


def _labelled_npz(path, n_items: int, n_classes: int, seed: int = 1) -> str:
    rng = np.random.default_rng(seed)
    np.savez(path, x=rng.integers(0, 256, size=(n_items, IMAGE_SIDE, IMAGE_SIDE), dtype=np.uint8),
             y=np.arange(n_items) % n_classes)
    return str(path)


@pytest.fixture(scope="module")
def eval_npz(tmp_path_factory) -> str:
    """100 labelled grey 16x16 images, 4 classes: 90 to train the evaluator on, 10 held out."""
    return _labelled_npz(tmp_path_factory.mktemp("eval-data") / "eval.npz", 100, NUM_CLASSES)


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run the test in tmp_path, so ./evaluators is a fresh temporary folder."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def invoke(*args, env=None):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False, env=env)


class TestModeCoverage:
    @pytest.mark.parametrize("kind", ["run", "bundle"])
    def test_ring8_reports_eight_modes_and_counts_within_n(self, kind, tiny_run, tiny_bundle, in_tmp):
        target = tiny_run("ring8") if kind == "run" else tiny_bundle("ring8")[0]
        result = evaluate(target, n=N)
        m = result["mode_coverage"]
        assert result["kind"] == kind and result["n"] == N
        assert m["n_modes"] == 8
        assert 0 <= m["modes_covered"] <= 8
        assert len(m["counts"]) == 8 and all(c >= 0 for c in m["counts"]) and sum(m["counts"]) <= N
        assert m["modes_covered"] == sum(c > 0 for c in m["counts"])
        assert 0.0 <= m["high_quality"] <= 1.0

    @pytest.mark.parametrize("kind", ["run", "bundle"])
    def test_vaegan_reports_held_out_recon_mse(self, kind, tiny_run, tiny_bundle, in_tmp):
        target = tiny_run("ring8") if kind == "run" else tiny_bundle("ring8")[0]
        mse = evaluate(target, n=N)["held_out_recon_mse"]
        assert math.isfinite(mse) and mse >= 0

    def test_same_seed_gives_the_same_result(self, tiny_run, in_tmp):
        assert evaluate(tiny_run("ring8"), n=N, seed=3) == evaluate(tiny_run("ring8"), n=N, seed=3)

    def test_same_seed_gives_the_same_result_for_a_bundle(self, tiny_bundle, in_tmp):
        bundle = tiny_bundle("ring8")[0]
        assert evaluate(bundle, n=N, seed=3) == evaluate(bundle, n=N, seed=3)

    def test_a_different_n_changes_n_and_bounds_the_counts(self, tiny_run, in_tmp):
        result = evaluate(tiny_run("ring8"), n=2 * N)
        assert result["n"] == 2 * N
        assert sum(result["mode_coverage"]["counts"]) <= 2 * N

    def test_reports_no_image_metrics(self, tiny_run, in_tmp):
        result = evaluate(tiny_run("ring8"), n=N)
        assert not {"class_coverage", "frechet_distance", "prdc", "evaluator"} & result.keys()


class TestImageMetrics:
    @pytest.fixture
    def result(self, tiny_run, eval_npz, in_tmp):
        return evaluate(tiny_run("conditional"), n=N, data_source=eval_npz)

    def test_class_coverage_counts_the_npz_classes(self, result):
        c = result["class_coverage"]
        assert c["n_classes"] == NUM_CLASSES
        assert 0 <= c["classes_covered"] <= NUM_CLASSES
        assert len(c["counts"]) == NUM_CLASSES and sum(c["counts"]) == N
        assert 0.0 <= c["confident"] <= 1.0

    def test_frechet_distance_is_non_negative(self, result):
        assert math.isfinite(result["frechet_distance"]) and result["frechet_distance"] >= 0

    def test_prdc_has_its_keys(self, result):
        assert set(result["prdc"]) == PRDC_KEYS
        assert all(0.0 <= result["prdc"][key] for key in ("precision", "recall", "density", "coverage"))
        assert result["prdc"]["k"] == 5

    def test_fd_is_reported_against_the_training_split_and_the_held_out_items(self, result):
        assert result["frechet_distance"] >= 0 and result["frechet_distance_held_out"] >= 0
        assert result["frechet_distance"] != result["frechet_distance_held_out"]

    def test_real_reference_scores_the_held_out_items_in_the_samples_place(self, result):
        ref = result["real_reference"]
        assert sum(ref["class_coverage"]["counts"]) == ref["n"] > 0
        assert ref["frechet_distance"] >= 0 and set(ref["prdc"]) == PRDC_KEYS

    def test_copy_check_reports_rates_and_the_distance_ratio(self, result):
        c = result["copies"]
        assert set(c) == {"threshold", "sample_rate", "held_out_rate", "median_ratio"}
        assert 0.0 <= c["sample_rate"] <= 1.0 and 0.0 <= c["held_out_rate"] <= 1.0
        assert c["threshold"] > 0 and c["median_ratio"] > 0

    def test_evaluator_accuracy_is_a_fraction(self, result):
        assert 0.0 <= result["evaluator"]["held_out_accuracy"] <= 1.0

    def test_reports_the_run_and_the_data_it_was_given(self, result, eval_npz):
        assert (result["kind"], result["precision"], result["model"], result["data"]) == ("run", "fp32", "vaegan",
                                                                                          eval_npz)
        assert result["held_out_recon_mse"] >= 0

    def test_the_run_own_data_with_too_few_held_out_items_is_a_bad_input(self, tiny_run, in_tmp):
        # labelled_npz holds out 4 items; precision/recall with k = 5 needs 7
        with pytest.raises(BadInputError, match="needs at least"):
            evaluate(tiny_run("conditional"), n=N)


class TestEvaluatorCache:
    def test_trained_once_then_loaded_from_evaluators(self, tiny_run, eval_npz, in_tmp, monkeypatch):
        calls = []
        real_train = evaluate_module.train_evaluator

        def train_once(*args, **kwargs):
            calls.append(1)
            if len(calls) > 1:
                raise AssertionError("the evaluator was trained a second time")
            return real_train(*args, **kwargs)

        monkeypatch.setattr(evaluate_module, "train_evaluator", train_once)
        lines: list[str] = []
        first = evaluate(tiny_run("conditional"), n=N, data_source=eval_npz, log=lines.append)
        second = evaluate(tiny_run("conditional"), n=N, data_source=eval_npz)
        assert len(calls) == 1
        assert any("training the evaluator" in line for line in lines)
        path = in_tmp / first["evaluator"]["path"]
        assert path.is_file() and path.parent == in_tmp / "evaluators"
        assert second["evaluator"] == first["evaluator"]
        assert second == first

    def test_a_different_file_with_the_same_name_gets_its_own_evaluator(self, tiny_run, eval_npz, in_tmp):
        (in_tmp / "a").mkdir()
        (in_tmp / "b").mkdir()
        four = _labelled_npz(in_tmp / "a" / "data.npz", 100, NUM_CLASSES)
        two = _labelled_npz(in_tmp / "b" / "data.npz", 100, 2, seed=2)
        evaluate(tiny_run("conditional"), n=N, data_source=four)
        result = evaluate(tiny_run("conditional"), n=N, data_source=two)
        assert result["class_coverage"]["n_classes"] == 2


class TestBundlePrecisions:
    @pytest.mark.parametrize("precision", ["fp32", "int8"])
    def test_evaluates_at_that_precision_as_a_bundle(self, precision, tiny_bundle, eval_npz, in_tmp):
        result = evaluate(tiny_bundle("conditional")[0], n=N, precision=precision, data_source=eval_npz)
        assert result["kind"] == "bundle" and result["precision"] == precision
        assert result["class_coverage"]["n_classes"] == NUM_CLASSES
        assert result["frechet_distance"] >= 0 and set(result["prdc"]) == PRDC_KEYS
        assert result["held_out_recon_mse"] >= 0


class TestErrors:
    def test_a_folder_neither_run_nor_bundle(self, in_tmp):
        (in_tmp / "empty").mkdir()
        with pytest.raises(BadInputError, match="neither a bundle"):
            evaluate(in_tmp / "empty", n=N)

    def test_a_run_at_int8_says_to_export(self, tiny_run, in_tmp):
        with pytest.raises(BadInputError, match="export it"):
            evaluate(tiny_run("ring8"), n=N, precision="int8")

    def test_a_bundle_whose_source_run_is_missing(self, tiny_bundle, in_tmp):
        bundle = shutil.copytree(tiny_bundle("ring8")[0], in_tmp / "moved")
        manifest = json.loads((bundle / MANIFEST_FILE).read_text(encoding="utf-8"))
        manifest["source"]["run_dir"] = str(in_tmp / "no-such-run")
        (bundle / MANIFEST_FILE).write_text(json.dumps(manifest), encoding="utf-8")
        with pytest.raises(BadInputError, match="not on this machine"):
            evaluate(bundle, n=N)

    def test_image_metrics_on_unlabelled_data(self, tiny_run, in_tmp):
        with pytest.raises(BadInputError, match="no labels"):
            evaluate(tiny_run("vaegan"), n=N)

    @pytest.mark.parametrize("n", [1, 9])
    def test_n_below_10(self, n, tiny_run, in_tmp):
        with pytest.raises(BadInputError, match="must be >= 10"):
            evaluate(tiny_run("ring8"), n=n)


class TestEvalCommand:
    def test_prints_the_table_and_writes_json_with_evaluate_keys(self, tiny_run, in_tmp):
        result = invoke("eval", tiny_run("ring8"), "--n", N, "--json", "out.json", env=WIDE)
        assert result.exit_code == 0, result.output
        assert "modes covered" in result.stdout and "held-out reconstruction MSE" in result.stdout
        written = json.loads((in_tmp / "out.json").read_text(encoding="utf-8"))
        expected = evaluate(tiny_run("ring8"), n=N)
        assert written.keys() == expected.keys()
        assert written["n"] == N and written["mode_coverage"]["n_modes"] == 8

    def test_image_metrics_table(self, tiny_run, eval_npz, in_tmp):
        result = invoke("eval", tiny_run("conditional"), "--data", eval_npz, "--n", N, env=WIDE)
        assert result.exit_code == 0, result.output
        for row in ("evaluator held-out accuracy", "classes covered", "Fréchet distance", "precision (k=5)",
                    "near-copies of training items", "held-out real items"):
            assert row in result.stdout

    def test_json_is_strict_json_when_no_sample_hits_a_mode(self, tiny_run, in_tmp, monkeypatch):
        real_open = evaluate_module.open_target

        def far_away(target, precision="fp32"):  # every sample far from every ring8 centre
            t = real_open(target, precision)
            return dataclasses.replace(t, sample=lambda n, seed: np.full((n, 2), 100.0, dtype=np.float32))

        monkeypatch.setattr(evaluate_module, "open_target", far_away)
        result = invoke("eval", tiny_run("ring8"), "--n", N, "--json", "out.json")
        assert result.exit_code == 0, result.output

        def reject(token):
            raise ValueError(f"non-standard JSON token {token}")

        json.loads((in_tmp / "out.json").read_text(encoding="utf-8"), parse_constant=reject)

    def test_neither_run_nor_bundle_is_one_error_line(self, in_tmp):
        (in_tmp / "empty").mkdir()
        assert "neither a bundle" in error_line(invoke("eval", in_tmp / "empty", "--n", N))

    def test_a_run_at_int8_is_one_error_line(self, tiny_run, in_tmp):
        assert "export" in error_line(invoke("eval", tiny_run("ring8"), "--n", N, "--precision", "int8"))

    def test_unlabelled_images_is_one_error_line(self, tiny_run, in_tmp):
        assert "no labels" in error_line(invoke("eval", tiny_run("vaegan"), "--n", N))

    def test_no_json_written_on_error(self, in_tmp):
        (in_tmp / "empty").mkdir()
        error_line(invoke("eval", in_tmp / "empty", "--json", "out.json"))
        assert not (in_tmp / "out.json").exists()

    def test_n_below_10_is_a_usage_error(self, tiny_run, in_tmp):
        result = invoke("eval", tiny_run("ring8"), "--n", 5)
        assert result.exit_code == 2 and "--n" in result.stderr


class TestRunAndBundleSeeTheSameNoise:
    def test_a_run_and_its_fp32_bundle_sample_the_same_items(self, tiny_run, tiny_bundle):
        from gvtool.eval.evaluate import open_target

        run_items = open_target(tiny_run("ring8")).sample(20, 5)
        bundle_items = open_target(tiny_bundle("ring8")[0]).sample(20, 5)
        assert np.allclose(run_items, bundle_items, atol=1e-4)


class TestStackedMnist:
    """Three MNIST digits in three channels, 1,000 modes, read by the MNIST evaluator channel by channel."""

    def test_data_stacks_three_digits_labelled_by_their_triple(self):
        from gvtool.train.data import STACKED_MNIST, load_dataset

        stacked, digits = load_dataset(STACKED_MNIST), load_dataset("mnist")
        assert stacked.x.shape == (20_000, 3, 28, 28) and stacked.num_classes == 1000
        assert len(set(stacked.y.tolist())) == 1000  # 20,000 draws reach every triple
        label_of = {digits.x[j, 0].numpy().tobytes(): int(digits.y[j]) for j in range(len(digits))}
        for i in (0, 1234, 19_999):  # each channel is one of the digits, and the label spells the three digits
            a, b, c = (label_of[stacked.x[i, ch].numpy().tobytes()] for ch in range(3))
            assert int(stacked.y[i]) == 100 * a + 10 * b + c

    def test_each_channel_is_classified_as_one_digit_of_the_triple(self, monkeypatch):
        import torch

        def one_hot_reader(model, images):  # reads the digit from the pixel value; features = (digit, -digit)
            digit = images[:, 0, 0, 0].long().numpy()
            return np.eye(10)[digit], np.stack([digit, -digit], axis=1).astype(np.float64)

        monkeypatch.setattr(evaluate_module, "predict", one_hot_reader)
        triples = np.array([[3, 1, 4], [1, 5, 9], [2, 6, 5], [0, 0, 7]])
        stacks = np.broadcast_to(triples[:, :, None, None], (4, 3, 4, 4)).astype(np.uint8)
        joint, features = evaluate_module._per_channel(None, torch.from_numpy(stacks))
        assert joint.shape == (4, 1000)
        np.testing.assert_allclose(joint.sum(axis=1), 1.0)
        assert joint.argmax(axis=1).tolist() == [314, 159, 265, 7]
        np.testing.assert_array_equal(features, np.concatenate([np.stack([t, -t], 1) for t in triples.T], axis=1))

    def test_eval_of_a_stacked_run_counts_the_thousand_modes(self, make_train_config, in_tmp, monkeypatch):
        from gvtool.eval.evaluator import EvaluatorConfig
        from gvtool.train.data import STACKED_MNIST
        from gvtool.train.loop import train

        real_train = evaluate_module.train_evaluator
        monkeypatch.setattr(evaluate_module, "train_evaluator",  # one short pass: the test is the wiring, not accuracy
                            lambda train_set, held_out: real_train(train_set, held_out, EvaluatorConfig(epochs=1)))
        run_dir = in_tmp / "run"
        train(make_train_config(STACKED_MNIST), run_dir, stop_after_steps=1)
        result = evaluate(run_dir, n=60)
        coverage = result["class_coverage"]
        assert coverage["n_classes"] == 1000 and sum(coverage["counts"]) == 60
        assert 1 <= coverage["classes_covered"] <= 60
        assert "mnist-" in result["evaluator"]["path"]  # the MNIST evaluator, shared with mnist runs
        assert math.isfinite(result["frechet_distance"]) and PRDC_KEYS <= result["prdc"].keys()
