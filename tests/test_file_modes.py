"""What gvtool writes takes the modes the user's umask gives any file (temp files are made 0600, folders 0700),
and a command that replaces an existing output says so."""

from __future__ import annotations

import os
import stat

import pytest
from click.testing import CliRunner

from export_fixtures import tiny_bundle, tiny_run  # noqa: F401
from gvtool.cli import main
from gvtool.export.bundle import export_bundle
from gvtool.fileio import atomic_write_text

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(params=[0o022, 0o077, 0o002], ids=["umask-022", "umask-077", "umask-002"])
def umask(request):
    before = os.umask(request.param)
    yield request.param
    os.umask(before)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


class TestModes:
    def test_an_atomic_write_has_the_umask_mode(self, tmp_path, umask):
        atomic_write_text(tmp_path / "a.txt", "x")
        assert mode(tmp_path / "a.txt") == 0o666 & ~umask

    def test_a_bundle_and_its_files_have_the_umask_modes(self, tiny_run, tmp_path, umask):
        out, _ = export_bundle(tiny_run("gan"), tmp_path / "b", precisions=("fp32",))
        assert mode(out) == 0o777 & ~umask
        assert {mode(p) for p in out.iterdir()} == {0o666 & ~umask}

    def test_a_streamed_npy_has_the_umask_mode(self, tiny_bundle, tmp_path, umask):
        result = CliRunner().invoke(main, ["sample", str(tiny_bundle("gan")[0]), "--n", "3", "--out",
                                           str(tmp_path / "s.npy"), "--device", "cpu"])
        assert result.exit_code == 0, result.output
        assert mode(tmp_path / "s.npy") == 0o666 & ~umask


class TestReplacing:
    def test_replacing_an_output_is_said(self, tiny_bundle, tmp_path):
        args = ["sample", str(tiny_bundle("gan")[0]), "--n", "4", "--out", str(tmp_path / "s.png"), "--device", "cpu"]
        first, second = CliRunner().invoke(main, args), CliRunner().invoke(main, args)
        assert first.exit_code == second.exit_code == 0
        assert "replaced" not in first.stderr
        assert "(replaced the file that was there)" in second.stderr
