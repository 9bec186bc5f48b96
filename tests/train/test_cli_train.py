"""`gvtool train` through click's test runner: a tiny run, its help, bad input, and --resume."""

from __future__ import annotations

import json

import functools
import shutil
import types

import pytest
import torch
from click.testing import CliRunner

import gvtool
from gvtool.cli import main
from gvtool.train import rundir
from gvtool.train.checkpoint import load_checkpoint, read_meta
from gvtool.train.config import ModelConfig
from gvtool.train.loop import train as library_train
from cli_helpers import error_line, said

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = ["--epochs", "1", "--batch-size", "8", "--width", "4", "--latent-dim", "4"]
STEPS_PER_EPOCH = 4  # labelled_npz: 36 training items // batch size 8


def invoke(*args: str):
    # catch_exceptions=False: anything but a SystemExit surfaces as the test's own traceback
    return CliRunner().invoke(main, ["train", *map(str, args)], catch_exceptions=False)


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory, labelled_npz, one_torch_thread):
    """A finished 1-epoch run trained by the command; tests read it, never change it."""
    run_dir = tmp_path_factory.mktemp("cli") / "run"
    return run_dir, invoke("--data", labelled_npz, *TINY, "--out", run_dir)


@pytest.fixture
def interrupted_run(tmp_path, make_train_config, labelled_npz):
    """A 1-epoch run stopped after 2 of its 4 steps, as Ctrl-C would leave it."""
    run_dir = tmp_path / "run"
    library_train(make_train_config(labelled_npz), run_dir, stop_after_steps=2)
    return run_dir


