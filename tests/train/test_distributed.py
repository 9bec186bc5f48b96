"""One run trained by several processes: torchrun worlds of gloo ranks on the CPU, and the pieces they use.

The worlds are tiny (the 36 training images of `labelled_npz`, batch 8, two epochs) so that a 2-core CI runs them
in seconds; what they check holds at any size: every rank ends with the same weights, rank 0 alone writes the
run, the ranks stop at one step, a world of one trains exactly like a plain run, and a checkpoint resumes at
another world size.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gvtool.errors import BadInputError
from gvtool.train import distributed, rundir
from gvtool.train.checkpoint import load_checkpoint, read_meta
from gvtool.train.config import ModelConfig, TrainConfig
from gvtool.train.loop import train
from gvtool.train.metrics_log import MetricsLog, read_rows

pytestmark = pytest.mark.usefixtures("one_torch_thread")

WORKER = Path(__file__).with_name("distributed_worker.py")
STEPS = 8  # 36 training items // batch 8 = 4 steps an epoch, 2 epochs


def torchrun(nproc: int, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *args]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=cwd, env=env)


def worker_world(tmp_path_factory, npz: str, nproc: int, stop: int = 0, *kind_and_base: str) -> Path:
    out = tmp_path_factory.mktemp(f"world-{nproc}-stop-{stop}")
    done = torchrun(nproc, str(WORKER), npz, str(out), str(stop), *kind_and_base, cwd=out)
    assert done.returncode == 0, done.stderr[-4000:]
    return out


def ranks(out: Path, n: int) -> list[dict]:
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(n)]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory, labelled_npz) -> Path:
    return worker_world(tmp_path_factory, labelled_npz, 2)


def _weights(checkpoint: Path, name: str) -> dict[str, torch.Tensor]:
    return load_checkpoint(checkpoint).models[name]


class TestTwoGlooRanks:
    def test_both_ranks_trained_every_step_in_a_world_of_two(self, two_ranks):
        assert [(r["rank"], r["size"], r["step"], r["interrupted"]) for r in ranks(two_ranks, 2)] == \
            [(0, 2, STEPS, False), (1, 2, STEPS, False)]

    def test_every_rank_ends_with_the_same_weights(self, two_ranks):
        first, second = ranks(two_ranks, 2)
        assert first["params"].keys() == {"encoder", "decoder", "discriminator"}
        assert first["params"] == second["params"]

    def test_rank_0_alone_wrote_the_run(self, two_ranks):
        run = two_ranks / "run"
        meta = read_meta(run / rundir.CHECKPOINT_FILE)
        assert (meta["step"], meta["epoch"], meta["complete"]) == (STEPS, 2, True)
        steps = [r["step"] for r in read_rows(run / rundir.METRICS_FILE) if r["type"] == "step"]
        assert steps == list(range(1, STEPS + 1))  # one writer: every step once
        assert sorted(p.name for p in two_ranks.iterdir()) == ["rank0.json", "rank1.json", "run"]

    @pytest.mark.parametrize("kind", ["ali", "hier", "prior", "cyclevae"])
    def test_the_hybrids_train_in_a_world_of_two(self, tmp_path_factory, labelled_npz, colour_npz, two_ranks, kind):
        """A prior's frozen base networks are not wrapped for gradient averaging (they have no gradients); a
        cyclevae's batches of both domains are split over the ranks."""
        base = (str(two_ranks / "run"),) if kind == "prior" else (colour_npz,) if kind == "cyclevae" else ()
        out = worker_world(tmp_path_factory, labelled_npz, 2, 0, kind, *base)
        first, second = ranks(out, 2)
        assert first["step"] == second["step"] == STEPS
        assert first["params"] == second["params"]
        assert read_meta(out / "run" / rundir.CHECKPOINT_FILE)["config"]["model"]["kind"] == kind

    def test_the_checkpoint_resumes_in_one_process(self, two_ranks, tmp_path):
        run = tmp_path / "run"
        shutil.copytree(two_ranks / "run", run)
        config = TrainConfig.from_dict(read_meta(run / rundir.CHECKPOINT_FILE)["config"]).replace(epochs=3)
        result = train(config, run, resume=True)
        assert (result.step, result.epoch, result.interrupted) == (STEPS + 4, 3, False)
        assert read_meta(run / rundir.CHECKPOINT_FILE)["complete"] is True

    def test_the_ranks_stop_together_and_save_where_they_stopped(self, tmp_path_factory, labelled_npz):
        out = worker_world(tmp_path_factory, labelled_npz, 2, stop=3)  # 3: not a flush step (log_every 2)
        assert [(r["step"], r["interrupted"]) for r in ranks(out, 2)] == [(3, True), (3, True)]
        meta = read_meta(out / "run" / rundir.CHECKPOINT_FILE)
        assert (meta["step"], meta["epoch"], meta["batch_in_epoch"]) == (3, 0, 3)


