"""One writer per run folder and per bundle, and what killed writers leave behind.

A second trainer or exporter of a folder is refused with a line naming the holder; a killed holder blocks no one;
hidden temp folders are never taken for a bundle; an export killed mid-way is cleaned up (and a bundle moved aside
but never replaced is put back) by the next export; a trainer's half-written temp files by the next trainer.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from export_fixtures import tiny_bundle, tiny_run  # noqa: F401
from gvtool import fileio
from gvtool.errors import BadInputError
from gvtool.fileio import folder_lock, lock_path, newest_holding, remove_leftovers
from gvtool.manifest import MANIFEST_FILE, is_bundle, read_manifest
from gvtool.train import rundir
from gvtool.train.checkpoint import read_meta

pytestmark = pytest.mark.usefixtures("one_torch_thread")

HOLD = """
import sys, time
from gvtool.fileio import folder_lock
with folder_lock(sys.argv[1], "a test holder"):
    print("held", flush=True)
    time.sleep(60)
"""


def hold_in_another_process(target: Path) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(target)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


class TestFolderLock:
    def test_a_second_taker_is_refused_with_the_holders_command_pid_and_host(self, tmp_path):
        with folder_lock(tmp_path / "run", "gvtool train"):
            with pytest.raises(BadInputError) as caught:
                with folder_lock(tmp_path / "run", "gvtool train"):
                    pass
        message = str(caught.value)
        assert message.startswith(f"{tmp_path / 'run'} is in use by gvtool train (pid {os.getpid()} on "
                                  f"{socket.gethostname()}, since ")
        assert "wait for it to finish, or stop it" in message

    def test_released_at_the_end_of_the_block_and_leaves_no_file(self, tmp_path):
        with folder_lock(tmp_path / "run", "first"):
            assert lock_path(tmp_path / "run").is_file()
        with folder_lock(tmp_path / "run", "second"):
            pass
        assert list(tmp_path.iterdir()) == []

    def test_released_when_the_block_raises(self, tmp_path):
        with pytest.raises(RuntimeError):
            with folder_lock(tmp_path / "run", "first"):
                raise RuntimeError("boom")
        with folder_lock(tmp_path / "run", "second"):
            pass

    def test_another_process_is_refused_and_a_killed_holder_blocks_no_one(self, tmp_path):
        holder = hold_in_another_process(tmp_path / "run")
        try:
            with pytest.raises(BadInputError, match=rf"in use by a test holder \(pid {holder.pid} "):
                with folder_lock(tmp_path / "run", "me"):
                    pass
        finally:
            holder.send_signal(signal.SIGKILL)
            holder.wait()
        with folder_lock(tmp_path / "run", "me"):  # the kernel dropped the dead holder's lock
            pass

    def test_without_flock_a_live_holder_is_refused_and_a_dead_ones_lock_taken_over(self, tmp_path, monkeypatch):
        monkeypatch.setattr(fileio, "fcntl", None)
        with folder_lock(tmp_path / "run", "first"):
            with pytest.raises(BadInputError, match="in use by first"):
                with folder_lock(tmp_path / "run", "second"):
                    pass
        assert not lock_path(tmp_path / "run").exists()
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
        lock_path(tmp_path / "run").write_text(json.dumps({"what": "a crashed trainer", "pid": int(dead.stdout),
                                                           "host": socket.gethostname(), "since": time.time()}))
        with folder_lock(tmp_path / "run", "me"):
            assert json.loads(lock_path(tmp_path / "run").read_text())["pid"] == os.getpid()

    def test_without_flock_a_holder_on_another_host_is_never_judged_stale(self, tmp_path, monkeypatch):
        monkeypatch.setattr(fileio, "fcntl", None)
        lock_path(tmp_path / "run").write_text(json.dumps({"what": "gvtool train", "pid": 1, "host": "elsewhere"}))
        with pytest.raises(BadInputError, match=r"on elsewhere.*delete .*\.run\.lock"):
            with folder_lock(tmp_path / "run", "me"):
                pass


class TestLeftovers:
    def test_hidden_folders_are_never_the_newest(self, tmp_path):
        for name in ("a", ".a.x1.tmp"):
            (tmp_path / name).mkdir()
            (tmp_path / name / MANIFEST_FILE).write_text("{}")
            time.sleep(0.01)
        assert newest_holding(tmp_path, MANIFEST_FILE) == tmp_path / "a"

    def test_only_hidden_names_matching_are_removed(self, tmp_path):
        for name in (".b.1.tmp", ".b.2.old", "b.3.tmp", ".c.4.tmp"):
            (tmp_path / name).mkdir()
        removed = remove_leftovers(tmp_path, ".b.*.tmp")
        assert [p.name for p in removed] == [".b.1.tmp"]
        assert sorted(p.name for p in tmp_path.iterdir()) == [".b.2.old", ".c.4.tmp", "b.3.tmp"]


class TestTrainerLock:
    def test_a_second_trainer_of_a_folder_is_refused_and_changes_nothing(self, make_train_config, labelled_npz, tmp_path):
        from gvtool.train.loop import train

        run = tmp_path / "run"
        train(make_train_config(labelled_npz), run)
        before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
        with folder_lock(run, "gvtool train"):
            with pytest.raises(BadInputError, match="in use by gvtool train"):
                train(make_train_config(labelled_npz, epochs=2), run, resume=True)
        assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before

    def test_two_trainers_started_together_one_is_refused(self, labelled_npz, tmp_path):
        def command(epochs: int) -> list[str]:
            return [sys.executable, "-m", "gvtool", "train", "--data", labelled_npz, "--epochs", str(epochs),
                    "--width", "4", "--latent-dim", "4", "--batch-size", "8", "--device", "cpu", "--out", "run"]

        env = os.environ | {"OMP_NUM_THREADS": "1"}
        # The first trains far longer than the test: it is stopped with Ctrl-C once the second has been refused
        first = subprocess.Popen(command(100_000), cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 60
        while not lock_path(tmp_path / "run").exists() and time.time() < deadline:
            time.sleep(0.05)
        second = subprocess.run(command(3), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        while not (tmp_path / "run" / rundir.CHECKPOINT_FILE).exists() and time.time() < deadline:
            time.sleep(0.05)  # the first is inside its loop (Ctrl-C saves and exits there) once an epoch is saved
        first.send_signal(signal.SIGINT)
        _, first_err = first.communicate(timeout=120)
        assert first.returncode == 130, first_err[-2000:]  # interrupted, checkpoint saved
        assert second.returncode == 1
        assert f"error: run is in use by gvtool train (pid {first.pid} on " in second.stderr
        assert "Traceback" not in second.stderr
        config = json.loads((tmp_path / "run" / rundir.CONFIG_FILE).read_text())
        stored = read_meta(tmp_path / "run" / rundir.CHECKPOINT_FILE)["config"]
        assert config["epochs"] == stored["epochs"] == 100_000  # the refused trainer wrote nothing

    def test_a_killed_trainers_temp_files_are_removed_by_the_next(self, make_train_config, labelled_npz, tmp_path):
        from gvtool.train.loop import train

        run = tmp_path / "run"
        train(make_train_config(labelled_npz), run, stop_after_steps=2)
        (run / ".checkpoint.safetensors.k1ll.tmp").write_bytes(b"half")
        (run / rundir.SAMPLES_DIR).mkdir(exist_ok=True)
        (run / rundir.SAMPLES_DIR / ".epoch_0001.png.k1ll.tmp").write_bytes(b"half")
        (run / ".my-notes.tmp").write_text("not gvtool's")
        train(make_train_config(labelled_npz), run, resume=True)
        assert not (run / ".checkpoint.safetensors.k1ll.tmp").exists()
        assert not (run / rundir.SAMPLES_DIR / ".epoch_0001.png.k1ll.tmp").exists()
        assert (run / ".my-notes.tmp").read_text() == "not gvtool's"


class TestExportLock:
    def test_a_second_exporter_of_a_bundle_is_refused(self, tiny_run, tmp_path):
        from gvtool.export.bundle import export_bundle

        with folder_lock(tmp_path / "b", "gvtool export"):
            with pytest.raises(BadInputError, match="b is in use by gvtool export"):
                export_bundle(tiny_run("gan"), tmp_path / "b", precisions=("fp32",))
        assert not (tmp_path / "b").exists()

    def test_a_killed_exports_temp_folder_is_removed_and_never_sampled(self, tiny_run, tiny_bundle, tmp_path):
        from gvtool.export.bundle import export_bundle

        half = tmp_path / ".b.k1ll.tmp"
        half.mkdir()
        (half / MANIFEST_FILE).write_text((tiny_bundle("gan")[0] / MANIFEST_FILE).read_text())
        assert newest_holding(tmp_path, MANIFEST_FILE) is None
        lines = []
        export_bundle(tiny_run("gan"), tmp_path / "b", precisions=("fp32",), log=lines.append)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]
        assert "removed .b.k1ll.tmp, left by an export that was stopped" in lines

    def test_a_bundle_moved_aside_by_a_killed_swap_is_put_back_then_replaced(self, tiny_run, tmp_path):
        from gvtool.export.bundle import export_bundle

        export_bundle(tiny_run("gan"), tmp_path / "b", precisions=("fp32", "fp16"))
        aside = tmp_path / ".b.k1ll.old"
        aside.mkdir()
        os.replace(tmp_path / "b", aside / "bundle")  # killed between the swap's two renames: no bundle at b
        lines = []
        export_bundle(tiny_run("gan"), tmp_path / "b", precisions=("fp32",), log=lines.append)
        assert any(line.startswith("recovered ") and ".b.k1ll.old" in line for line in lines)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]
        assert is_bundle(tmp_path / "b") and set(read_manifest(tmp_path / "b").graphs) == {"decoder.fp32"}

    def test_a_bundle_of_another_run_moved_aside_is_put_back_and_kept(self, tiny_run, tmp_path):
        from gvtool.export.bundle import export_bundle

        export_bundle(tiny_run("gan"), tmp_path / "b", precisions=("fp32",))
        aside = tmp_path / ".b.k1ll.old"
        aside.mkdir()
        os.replace(tmp_path / "b", aside / "bundle")
        with pytest.raises(BadInputError, match="holds another bundle"):
            export_bundle(tiny_run("ring8"), tmp_path / "b", precisions=("fp32",))
        assert is_bundle(tmp_path / "b")  # the other run's bundle is back where it was, untouched