class TestTrainCommand:
    def test_tiny_run_exits_0(self, cli_run):
        _, result = cli_run
        assert result.exit_code == 0, result.output

    def test_tiny_run_writes_the_run_folder(self, cli_run):
        run_dir, _ = cli_run
        for name in (rundir.CONFIG_FILE, rundir.CHECKPOINT_FILE, rundir.METRICS_FILE, rundir.LOSSES_PNG,
                     f"{rundir.SAMPLES_DIR}/epoch_0001.png"):
            assert (run_dir / name).is_file(), name
        assert read_meta(run_dir / rundir.CHECKPOINT_FILE)["step"] == STEPS_PER_EPOCH

    def test_tiny_run_reports_done_on_stderr(self, cli_run):
        _, result = cli_run
        assert "done: 1 epochs, 4 steps" in said(result)

    def test_without_out_writes_under_runs_named_by_model_and_data(self, labelled_npz, tmp_path, monkeypatch):
        monkeypatch.chdir(tmp_path)
        result = invoke("--data", labelled_npz, "--model", "gan", *TINY)
        assert result.exit_code == 0, result.output
        (run_dir,) = (tmp_path / "runs").iterdir()
        assert run_dir.name.startswith("gan-labelled-")
        assert rundir.has_checkpoint(run_dir)

    def test_a_translation_model_trains_on_two_domains_named_in_its_folder(self, labelled_npz, colour_npz, tmp_path,
                                                                           monkeypatch):
        monkeypatch.chdir(tmp_path)
        result = invoke("--model", "cyclevae", "--data", labelled_npz, "--data-b", colour_npz, "--cycle-weight", "2",
                        "--style-dim", "1", "--content-adv-weight", "3", "--invariance-weight", "2", *TINY)
        assert result.exit_code == 0, result.output
        (run_dir,) = (tmp_path / "runs").iterdir()
        assert run_dir.name.startswith("cyclevae-labelled-colour-")
        config = json.loads((run_dir / rundir.CONFIG_FILE).read_text())
        assert (config["data_b"], config["model"]["channels_b"], config["model"]["cycle_weight"],
                config["model"]["style_dim"], config["model"]["content_adv_weight"], config["model"]["invariance_weight"]
                ) == (colour_npz, 3, 2.0, 1, 3.0, 2.0)
        assert config["epochs"] == 1  # --epochs wins over the cyclevae default

    def test_domain_b_for_a_one_domain_model_is_one_line(self, labelled_npz, colour_npz, tmp_path):
        line = error_line(invoke("--data", labelled_npz, "--data-b", colour_npz, *TINY, "--out", tmp_path / "r"))
        assert "--data-b is domain B of --model cyclevae; a vaegan model learns one domain" in line

    def test_a_translation_model_without_domain_b_is_one_line(self, labelled_npz, tmp_path):
        line = error_line(invoke("--model", "cyclevae", "--data", labelled_npz, *TINY, "--out", tmp_path / "r"))
        assert "name domain B with --data-b" in line
        assert not (tmp_path / "r" / rundir.CHECKPOINT_FILE).exists()

    def test_loss_weights_reach_the_runs_config(self, labelled_npz, tmp_path):
        run_dir = tmp_path / "run"
        result = invoke("--data", labelled_npz, *TINY, "--kl-weight", "0.5", "--feature-weight", "0.25",
                        "--r1-weight", "1.5", "--out", run_dir)
        assert result.exit_code == 0, result.output
        model = json.loads((run_dir / rundir.CONFIG_FILE).read_text())["model"]
        assert (model["kl_weight"], model["feature_weight"], model["r1_weight"]) == (0.5, 0.25, 1.5)

    def test_quality_options_reach_the_runs_config(self, labelled_npz, tmp_path):
        run_dir = tmp_path / "run"
        result = invoke("--data", labelled_npz, *TINY, "--gan-loss", "bce", "--no-spectral-norm",
                        "--augment", "translation, cutout", "--ema-decay", "0.99", "--extra-convs", "1",
                        "--mapping-layers", "2", "--out", run_dir)
        assert result.exit_code == 0, result.output
        model = json.loads((run_dir / rundir.CONFIG_FILE).read_text())["model"]
        assert (model["gan_loss"], model["spectral_norm"], model["augment"], model["ema_decay"],
                model["extra_convs"], model["mapping_layers"]) == ("bce", False, ["translation", "cutout"], 0.99, 1, 2)

    def test_augment_none_turns_augmentation_off(self, labelled_npz, tmp_path):
        run_dir = tmp_path / "run"
        assert invoke("--data", labelled_npz, *TINY, "--augment", "none", "--out", run_dir).exit_code == 0
        assert json.loads((run_dir / rundir.CONFIG_FILE).read_text())["model"]["augment"] == []

    def test_augmenting_vector_data_is_one_error_line(self, tmp_path):
        result = invoke("--data", "ring8", "--epochs", "1", "--augment", "cutout", "--out", tmp_path / "run")
        assert result.exit_code == 1 and "apply to images only" in error_line(result)

    def test_unknown_augmentation_is_one_error_line(self, labelled_npz, tmp_path):
        result = invoke("--data", labelled_npz, *TINY, "--augment", "colour", "--out", tmp_path / "run")
        assert result.exit_code == 1 and "unknown augmentation ['colour']" in error_line(result)

    def test_mlp_size_reaches_a_vector_runs_config(self, tmp_path):
        run_dir = tmp_path / "run"
        result = invoke("--data", "ring8", "--epochs", "1", "--batch-size", "2000", "--hidden", "16",
                        "--mlp-layers", "3", "--out", run_dir)
        assert result.exit_code == 0, result.output
        model = json.loads((run_dir / rundir.CONFIG_FILE).read_text())["model"]
        assert (model["hidden"], model["mlp_layers"]) == (16, 3)
        assert read_meta(run_dir / rundir.CHECKPOINT_FILE)["step"] == 9  # 18,000 training points // 2,000
        decoder = load_checkpoint(run_dir / rundir.CHECKPOINT_FILE).models["decoder"]
        weights = [v for k, v in decoder.items() if k.endswith(".weight")]
        assert len(weights) == 4 and weights[0].shape == (16, 8)  # 3 hidden layers of 16 + the output layer

    def test_negative_loss_weight_is_a_usage_error(self, labelled_npz):
        result = CliRunner().invoke(main, ["train", "--data", labelled_npz, "--r1-weight", "-1"])
        assert result.exit_code == 2 and "--r1-weight" in result.output

    def test_help_lists_the_options(self):
        result = CliRunner().invoke(main, ["train", "--help"])
        assert result.exit_code == 0
        for option in ("--data", "--model", "--conditional", "--epochs", "--batch-size", "--latent-dim",
                       "--image-size", "--width", "--hidden", "--mlp-layers", "--lr", "--kl-weight", "--feature-weight",
                       "--r1-weight",
                       "--gan-loss", "--spectral-norm", "--augment", "--ema-decay", "--extra-convs", "--mapping-layers",
                       "--device", "--precision", "--cuda-graphs", "--seed", "--out", "--resume"):
            assert option in result.output, option

    def test_help_states_the_defaults_the_config_holds(self):
        """The help is written by hand (the CLI imports no config at start-up): it must not drift from the config."""
        from gvtool.train.config import TrainConfig

        text = " ".join(CliRunner().invoke(main, ["train", "--help"], terminal_width=1000).output.split())
        images, stacked, mixtures = (TrainConfig.defaults_for(d) for d in ("mnist", "stacked-mnist", "ring8"))
        assert f"[default: {images.epochs}; stacked-mnist {stacked.epochs}; 2-D mixtures {mixtures.epochs};" in text
        assert f"betas ({images.beta1:g}, {images.beta2:g}); 2-D mixtures" in text
        assert f"betas ({mixtures.beta1:g}, {mixtures.beta2:g})]" in text
        cuda_images, cuda_stacked = (TrainConfig.defaults_for(d, "cuda") for d in ("mnist", "stacked-mnist"))
        factor = cuda_images.epochs // images.epochs
        assert f"images on CUDA {factor}x: {cuda_images.epochs}, stacked-mnist {cuda_stacked.epochs}]" in text

    def test_every_option_given_reaches_its_config_field(self, monkeypatch, labelled_npz):
        """Options are named after their config fields and routed by name: the model's to ModelConfig, the rest (and
        image_size, which both have: the size asked for) to TrainConfig."""
        trained = []
        monkeypatch.setattr("gvtool.train.loop.train", lambda config, run_dir, **_: trained.append(config) or
                            types.SimpleNamespace(interrupted=False, epoch=0, step=0, items_per_s=0.0, run_dir=run_dir))
        CliRunner().invoke(main, ["train", "--data", labelled_npz, "--out", "unused", "--epochs", "3", "--batch-size", "6",
                                  "--latent-dim", "5", "--image-size", "20", "--width", "8", "--extra-convs", "2",
                                  "--mapping-layers", "1", "--hidden", "24", "--mlp-layers", "3", "--lr", "0.002",
                                  "--kl-weight", "1.5", "--feature-weight", "0.2", "--r1-weight", "0.1", "--gan-loss", "bce",
                                  "--no-spectral-norm", "--augment", "cutout", "--ema-decay", "0.99", "--device", "cpu",
                                  "--precision", "fp32", "--cuda-graphs", "off", "--seed", "4", "--conditional",
                                  "--model", "gan"], catch_exceptions=False)
        (c,) = trained
        m = c.model
        assert (c.epochs, c.batch_size, c.image_size, c.lr, c.device, c.precision, c.cuda_graphs, c.seed) == \
            (3, 6, 20, 0.002, "cpu", "fp32", "off", 4)
        assert (m.kind, m.conditional, m.latent_dim, m.width, m.extra_convs, m.mapping_layers, m.hidden, m.mlp_layers,
                m.kl_weight, m.feature_weight, m.r1_weight, m.gan_loss, m.spectral_norm, m.augment, m.ema_decay) == \
            ("gan", True, 5, 8, 2, 1, 24, 3, 1.5, 0.2, 0.1, "bce", False, ("cutout",), 0.99)
        assert m.image_size == ModelConfig().image_size  # filled from the data by the loop, not by the option

    @pytest.mark.parametrize("device_type, expected", [("cpu", 1), ("cuda", 4)])
    def test_the_defaults_follow_the_device_that_device_resolves_to(self, monkeypatch, labelled_npz, device_type,
                                                                    expected):
        """--device auto picks the CUDA defaults where it resolves to CUDA; given options still win over them."""
        from gvtool.train.config import TrainConfig

        trained = []

        def record(config, run_dir, **_):
            trained.append(config)
            return types.SimpleNamespace(interrupted=False, epoch=0, step=0, items_per_s=0.0, run_dir=run_dir)

        monkeypatch.setattr("gvtool.train.device.resolve_device", lambda spec: torch.device(device_type))
        monkeypatch.setattr("gvtool.train.loop.train", record)
        runner = CliRunner()
        runner.invoke(main, ["train", "--data", labelled_npz, "--out", "unused"], catch_exceptions=False)
        runner.invoke(main, ["train", "--data", labelled_npz, "--epochs", "3", "--out", "unused"], catch_exceptions=False)
        assert [c.epochs for c in trained] == [TrainConfig().epochs * expected, 3]
        assert trained[0].device == "auto"  # the config keeps what was asked; the loop resolves it again

    def test_version(self):
        result = CliRunner().invoke(main, ["--version"])
        assert result.exit_code == 0
        assert result.output.strip() == f"gvtool, version {gvtool.__version__}"

    def test_interrupted_run_exits_130_and_says_how_to_resume(self, labelled_npz, tmp_path, monkeypatch):
        monkeypatch.setattr("gvtool.train.loop.train", functools.partial(library_train, stop_after_steps=2))
        result = invoke("--data", labelled_npz, *TINY, "--out", tmp_path / "run")
        assert result.exit_code == 130
        assert "interrupted at step 2" in said(result)
        assert read_meta(tmp_path / "run" / rundir.CHECKPOINT_FILE)["step"] == 2


