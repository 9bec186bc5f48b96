"""The evaluator classifier: reproducible, useful, saved and loaded without pickle."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gvtool.errors import BadInputError
from gvtool.eval.evaluator import EvaluatorConfig, load_evaluator, predict, save_evaluator, train_evaluator
from gvtool.train.data import Dataset

TINY = EvaluatorConfig(width=4, feature_dim=8, epochs=3, batch_size=8)


def _stripes(n: int, seed: int) -> Dataset:
    """Two easy classes of 16x16 images: a bright top half (0) or a bright bottom half (1), with noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.integers(0, 60, (n, 1, 16, 16)).astype(np.uint8)
    for i, label in enumerate(y):
        x[i, 0, (8 if label else 0):(16 if label else 8)] += 180
    return Dataset("stripes", "image", torch.from_numpy(x), torch.from_numpy(y.astype(np.int64)), 2, ("top", "bottom"))


@pytest.fixture(scope="module")
def trained(one_torch_thread):
    return train_evaluator(_stripes(96, 0), _stripes(40, 1), TINY)


class TestTraining:
    def test_trains_reproducibly_from_its_seed(self, trained, one_torch_thread):
        again, _ = train_evaluator(_stripes(96, 0), _stripes(40, 1), TINY)
        for a, b in zip(trained[0].state_dict().values(), again.state_dict().values()):
            assert torch.equal(a, b)

    def test_learns_an_easy_task(self, trained):
        assert trained[1] >= 0.9

    def test_refuses_unlabelled_data(self):
        data = _stripes(16, 0)
        unlabelled = Dataset("flat", "image", data.x, None, 0)
        with pytest.raises(BadInputError, match="no labels"):
            train_evaluator(unlabelled, unlabelled, TINY)


class TestPredict:
    def test_gives_probabilities_and_features(self, trained):
        probs, feats = predict(trained[0], _stripes(10, 2).x)
        assert probs.shape == (10, 2) and feats.shape == (10, TINY.feature_dim)
        assert np.allclose(probs.sum(axis=1), 1.0)


class TestSaving:
    def test_round_trips_through_a_safetensors_file(self, trained, tmp_path):
        path = tmp_path / "evaluator.safetensors"
        save_evaluator(path, trained[0], trained[1], "stripes")
        model, meta = load_evaluator(path)
        assert meta["held_out_accuracy"] == trained[1] and meta["data"] == "stripes"
        x = _stripes(5, 3).x
        assert np.array_equal(predict(model, x)[0], predict(trained[0], x)[0])
