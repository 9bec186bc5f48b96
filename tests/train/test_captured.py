"""The training step captured as a CUDA graph (train/captured.py).

On the CPU, StaticStep (the captured step's static buffers, device-side rates and metrics window, without the
graph) stands in for it: a run through it must train exactly like the eager loop, to the bit, and resume
exactly. On a CUDA machine the real capture trains the same steps as the eager loop, within float tolerance.
"""

from __future__ import annotations

import pytest
import torch

from checkpoint_helpers import assert_same_training_state
from gvtool.errors import BadInputError
from gvtool.train import captured, loop, rundir
from gvtool.train.checkpoint import load_checkpoint
from gvtool.train.ema import WeightAverage
from gvtool.train.loop import train
from gvtool.train.metrics_log import read_rows

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CASES = [("vaegan", "npz", False), ("vae", "npz", False), ("gan", "npz", True), ("vaegan", "ring8", False),
         ("ali", "npz", True), ("hier", "npz", False), ("hier", "ring8", False), ("cyclevae", "npz", False)]


@pytest.fixture
def static_step(monkeypatch):
    """The loop believes the step can be captured; on the CPU it then runs StaticStep."""
    monkeypatch.setattr(captured, "can_capture", lambda device, precision, distributed: (True, ""))


@pytest.fixture
def make_config(labelled_npz, colour_npz, make_train_config):
    def make(kind, data, conditional, **changes):
        data = labelled_npz if data == "npz" else data
        domain_b = {"data_b": colour_npz} if kind == "cyclevae" else {}
        return make_train_config(data, kind=kind, conditional=conditional, epochs=2 if data != "ring8" else 1,
                                 log_every=3, **domain_b, **changes)
    return make


def _same_checkpoints(got_dir, want_dir) -> None:
    assert_same_training_state(load_checkpoint(got_dir / rundir.CHECKPOINT_FILE),
                               load_checkpoint(want_dir / rundir.CHECKPOINT_FILE))


def _step_rows(run_dir) -> list[dict]:
    return [r for r in read_rows(run_dir / rundir.METRICS_FILE) if r["type"] == "step"]


class TestStaticStepOnTheCpu:
    @pytest.mark.parametrize("kind, data, conditional", CASES)
    def test_trains_exactly_like_the_eager_loop(self, make_config, tmp_path, static_step, kind, data, conditional):
        config = make_config(kind, data, conditional)
        train(config.replace(cuda_graphs="off"), tmp_path / "eager")
        train(config, tmp_path / "static")
        _same_checkpoints(tmp_path / "static", tmp_path / "eager")
        assert _step_rows(tmp_path / "static") == _step_rows(tmp_path / "eager")  # the window carries every step

    def test_really_ran_the_static_step(self, make_config, tmp_path, static_step, monkeypatch):
        calls = []
        original = captured.StaticStep.__call__
        monkeypatch.setattr(captured.StaticStep, "__call__", lambda self, i, s: calls.append(s) or original(self, i, s))
        train(make_config("vaegan", "npz", False), tmp_path / "run")
        assert calls == list(range(1, 9))

    def test_an_eager_runs_checkpoint_resumes_under_the_captured_step(self, make_config, tmp_path, monkeypatch):
        """A run saved by the eager loop (the CPU, a torchrun world) resumed where the step is captured: its
        optimizers take this process's capturable flag (a captured Adam step refuses a group without it)."""
        config = make_config("vaegan", "npz", False)
        train(config.replace(cuda_graphs="off"), tmp_path / "run", stop_after_steps=5)
        made = []
        original = loop._adam
        monkeypatch.setattr(loop, "_adam", lambda *a, **k: made.append(original(*a, **k)) or made[-1])
        monkeypatch.setattr(captured, "can_capture", lambda device, precision, distributed: (True, ""))
        train(config, tmp_path / "run", resume=True)
        assert made and all(g["capturable"] for opt in made for g in opt.param_groups)

    def test_resumes_exactly(self, make_config, tmp_path, static_step):
        config = make_config("vaegan", "npz", False)
        train(config, tmp_path / "whole")
        train(config, tmp_path / "parts", stop_after_steps=5)
        train(config, tmp_path / "parts", resume=True)
        _same_checkpoints(tmp_path / "parts", tmp_path / "whole")