BAD_INPUT = [
    pytest.param(lambda p: ["--data", p["tmp"] / "missing.npz"], "missing.npz: no such .npz file", id="missing-data"),
    pytest.param(lambda p: ["--data", p["labelled"], "--image-size", "70"],
                 "--image-size must be a multiple of 4 from 16 to 64, got 70", id="image-size-70"),
    pytest.param(lambda p: ["--data", p["unlabelled"], "--conditional"], "--conditional needs labelled data",
                 id="conditional-unlabelled"),
    pytest.param(lambda p: ["--data", p["labelled"], "--device", "cuda"], "--device cuda asked for CUDA", id="cuda",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")),
    pytest.param(lambda p: ["--data", p["labelled"], "--device", "cpu", "--precision", "fp16"],
                 "--precision fp16 needs a CUDA device", id="fp16-on-cpu"),
    pytest.param(lambda p: ["--data", p["labelled"], "--out", p["existing"]],
                 "already holds a run; pass --resume", id="existing-run"),
]


class TestBadInput:
    @pytest.fixture
    def paths(self, tmp_path, labelled_npz, unlabelled_npz, cli_run):
        existing = tmp_path / "existing"
        existing.mkdir()
        shutil.copy(cli_run[0] / rundir.CHECKPOINT_FILE, existing)
        return {"tmp": tmp_path, "labelled": labelled_npz, "unlabelled": unlabelled_npz, "existing": existing}

    @pytest.mark.parametrize("args, message", BAD_INPUT)
    def test_exits_1_with_one_error_line_naming_the_problem(self, paths, args, message):
        args = args(paths)
        if "--out" not in args:
            args += ["--out", paths["tmp"] / "run"]
        assert message in error_line(invoke(*args, *TINY))

    def test_unknown_model_is_a_usage_error(self, labelled_npz):
        result = CliRunner().invoke(main, ["train", "--data", labelled_npz, "--model", "diffusion"])
        assert result.exit_code == 2
        assert "Invalid value for '--model'" in result.stderr


class TestResume:
    def test_resume_continues_an_interrupted_run(self, interrupted_run):
        result = invoke("--resume", "--out", interrupted_run)
        assert result.exit_code == 0, result.output
        assert "resuming at step 2" in said(result)
        meta = read_meta(interrupted_run / rundir.CHECKPOINT_FILE)
        assert (meta["step"], meta["complete"]) == (STEPS_PER_EPOCH, True)

    def test_resume_may_raise_the_epochs(self, interrupted_run):
        result = invoke("--resume", "--out", interrupted_run, "--epochs", "2")
        assert result.exit_code == 0, result.output
        assert read_meta(interrupted_run / rundir.CHECKPOINT_FILE)["step"] == 2 * STEPS_PER_EPOCH

    def test_resume_accepts_an_option_equal_to_the_runs_own(self, interrupted_run):
        result = invoke("--resume", "--out", interrupted_run, "--batch-size", "8")
        assert result.exit_code == 0, result.output

    def test_resume_with_a_clashing_option_exits_1_naming_it(self, interrupted_run):
        result = invoke("--resume", "--out", interrupted_run, "--batch-size", "16")
        assert "--batch-size 16 (the run has 8)" in error_line(result)
        assert read_meta(interrupted_run / rundir.CHECKPOINT_FILE)["step"] == 2

    def test_resume_accepts_the_runs_own_augmentations_however_spelt(self, interrupted_run):
        assert invoke("--resume", "--out", interrupted_run, "--augment", " None").exit_code == 0

    def test_resume_with_clashing_augmentations_exits_1_naming_them(self, interrupted_run):
        result = invoke("--resume", "--out", interrupted_run, "--augment", "cutout")
        assert "--augment cutout (the run has ())" in error_line(result)

    def test_resume_with_a_clashing_loss_weight_exits_1_naming_it(self, interrupted_run):
        result = invoke("--resume", "--out", interrupted_run, "--r1-weight", "2")
        assert "--r1-weight 2.0 (the run has 0.0)" in error_line(result)

    def test_resume_with_a_clashing_model_names_the_model_option(self, interrupted_run):
        result = invoke("--resume", "--out", interrupted_run, "--model", "vae")
        assert "--model vae (the run has vaegan)" in error_line(result)

    def test_resume_of_a_finished_run_exits_1_asking_for_more_epochs(self, cli_run, tmp_path):
        run_dir = shutil.copytree(cli_run[0], tmp_path / "run")
        result = invoke("--resume", "--out", run_dir)
        assert "--epochs" in error_line(result)

    def test_resume_without_out_continues_the_newest_run(self, interrupted_run, tmp_path, monkeypatch):
        monkeypatch.chdir(tmp_path)
        (tmp_path / "runs").mkdir()
        run_dir = shutil.move(interrupted_run, tmp_path / "runs" / "a")
        result = invoke("--resume")
        assert result.exit_code == 0, result.output
        assert read_meta(run_dir / rundir.CHECKPOINT_FILE)["step"] == STEPS_PER_EPOCH

    def test_resume_without_out_and_without_runs_folder_exits_1(self, tmp_path, monkeypatch):
        monkeypatch.chdir(tmp_path)
        assert "no run with a checkpoint under runs/" in error_line(invoke("--resume"))


class TestMessages:
    """What the command prints must reach the user verbatim: paths are not rich markup, commands stay whole."""

    def test_error_message_shows_a_path_with_brackets_verbatim(self, tmp_path):
        result = invoke("--data", tmp_path / "faces[data].npz", *TINY, "--out", tmp_path / "run")
        assert "faces[data].npz: no such .npz file" in error_line(result)

    def test_done_line_shows_a_run_folder_with_brackets_verbatim(self, labelled_npz, tmp_path):
        run_dir = tmp_path / "exp[red]"
        result = invoke("--data", labelled_npz, *TINY, "--out", run_dir)
        assert result.exit_code == 0, result.output
        assert f"->{run_dir}" in "".join(result.stderr.split())  # the path may be folded across lines

    def test_error_message_with_a_closing_tag_is_not_a_traceback(self, tmp_path):
        # the runner catches the exception here, so the test can say which one ended the command
        result = CliRunner().invoke(main, ["train", "--data", str(tmp_path / "a[/b].npz"), "--out", str(tmp_path / "r")])
        assert isinstance(result.exception, SystemExit), repr(result.exception)
        assert "a[/b].npz" in error_line(result)

    def test_interrupted_run_gives_the_resume_command_on_one_line(self, labelled_npz, tmp_path, monkeypatch):
        monkeypatch.setattr("gvtool.train.loop.train", functools.partial(library_train, stop_after_steps=2))
        result = invoke("--data", labelled_npz, *TINY, "--out", tmp_path / "run")
        command = f"gvtool train --resume --out {tmp_path / 'run'}"
        assert any(command in line for line in result.stderr.splitlines()), result.stderr
