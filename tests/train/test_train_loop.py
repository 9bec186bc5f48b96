"""The training loop: the run folder it writes, exact resume, refusals, Ctrl-C, and the metrics log."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import signal

import numpy as np
import pytest
import torch
from PIL import Image

from checkpoint_helpers import assert_same_training_state
from gvtool.errors import BadInputError
from gvtool.imaging import make_grid
from gvtool.train import rundir
from gvtool.train.checkpoint import load_checkpoint
from gvtool.train.config import ModelConfig, TrainConfig
from gvtool.train.data import load_dataset
from gvtool.train.ema import EMA_NAME
from gvtool.train.loop import train
from gvtool.train.metrics_log import MetricsLog, read_rows
from gvtool.train.models import build_networks
from gvtool.train.snapshots import writes_samples

pytestmark = pytest.mark.usefixtures("one_torch_thread")

KINDS = ("vaegan", "vae", "gan")
NETWORKS = {
    "vaegan": {"encoder", "decoder", "discriminator"},
    "vae": {"encoder", "decoder"},
    "gan": {"decoder", "discriminator"},
}
STEPS_PER_EPOCH = 4  # labelled_npz: 36 training items // batch size 8
EPOCHS = 2           # image runs; ring8 runs take 1 epoch of 180 // 8 = 22 steps
N_FIXED = 16         # make_train_config's sample grid


@pytest.fixture(scope="module")
def make_config(labelled_npz, make_train_config):
    """The config of a test run: 2 epochs on labelled_npz ("npz"), or 1 epoch of ring8."""

    def make(kind: str = "vaegan", data: str = "npz", conditional: bool = False) -> TrainConfig:
        if data == "npz":
            return make_train_config(labelled_npz, kind=kind, conditional=conditional, epochs=EPOCHS)
        return make_train_config(data, kind=kind, conditional=conditional, epochs=1)

    return make


@pytest.fixture(scope="module")
def finished(tmp_path_factory, make_config, one_torch_thread):
    """Uninterrupted runs, trained once per module: (config, TrainResult). Tests read them, never change them."""
    cache = {}

    def get(kind: str = "vaegan", data: str = "npz", conditional: bool = False):
        key = (kind, data, conditional)
        if key not in cache:
            config = make_config(*key)
            cache[key] = config, train(config, tmp_path_factory.mktemp(f"{kind}-{data}") / "run")
        return cache[key]

    return get


def _checkpoint(run_dir):
    return load_checkpoint(run_dir / rundir.CHECKPOINT_FILE)


def _rows(run_dir, kind):
    return [r for r in read_rows(run_dir / rundir.METRICS_FILE) if r["type"] == kind]


def _is_png(path) -> bool:
    with Image.open(path) as im:
        return im.format == "PNG"


class TestRunFolder:
    @pytest.mark.parametrize("kind", KINDS)
    def test_result_reports_the_steps_and_epochs_run(self, finished, kind):
        _, result = finished(kind)
        assert (result.step, result.epoch, result.interrupted) == (EPOCHS * STEPS_PER_EPOCH, EPOCHS, False)

    def test_config_json_holds_the_config_completed_from_the_data(self, finished):
        config, result = finished()
        stored = TrainConfig.from_dict(json.loads((result.run_dir / rundir.CONFIG_FILE).read_text()))
        completed = dataclasses.replace(config.model, data_kind="image", channels=1, image_size=16, num_classes=0)
        assert stored == config.replace(model=completed)

    @pytest.mark.parametrize("kind", KINDS)
    def test_checkpoint_holds_every_network_and_its_optimizer_state(self, finished, kind):
        _, result = finished(kind)
        ckpt = _checkpoint(result.run_dir)
        nets = build_networks(ModelConfig.from_dict(ckpt.meta["config"]["model"]))
        assert set(ckpt.optimizers) == NETWORKS[kind]
        assert set(ckpt.models) == NETWORKS[kind] | {EMA_NAME}  # the decoder's weight average has no optimizer
        for name, net in nets.items():
            assert list(ckpt.models[name]) == list(net.state_dict()), name
            state = ckpt.optimizers[name]["state"]
            assert len(state) == len(list(net.parameters())), name
            assert all({"exp_avg", "exp_avg_sq", "step"} <= set(s) for s in state.values()), name

    @pytest.mark.parametrize("kind", KINDS)
    def test_checkpoint_weights_load_into_networks_rebuilt_from_its_config(self, finished, kind):
        _, result = finished(kind)
        ckpt = _checkpoint(result.run_dir)
        nets = build_networks(ModelConfig.from_dict(ckpt.meta["config"]["model"]))
        for name, net in nets.items():
            net.load_state_dict(ckpt.models[name])  # strict: every key, every shape

    @pytest.mark.parametrize("kind", KINDS)
    def test_checkpoint_meta_counts_the_steps_taken(self, finished, kind):
        _, result = finished(kind)
        meta = _checkpoint(result.run_dir).meta
        assert (meta["step"], meta["epoch"], meta["complete"]) == (result.step, EPOCHS, True)

    @pytest.mark.parametrize("kind", KINDS)
    def test_metrics_have_one_step_row_per_step_with_each_network_loss(self, finished, kind):
        _, result = finished(kind)
        rows = _rows(result.run_dir, "step")
        assert [r["step"] for r in rows] == list(range(1, result.step + 1))
        assert [r["epoch"] for r in rows] == [1 + i // STEPS_PER_EPOCH for i in range(result.step)]
        for row in rows:
            assert all(math.isfinite(row[f"loss_{name}"]) for name in NETWORKS[kind])

    @pytest.mark.parametrize("kind", KINDS)
    def test_metrics_have_one_epoch_row_per_epoch(self, finished, kind):
        _, result = finished(kind)
        rows = _rows(result.run_dir, "epoch")
        assert [(r["epoch"], r["step"]) for r in rows] == [(e, e * STEPS_PER_EPOCH) for e in range(1, EPOCHS + 1)]

    @pytest.mark.parametrize("kind", ["vaegan", "vae"])
    def test_epoch_rows_of_models_with_an_encoder_hold_val_recon(self, finished, kind):
        _, result = finished(kind)
        values = [r["val_recon"] for r in _rows(result.run_dir, "epoch")]
        assert len(values) == EPOCHS and all(math.isfinite(v) and v >= 0 for v in values)

    def test_gan_epoch_rows_have_no_val_recon(self, finished):
        _, result = finished("gan")
        assert not any("val_recon" in r for r in _rows(result.run_dir, "epoch"))

    @pytest.mark.parametrize("kind", KINDS)
    def test_samples_are_a_png_grid_of_the_fixed_latents_per_epoch(self, finished, kind):
        _, result = finished(kind)
        grid = make_grid(np.zeros((N_FIXED, 16, 16, 1), np.uint8))  # (H, W, C) of the expected grid
        for epoch in range(1, EPOCHS + 1):
            path = result.run_dir / rundir.SAMPLES_DIR / f"epoch_{epoch:04d}.png"
            with Image.open(path) as im:
                assert (im.format, im.mode, im.size) == ("PNG", "L", (grid.shape[1], grid.shape[0]))

    def test_conditional_samples_have_one_column_per_class(self, finished):
        _, result = finished("vaegan", conditional=True)
        grid = make_grid(np.zeros((N_FIXED, 16, 16, 1), np.uint8), ncols=4)  # 4 classes in labelled_npz
        with Image.open(result.run_dir / rundir.SAMPLES_DIR / "epoch_0001.png") as im:
            assert im.size == (grid.shape[1], grid.shape[0])

    def test_vector_samples_are_a_scatter_png(self, finished):
        _, result = finished("vaegan", data="ring8")
        with Image.open(result.run_dir / rundir.SAMPLES_DIR / "epoch_0001.png") as im:
            assert im.format == "PNG" and im.mode in ("RGB", "RGBA")
            assert im.size[0] == im.size[1]  # a square plot, not a grid of 2-D items

    def test_vector_run_stores_the_data_statistics_its_networks_standardise_with(self, finished):
        _, result = finished("vaegan", data="ring8")
        config = json.loads((result.run_dir / rundir.CONFIG_FILE).read_text())
        ring = load_dataset("ring8", seed=config["seed"], n_vectors=config["n_vectors"]).x.double()
        np.testing.assert_allclose(config["model"]["vector_mean"], ring.mean(dim=0), atol=1e-6)
        np.testing.assert_allclose(config["model"]["vector_std"], ring.std(dim=0), rtol=1e-5)

    @pytest.mark.parametrize("kind", KINDS)
    def test_writes_loss_curves_png(self, finished, kind):
        _, result = finished(kind)
        assert _is_png(result.run_dir / rundir.LOSSES_PNG)


RESUME_CASES = [
    pytest.param("vaegan", "npz", False, 3, id="vaegan-mid-epoch"),
    pytest.param("vaegan", "npz", False, STEPS_PER_EPOCH, id="vaegan-epoch-boundary"),
    pytest.param("vae", "npz", False, 6, id="vae-second-epoch"),
    pytest.param("gan", "npz", True, 5, id="gan-conditional"),
    pytest.param("vaegan", "ring8", False, 10, id="vaegan-ring8"),
]


class TestResume:
    def test_stop_after_steps_returns_interrupted_with_a_checkpoint_at_that_step(self, make_config, tmp_path):
        result = train(make_config(), tmp_path, stop_after_steps=3)
        meta = _checkpoint(tmp_path).meta
        assert (result.interrupted, result.step) == (True, 3)
        assert (meta["step"], meta["epoch"], meta["batch_in_epoch"], meta["complete"]) == (3, 0, 3, False)

    def test_resume_continues_to_the_full_step_count(self, make_config, tmp_path):
        train(make_config(), tmp_path, stop_after_steps=3)
        result = train(make_config(), tmp_path, resume=True)
        assert (result.interrupted, result.step, result.epoch) == (False, EPOCHS * STEPS_PER_EPOCH, EPOCHS)
        assert _checkpoint(tmp_path).meta["complete"] is True

    @pytest.mark.parametrize("kind, data, conditional, stop_at", RESUME_CASES)
    def test_interrupted_and_resumed_run_ends_with_the_weights_and_optimizer_state_of_an_uninterrupted_one(
            self, make_config, finished, tmp_path, kind, data, conditional, stop_at):
        config = make_config(kind, data, conditional)
        train(config, tmp_path, stop_after_steps=stop_at)
        train(config, tmp_path, resume=True)
        _, reference = finished(kind, data, conditional)
        assert_same_training_state(_checkpoint(tmp_path), _checkpoint(reference.run_dir))

    @pytest.mark.parametrize("stop_at", [3, STEPS_PER_EPOCH], ids=["mid-epoch", "epoch-boundary"])
    def test_metrics_after_resume_hold_each_step_and_epoch_once(self, make_config, tmp_path, stop_at):
        train(make_config(), tmp_path, stop_after_steps=stop_at)
        train(make_config(), tmp_path, resume=True)
        assert [r["step"] for r in _rows(tmp_path, "step")] == list(range(1, EPOCHS * STEPS_PER_EPOCH + 1))
        assert [r["epoch"] for r in _rows(tmp_path, "epoch")] == list(range(1, EPOCHS + 1))

    def test_resuming_a_finished_run_raises_naming_epochs(self, finished, make_config, tmp_path):
        _, result = finished()
        run_dir = shutil.copytree(result.run_dir, tmp_path / "run")
        with pytest.raises(BadInputError, match="already finished its 2 epochs.*--epochs"):
            train(make_config(), run_dir, resume=True)

    def test_resuming_a_finished_run_with_more_epochs_continues(self, finished, make_config, tmp_path):
        _, result = finished()
        run_dir = shutil.copytree(result.run_dir, tmp_path / "run")
        resumed = train(make_config().replace(epochs=EPOCHS + 1), run_dir, resume=True)
        assert (resumed.step, resumed.epoch) == ((EPOCHS + 1) * STEPS_PER_EPOCH, EPOCHS + 1)
        assert (run_dir / rundir.SAMPLES_DIR / f"epoch_{EPOCHS + 1:04d}.png").is_file()

    def test_resuming_a_folder_without_a_checkpoint_raises(self, make_config, tmp_path):
        with pytest.raises(BadInputError, match="cannot resume.*no checkpoint.safetensors"):
            train(make_config(), tmp_path, resume=True)

    def test_resuming_with_another_model_config_raises_bad_input(self, make_config, tmp_path):
        config = make_config()
        train(config, tmp_path, stop_after_steps=2)
        wider = config.replace(model=dataclasses.replace(config.model, width=8))
        with pytest.raises(BadInputError):  # not torch's RuntimeError from load_state_dict
            train(wider, tmp_path, resume=True)


class TestRefusals:
    def test_folder_holding_a_checkpoint_is_not_trained_into_without_resume(self, finished, make_config, tmp_path):
        _, result = finished()
        checkpoint = tmp_path / rundir.CHECKPOINT_FILE
        shutil.copy(result.run_dir / rundir.CHECKPOINT_FILE, checkpoint)
        before = checkpoint.read_bytes()
        with pytest.raises(BadInputError, match="already holds a run; pass --resume"):
            train(make_config(), tmp_path)
        assert checkpoint.read_bytes() == before

    def test_conditional_on_unlabelled_data_raises_and_writes_nothing(self, make_train_config, unlabelled_npz, tmp_path):
        config = make_train_config(unlabelled_npz, conditional=True)
        with pytest.raises(BadInputError, match="--conditional needs labelled data"):
            train(config, tmp_path / "run")
        assert not (tmp_path / "run").exists()

    def test_batch_size_larger_than_the_training_set_raises(self, make_train_config, labelled_npz, tmp_path):
        with pytest.raises(BadInputError, match="--batch-size 64 is larger than the 36 training items"):
            train(make_train_config(labelled_npz, batch_size=64), tmp_path / "run")

    def test_image_size_outside_the_valid_range_raises(self, make_train_config, labelled_npz, tmp_path):
        with pytest.raises(BadInputError, match="--image-size must be a multiple of 4 from 16 to 64, got 70"):
            train(make_train_config(labelled_npz, image_size=70), tmp_path / "run")


class _CtrlCAt:
    """A reporter that presses Ctrl-C (SIGINT to this process) once the loop reports `step`."""

    def __init__(self, step: int):
        self.step = step

    def started(self, info):
        pass

    def advanced(self, step, total, epoch, metrics):
        if step == self.step:
            os.kill(os.getpid(), signal.SIGINT)

    def epoch_done(self, row):
        pass


class TestCtrlC:
    def _train_and_press_ctrl_c(self, config, run_dir, at_step: int):
        try:
            return train(config, run_dir, reporter=_CtrlCAt(at_step))
        except KeyboardInterrupt:
            pytest.fail("Ctrl-C escaped the loop instead of stopping it between steps")

    def test_ctrl_c_stops_between_steps_with_a_checkpoint(self, make_config, tmp_path):
        result = self._train_and_press_ctrl_c(make_config(), tmp_path, at_step=3)
        assert result.interrupted is True and result.step >= 3
        assert _checkpoint(tmp_path).meta["step"] == result.step

    def test_a_run_stopped_by_ctrl_c_resumes_to_the_end(self, make_config, tmp_path):
        self._train_and_press_ctrl_c(make_config(), tmp_path, at_step=3)
        result = train(make_config(), tmp_path, resume=True)
        assert (result.interrupted, result.step) == (False, EPOCHS * STEPS_PER_EPOCH)

    def test_the_previous_sigint_handler_is_restored(self, make_config, tmp_path):
        before = signal.getsignal(signal.SIGINT)
        train(make_config(), tmp_path, stop_after_steps=1)
        assert signal.getsignal(signal.SIGINT) is before


@pytest.fixture
def log(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl")
    yield log
    log.close()


class TestMetricsLog:
    def test_flush_returns_the_mean_of_each_value_over_the_window(self, log):
        for step, value in enumerate([1.0, 2.0, 6.0], start=1):
            log.record(step, 1, {"loss_decoder": torch.tensor(value), "kl": torch.tensor(-value)})
        assert log.flush() == pytest.approx({"loss_decoder": 3.0, "kl": -3.0})

    def test_flush_writes_one_step_row_per_recorded_step(self, log):
        log.record(1, 1, {"loss_decoder": torch.tensor(0.5)})
        log.record(2, 2, {"loss_decoder": torch.tensor(0.25)})
        log.flush()
        assert read_rows(log.path) == [
            {"type": "step", "step": 1, "epoch": 1, "loss_decoder": 0.5},
            {"type": "step", "step": 2, "epoch": 2, "loss_decoder": 0.25},
        ]

    def test_flush_with_nothing_pending_returns_empty_and_writes_nothing(self, log):
        assert log.flush() == {}
        assert read_rows(log.path) == []

    def test_write_epoch_appends_an_epoch_row(self, log):
        log.write_epoch({"epoch": 1, "step": 4, "val_recon": 0.1})
        assert read_rows(log.path) == [{"type": "epoch", "epoch": 1, "step": 4, "val_recon": 0.1}]

    def test_keep_until_step_drops_the_rows_past_that_step(self, log):
        for step in range(1, 7):
            log.record(step, 1 + (step > 3), {"loss_decoder": torch.tensor(float(step))})
            if step % 3 == 0:
                log.flush()
                log.write_epoch({"epoch": step // 3, "step": step})
        log.close()
        resumed = MetricsLog(log.path, keep_until_step=4)
        resumed.close()
        assert [(r["type"], r["step"]) for r in read_rows(log.path)] == [
            ("step", 1), ("step", 2), ("step", 3), ("epoch", 3), ("step", 4)]

    def test_negative_keep_until_step_starts_a_new_file(self, tmp_path):
        path = tmp_path / "metrics.jsonl"
        path.write_text(json.dumps({"type": "step", "step": 1, "epoch": 1}) + "\n")
        MetricsLog(path).close()
        assert read_rows(path) == []

    def test_read_rows_skips_a_torn_last_line(self, tmp_path):
        path = tmp_path / "metrics.jsonl"
        path.write_text('{"type": "step", "step": 1}\n{"type": "st')
        assert read_rows(path) == [{"type": "step", "step": 1}]


class TestSampleImageSchedule:
    def test_runs_up_to_30_epochs_write_every_epoch(self):
        assert all(writes_samples(e, 25) for e in range(1, 26))

    def test_a_140_epoch_run_writes_every_5th_and_the_last(self):
        written = [e for e in range(1, 141) if writes_samples(e, 140)]
        assert written == list(range(5, 141, 5))

    def test_the_last_epoch_always_writes(self):
        assert writes_samples(31, 31) and not writes_samples(29, 31)  # every 2nd epoch of 31, and the 31st
