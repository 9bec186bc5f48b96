"""`sample --out X.npy` streams large requests to disk: front to back, checked for space first, one clear line on
a full disk, and no temporary file left by a failure, Ctrl-C or SIGTERM."""

from __future__ import annotations

import errno
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

import gvtool.fileio as fileio
import gvtool.runtime.outputs as outputs
from cli_helpers import error_line
from export_fixtures import tiny_bundle, tiny_run  # noqa: F401
from gvtool.cli import main
from gvtool.errors import BadInputError

ITEM = (4, 3)


def chunks(sizes, fill=lambda i: i):
    for i, size in enumerate(sizes):
        yield np.full((size, *ITEM), fill(i), dtype=np.float32)


class TestStreamNpy:
    def test_writes_the_chunks_in_order_and_leaves_only_the_file(self, tmp_path):
        outputs.stream_npy(chunks([3, 5, 2]), 10, ITEM, "float32", tmp_path / "x.npy")
        got = np.load(tmp_path / "x.npy")
        assert got.shape == (10, *ITEM) and got.dtype == np.float32
        assert got[:, 0, 0].tolist() == [0, 0, 0, 1, 1, 1, 1, 1, 2, 2]
        assert [p.name for p in tmp_path.iterdir()] == ["x.npy"]

    def test_too_little_space_is_refused_before_any_work(self, tmp_path, monkeypatch):
        monkeypatch.setattr(outputs.shutil, "disk_usage", lambda p: type("U", (), {"free": 1000})())
        pulled = []
        with pytest.raises(BadInputError, match=r"--out .*x\.npy: 1,000 items need 52\.1 KB, and its filesystem has "
                                                r"1\.0 KB free"):
            outputs.stream_npy((pulled.append(1) or c for c in chunks([1000])), 1000, ITEM, "float32", tmp_path / "x.npy")
        assert pulled == [] and list(tmp_path.iterdir()) == []

    def test_a_full_disk_mid_write_is_one_os_error_naming_out_and_no_leftover(self, tmp_path, monkeypatch):
        real_fdopen = fileio.os.fdopen

        class FillsUp:
            def __init__(self, f):
                self.f, self.writes = f, 0

            def write(self, data):
                self.writes += 1
                if self.writes > 2:  # the header, one chunk, then the disk is full
                    raise OSError(errno.ENOSPC, "No space left on device")
                return self.f.write(data)

            def __getattr__(self, name):
                return getattr(self.f, name)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.f.close()

        monkeypatch.setattr(fileio.os, "fdopen", lambda fd, mode, **kw: FillsUp(real_fdopen(fd, mode, **kw)))
        with pytest.raises(OSError) as caught:
            outputs.stream_npy(chunks([2, 2, 2]), 6, ITEM, "float32", tmp_path / "x.npy")
        assert (caught.value.errno, caught.value.filename) == (errno.ENOSPC, str(tmp_path / "x.npy"))
        assert list(tmp_path.iterdir()) == []

    @pytest.mark.parametrize("sizes, n", [([2, 2], 5), ([3, 3], 5)], ids=["too-few", "too-many"])
    def test_a_stream_of_the_wrong_length_leaves_nothing(self, tmp_path, sizes, n):
        with pytest.raises(ValueError, match="stream_npy got"):
            outputs.stream_npy(chunks(sizes), n, ITEM, "float32", tmp_path / "x.npy")
        assert list(tmp_path.iterdir()) == []

    def test_an_interrupt_leaves_no_temporary_file(self, tmp_path):
        def interrupted():
            yield np.zeros((2, *ITEM), np.float32)
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            outputs.stream_npy(interrupted(), 4, ITEM, "float32", tmp_path / "x.npy")
        assert list(tmp_path.iterdir()) == []


SLOW_STREAM = """
import sys, time
import numpy as np
from pathlib import Path
from gvtool.runtime.outputs import stream_npy

def slow():
    while True:
        yield np.zeros((1, 4), np.float32)
        time.sleep(0.01)

try:
    stream_npy(slow(), 10**9, (4,), "float32", Path(sys.argv[1]))
except KeyboardInterrupt:
    sys.exit(130)
"""


class TestSignals:
    def test_sigterm_removes_the_temporary_file_as_ctrl_c_does(self, tmp_path):
        writer = subprocess.Popen([sys.executable, "-c", SLOW_STREAM, str(tmp_path / "x.npy")])
        deadline = time.time() + 60
        while not list(tmp_path.glob(".x.npy.*.tmp")) and time.time() < deadline:
            time.sleep(0.02)
        assert list(tmp_path.glob(".x.npy.*.tmp")), "the writer never started"
        writer.send_signal(signal.SIGTERM)
        assert writer.wait(timeout=60) == 130
        assert list(tmp_path.iterdir()) == []


class TestSampleCommand:
    def test_a_request_larger_than_the_disk_is_one_line(self, tiny_bundle, tmp_path):
        folder = tiny_bundle("vaegan")[0]
        result = CliRunner().invoke(main, ["sample", str(folder), "--n", str(10**12), "--out", str(tmp_path / "s.npy"),
                                           "--backend", "onnxruntime", "--device", "cpu"])
        line = error_line(result)
        assert "1,000,000,000,000 items need " in line and " free" in line
        assert list(tmp_path.iterdir()) == []