class TestWorldOfOne:
    def test_trains_exactly_like_a_plain_run(self, tmp_path_factory, tmp_path, labelled_npz):
        out = worker_world(tmp_path_factory, labelled_npz, 1)
        config = TrainConfig(model=ModelConfig(width=4, latent_dim=4, hidden=16), data=labelled_npz, epochs=2,
                             batch_size=8, device="cpu", n_fixed=16, log_every=2)
        train(config, tmp_path / "plain")
        for name in ("encoder", "decoder", "discriminator", "decoder_ema"):
            ours = _weights(out / "run" / rundir.CHECKPOINT_FILE, name)
            plain = _weights(tmp_path / "plain" / rundir.CHECKPOINT_FILE, name)
            assert ours.keys() == plain.keys()
            assert all(torch.equal(ours[k], plain[k]) for k in ours), name


class TestCommand:
    def test_torchrun_trains_with_the_cli_and_one_process_resumes_it(self, tmp_path, labelled_npz):
        tiny = ["--width", "4", "--latent-dim", "4", "--hidden", "16", "--batch-size", "8", "--device", "cpu"]
        done = torchrun(2, "-m", "gvtool", "train", "--data", labelled_npz, "--epochs", "1", *tiny, "--out", "run",
                        cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-4000:]
        assert done.stderr.count("done:") == 1  # rank 0 reports; rank 1 is quiet
        assert read_meta(tmp_path / "run" / rundir.CHECKPOINT_FILE)["step"] == 4
        resumed = subprocess.run([sys.executable, "-m", "gvtool", "train", "--resume", "--out", "run", "--epochs", "2"],
                                 capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert resumed.returncode == 0, resumed.stderr[-4000:]
        assert read_meta(tmp_path / "run" / rundir.CHECKPOINT_FILE)["step"] == 8

    def test_a_batch_that_does_not_split_is_one_error_line_per_rank(self, tmp_path, labelled_npz):
        done = torchrun(2, "-m", "gvtool", "train", "--data", labelled_npz, "--epochs", "1", "--batch-size", "9",
                        "--width", "4", "--device", "cpu", "--out", "run", cwd=tmp_path)
        assert done.returncode != 0
        for rank in (0, 1):
            assert f"[rank {rank}] error: --batch-size 9 does not split evenly over 2 processes" in done.stderr
        assert not (tmp_path / "run").exists()


class TestPieces:
    WORLD = distributed.World(rank=1, size=4, local_rank=1)

    def test_a_rank_takes_its_contiguous_slice_of_the_global_batch(self):
        batch = torch.arange(12)
        assert [distributed.shard(batch, distributed.World(r, 4, r)).tolist() for r in range(4)] == \
            [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11]]
        assert distributed.shard(batch, distributed.World()).tolist() == batch.tolist()

    def test_a_batch_must_split_evenly(self):
        distributed.check_batch(8, self.WORLD)
        with pytest.raises(BadInputError, match="--batch-size 10 does not split evenly over 4 processes"):
            distributed.check_batch(10, self.WORLD)

    @pytest.mark.parametrize("spec,cuda,expected", [("auto", True, "cuda:1"), ("auto", False, "cpu"),
                                                    ("cuda", True, "cuda:1"), ("cpu", True, "cpu")])
    def test_each_rank_takes_its_own_gpu(self, spec, cuda, expected):
        assert distributed.device_spec(spec, self.WORLD, cuda) == expected

    def test_a_fixed_gpu_is_refused_in_a_world_of_several(self):
        with pytest.raises(BadInputError, match="each rank takes its own GPU"):
            distributed.device_spec("cuda:0", self.WORLD, True)
        assert distributed.device_spec("cuda:0", distributed.World(), True) == "cuda:0"

    def test_rank_0_keeps_the_seed_and_the_others_draw_their_own(self):
        seeds = [distributed.rank_seed(7, distributed.World(r, 3, r)) for r in range(3)]
        assert seeds[0] == 7 and len(set(seeds)) == 3

    def test_without_torchrun_nothing_is_joined(self):
        with distributed.launched("cpu", environ={}) as device:
            assert device == "cpu"
            assert distributed.current() == distributed.World()

    def test_a_world_of_one_reduces_nothing(self):
        world = distributed.World()
        table = torch.tensor([[1.0, 2.0]])
        assert distributed.mean_over_ranks(table, world) is table
        assert distributed.any_rank(True, torch.device("cpu"), world) is True
        assert distributed.from_rank_0("runs/x") == "runs/x"


class TestQuietLog:
    def test_without_a_path_it_writes_nothing_and_still_returns_means(self, tmp_path):
        log = MetricsLog(None)
        log.record(1, 1, {"a": torch.tensor(1.0)})
        log.record(2, 1, {"a": torch.tensor(3.0)})
        assert log.flush() == {"a": 2.0}
        log.write_epoch({"epoch": 1})
        log.close()
        assert list(tmp_path.iterdir()) == []

    def test_reduce_maps_the_table_before_it_is_written(self, tmp_path):
        log = MetricsLog(tmp_path / "m.jsonl")
        log.record(1, 1, {"a": torch.tensor(1.0)})
        assert log.flush(reduce=lambda table: table * 10) == {"a": 10.0}
        log.close()
        assert [r["a"] for r in read_rows(tmp_path / "m.jsonl")] == [10.0]