class TestWhenItApplies:
    def test_on_needs_cuda(self, make_config, tmp_path):
        with pytest.raises(BadInputError, match="--cuda-graphs on cannot be met here: CUDA graphs need a CUDA device"):
            train(make_config("vaegan", "npz", False, cuda_graphs="on"), tmp_path / "run")
        assert not (tmp_path / "run").exists()

    @pytest.mark.parametrize("device, precision, distributed, ok, why", [
        ("cpu", "fp32", False, False, "CUDA device"),
        ("cuda", "fp16", False, False, "loss scaling"),
        ("cuda", "bf16", True, False, "torchrun"),
        ("cuda", "bf16", False, True, ""),
        ("cuda", "fp32", False, True, ""),
    ])
    def test_cuda_one_process_and_no_loss_scaling(self, device, precision, distributed, ok, why):
        got_ok, got_why = captured.can_capture(torch.device(device), precision, distributed)
        assert got_ok is ok and why in got_why

    def test_an_unknown_mode_is_refused(self, make_config):
        with pytest.raises(BadInputError, match="unknown --cuda-graphs 'sometimes'"):
            make_config("vaegan", "npz", False, cuda_graphs="sometimes")


class TestRateOnTheDevice:
    def test_update_at_rate_is_update_to_the_bit(self):
        torch.manual_seed(0)
        net, trained = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
        a, b = WeightAverage(net, 0.999), WeightAverage(net, 0.999)
        a.update(trained, 50)
        b.update_at_rate(trained, torch.tensor(1.0 - min(0.999, 51 / 60)))
        assert all(torch.equal(p, q) for p, q in zip(a.net.parameters(), b.net.parameters()))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
class TestCapturedOnCuda:
    @pytest.mark.parametrize("kind, data, conditional", CASES)
    def test_trains_like_the_eager_loop(self, make_config, tmp_path, kind, data, conditional):
        """As close to the eager loop as the eager loop is to itself: some CUDA kernels (atomic adds in backward
        passes) are not bit-reproducible, and Adam turns their last-bit differences into steps of up to its
        learning rate, so a second eager run measures how far two runs of one step may drift apart."""
        config = make_config(kind, data, conditional, device="cuda", precision="fp32")
        train(config.replace(cuda_graphs="off"), tmp_path / "eager")
        train(config.replace(cuda_graphs="off"), tmp_path / "again")
        result = train(config.replace(cuda_graphs="on"), tmp_path / "graph")
        assert result.step == load_checkpoint(tmp_path / "eager" / rundir.CHECKPOINT_FILE).meta["step"]
        got, want, again = (load_checkpoint(tmp_path / run / rundir.CHECKPOINT_FILE).models
                            for run in ("graph", "eager", "again"))
        for name, state in want.items():
            for key, tensor in state.items():
                if tensor.is_floating_point():
                    drift = (again[name][key] - tensor).abs().max()
                    off = (got[name][key] - tensor).abs() - (1e-4 + 1e-3 * tensor.abs() + 4 * drift)
                    assert off.max() <= 0, f"{name}.{key}: off by {off.max():.3g} beyond 4x the eager drift {drift:.3g}"
        rows = _step_rows(tmp_path / "graph")
        assert [r["step"] for r in rows] == list(range(1, result.step + 1))

    def test_captures_after_the_warm_up_steps(self, make_config, tmp_path, monkeypatch):
        made = []
        original = captured.CapturedStep.__init__
        monkeypatch.setattr(captured.CapturedStep, "__init__",
                            lambda self, *a, **k: made.append(self) or original(self, *a, **k))
        train(make_config("vaegan", "npz", False, device="cuda", cuda_graphs="on"), tmp_path / "run")
        assert len(made) == 1 and made[0].graph is not None and made[0].eager_steps == captured.WARMUP_STEPS
