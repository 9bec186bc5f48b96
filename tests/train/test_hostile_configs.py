"""Hostile and damaged run configs, and sizes beyond any machine: one clear line and exit code 1, never a traceback.

config.json is read by `train --resume` and `eval`; the config inside the checkpoint by `export` and `train
--resume`. Each case of the hostile-user probe is named; a seeded fuzz loop mutates config.json at random.
"""

from __future__ import annotations

import copy
import json
import random
import shutil

import pytest
from click.testing import CliRunner
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from cli_helpers import error_line
from export_fixtures import tiny_bundle, tiny_run  # noqa: F401
from gvtool.cli import main
from gvtool.train import rundir

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def run(tiny_run, tmp_path):
    """A copy of the tiny ring8 run (1 epoch done; vector data, so vector_mean is stored)."""
    return shutil.copytree(tiny_run("ring8"), tmp_path / "run")


def edit_config(run, change) -> None:
    path = run / rundir.CONFIG_FILE
    raw = json.loads(path.read_text())
    change(raw)
    path.write_text(json.dumps(raw))


def edit_checkpoint_config(run, change) -> None:
    path = run / rundir.CHECKPOINT_FILE
    with safe_open(str(path), "pt") as f:
        metadata = f.metadata()
    tensors = load_file(str(path))
    meta = json.loads(metadata["meta"])
    change(meta["config"])
    save_file(tensors, str(path), metadata=metadata | {"meta": json.dumps(meta)})


def resume(run):
    return invoke("train", "--resume", "--out", run, "--epochs", 2)


class TestConfigJson:
    @pytest.mark.parametrize("change, expected", [
        (lambda raw: raw["model"].update(vector_mean=["a"]), "model config vector_mean must be a list of finite numbers"),
        (lambda raw: raw.update(data={}), "train config data must be a string, got {}"),
        (lambda raw: raw.update(epochs="35"), "train config epochs must be an integer"),
        (lambda raw: raw.update(epochs=2.5), "train config epochs must be an integer"),
        (lambda raw: raw.update(model="vaegan"), "model must be"),
        (lambda raw: raw["model"].update(width=True), "model config width must be an integer"),
        (lambda raw: raw.update(lr=None), "train config lr must be a finite number"),
        (lambda raw: raw.update(steps=3), "unknown keys ['steps']"),
    ], ids=["vector_mean-a", "data-dict", "epochs-string", "epochs-float", "model-string", "width-bool", "lr-null",
            "unknown-key"])
    def test_each_is_one_line_naming_the_field(self, run, change, expected):
        edit_config(run, change)
        line = error_line(resume(run))
        assert line.startswith(f"error: cannot resume {run}: {run / rundir.CONFIG_FILE}") and expected in line, line

    def test_epochs_1e400_is_not_a_number_gvtool_writes(self, run):
        path = run / rundir.CONFIG_FILE
        path.write_text(path.read_text().replace('"epochs": 1', '"epochs": 1e400'))
        assert "1e400 overflows a float" in error_line(resume(run))

    def test_not_utf8(self, run):
        (run / rundir.CONFIG_FILE).write_bytes(b'{"data": "\xff"}')
        assert "is not UTF-8 text, so not a run config" in error_line(resume(run))

    def test_nested_brackets(self, run):
        (run / rundir.CONFIG_FILE).write_text("[" * 50_000 + "]" * 50_000)
        assert "nests its brackets over 32 deep" in error_line(resume(run))


class TestCheckpointConfig:
    def test_export_refuses_a_stored_config_that_is_not_valid(self, run, tmp_path):
        edit_checkpoint_config(run, lambda c: c["model"].update(vector_mean=["a"]))
        line = error_line(invoke("export", run, "--out", tmp_path / "b"))
        assert "holds a config that is not valid" in line and "vector_mean must be a list of finite numbers" in line

    def test_resume_refuses_it_too(self, run):
        edit_checkpoint_config(run, lambda c: c["model"].update(vector_mean=["a"]))
        line = error_line(resume(run))
        assert "holds no valid config" in line and "vector_mean" in line


class TestSizes:
    @pytest.mark.parametrize("option, value, expected", [
        ("--width", 1_000_000, "--width must be from 4 to 1024"),
        ("--hidden", 10**9, "--hidden from 4 to 16384"),
        ("--batch-size", 10**9, "--batch-size must be from 2 (batch norm needs two items) to 65536"),
        ("--epochs", 10**9, "--epochs must be from 1 to 1,000,000"),
    ])
    def test_train_refuses_sizes_beyond_any_machine_before_allocating(self, tmp_path, option, value, expected):
        line = error_line(invoke("train", "--data", "ring8", option, value, "--device", "cpu", "--out", tmp_path / "r"))
        assert expected in line
        assert not (tmp_path / "r").exists()

    def test_train_refuses_networks_that_would_not_fit_in_free_memory(self, tmp_path, monkeypatch):
        from gvtool import system

        monkeypatch.setattr(system, "available_memory", lambda: 50_000_000)
        line = error_line(invoke("train", "--data", "ring8", "--hidden", "2048", "--device", "cpu",
                                 "--out", tmp_path / "r"))
        assert "M parameters: training them needs about" in line and "0.1 GB is free on cpu" in line
        assert list(tmp_path.iterdir()) == []

    def test_bench_refuses_a_batch_beyond_any_machine(self, tiny_bundle):
        line = error_line(invoke("bench", "run", tiny_bundle("gan")[0], "--batch-sizes", "1,1000000000",
                                 "--backend", "onnxruntime", "--device", "cpu"))
        assert "--batch-sizes 1000000000 is above 65536" in line

    def test_bench_refuses_a_batch_that_would_not_fit_in_memory(self, tiny_bundle, monkeypatch):
        from gvtool import system

        monkeypatch.setattr(system, "available_memory", lambda: 10_000_000)
        line = error_line(invoke("bench", "run", tiny_bundle("gan")[0], "--batch-sizes", "60000",
                                 "--backend", "onnxruntime", "--device", "cpu"))
        assert "--batch-sizes 60000 would need about" in line and "0.0 GB of memory is free" in line


MUTANTS = [None, "x", "16", -1, 0, 1, 10**12, 1.5, True, [], {}, ["a"], "ring8", "cuda:7", "fp64", 1e300]


class TestFuzz:
    def test_random_mutations_of_config_json_resume_or_fail_with_one_line(self, run):
        original = json.loads((run / rundir.CONFIG_FILE).read_text())
        fields = [("model", k) for k in original["model"]] + [(k,) for k in original if k != "model"]
        rng = random.Random(5)
        for round_ in range(60):
            raw = copy.deepcopy(original)
            for _ in range(rng.choice([1, 1, 2])):
                path = rng.choice(fields)
                parent = raw["model"] if len(path) == 2 else raw
                if rng.random() < 0.15:
                    parent.pop(path[-1], None)
                else:
                    parent[path[-1]] = copy.deepcopy(rng.choice(MUTANTS))
            (run / rundir.CONFIG_FILE).write_text(json.dumps(raw))
            result = invoke("train", "--resume", "--out", run, "--epochs", 1)  # 1 epoch is done: never trains
            assert result.exception is None or isinstance(result.exception, SystemExit), (
                round_, repr(result.exception), json.dumps(raw)[:400])
            error_line(result)
