"""evaluate()'s text metrics on known samples: the images a prompt describes score perfectly, one image for every
prompt does not. The evaluator is stood in for by a reader of the true labels, so only the metrics are tested."""

import numpy as np
import pytest

from gvtool.eval import evaluate as evaluate_module
from gvtool.train.captions import BUILTIN, load_captions
from gvtool.train.config import ModelConfig, TrainConfig
from gvtool.train.data import load_dataset, split


@pytest.fixture(scope="module")
def digits():
    data = load_dataset("mnist")
    data = data.with_captions(load_captions(BUILTIN, data))
    return data, *split(data, 0.1, 0)


@pytest.fixture
def label_reader(digits, monkeypatch):
    """predict() as a perfect evaluator: each image's own label, looked up by its pixels."""
    data = digits[0]
    labels = {x.tobytes(): int(y) for x, y in zip(data.x.numpy(), data.y.numpy())}

    def predict(model, images):
        ys = [labels.get(x.tobytes(), 0) for x in images.numpy()]
        return np.eye(10)[ys], np.zeros((len(ys), 4))

    monkeypatch.setattr(evaluate_module, "_evaluator", lambda *a: (None, {}))
    monkeypatch.setattr(evaluate_module, "predict", predict)


CONFIG = TrainConfig(model=ModelConfig(conditional=True, text_dim=384), data="mnist", captions=BUILTIN)


def test_the_described_images_themselves_score_perfectly(digits, label_reader):
    data, _, held_out = digits
    prompts = evaluate_module._held_out_prompts(CONFIG, held_out, seed=0)
    n = 2 * len(held_out)
    fake = held_out.x.numpy()[np.arange(n) % len(held_out)]
    text = evaluate_module._text_metrics(fake, prompts, data, held_out, CONFIG, print)
    assert text["class_accuracy"] == 1.0 and text["class_accuracy_real"] == 1.0
    for attribute in ("thickness", "slant"):
        assert text[attribute]["mean_abs_error"] == 0.0
        assert text[attribute]["band_met"] == 1.0 and text[attribute]["band_prompts"] > 0
        assert text[attribute]["mean_abs_error_ignoring_it"] > 0.3


def test_one_image_for_every_prompt_scores_as_chance_would(digits, label_reader):
    data, _, held_out = digits
    prompts = evaluate_module._held_out_prompts(CONFIG, held_out, seed=0)
    fake = np.repeat(held_out.x.numpy()[:1], len(held_out), axis=0)
    text = evaluate_module._text_metrics(fake, prompts, data, held_out, CONFIG, print)
    assert text["class_accuracy"] < 0.2
    assert text["thickness"]["mean_abs_error"] > 0.3 and text["thickness"]["band_met"] < 0.8


def test_held_out_prompts_are_phrased_as_training_never_was(digits):
    _, train_set, held_out = digits
    prompts = evaluate_module._held_out_prompts(CONFIG, held_out, seed=0)
    seen = {c for captions in train_set.captions for c in captions}
    assert len(prompts) == len(held_out) and not set(prompts) & seen
    assert all(p.startswith(("someone drew", "here is", "a picture of")) for p in prompts)
