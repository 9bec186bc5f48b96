"""Files in and out of the runtime commands: what gvtool writes takes the modes the user's umask gives any file
(temp files are made 0600, folders 0700); a command that replaces an output says so; a wrong input or an output
that cannot be written is named as the user named it; images too large to decode are refused from their header,
and the rest are fitted one at a time."""

from __future__ import annotations

import os
import stat

import pytest
from click.testing import CliRunner

from export_fixtures import tiny_bundle, tiny_run  # noqa: F401
from gvtool.cli import main
from gvtool.export.bundle import export_bundle
from cli_helpers import error_line
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


class TestMessages:
    @pytest.fixture
    def decode(self, tiny_bundle, tmp_path):
        def run(latents):
            return CliRunner().invoke(main, ["decode", str(tiny_bundle("vaegan")[0]), str(latents), "--out",
                                             str(tmp_path / "d.png"), "--device", "cpu"])
        return run

    def test_decoding_an_image_says_it_is_an_image(self, decode, tmp_path):
        import numpy as np
        from PIL import Image

        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "image.png")
        line = error_line(decode(tmp_path / "image.png"))
        assert "image.png is a PNG image; latents must be one .npy array" in line
        assert "pickle" not in line

    def test_decoding_an_npz_says_it_is_an_archive(self, decode, tmp_path):
        import numpy as np

        np.savez(tmp_path / "z.npz", z=np.zeros((2, 4), np.float32))
        assert "z.npz is a .npz archive of several arrays" in error_line(decode(tmp_path / "z.npz"))

    def test_an_npy_of_python_objects_is_refused_as_such(self, decode, tmp_path):
        import numpy as np

        np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
        assert "it holds Python objects, which gvtool never loads" in error_line(decode(tmp_path / "o.npy"))

    @pytest.mark.parametrize("out", ["s.png", "s.npy"])
    def test_an_out_that_is_a_folder_is_named(self, tiny_bundle, tmp_path, out):
        (tmp_path / out).mkdir()
        result = CliRunner().invoke(main, ["sample", str(tiny_bundle("gan")[0]), "--n", "2", "--out",
                                           str(tmp_path / out), "--device", "cpu"])
        assert error_line(result) == f"error: Is a directory (an output file was expected): {tmp_path / out}"

    @pytest.mark.parametrize("out", ["s.png", "s.npy"])
    def test_a_folder_that_cannot_be_written_names_out_not_the_temporary_file(self, tiny_bundle, tmp_path,
                                                                               monkeypatch, out):
        import tempfile

        def refused(prefix, suffix, dir):
            raise PermissionError(13, "Permission denied", os.path.join(dir, prefix + "x1y2" + suffix))

        monkeypatch.setattr(tempfile, "mkstemp", refused)
        result = CliRunner().invoke(main, ["sample", str(tiny_bundle("gan")[0]), "--n", "2", "--out",
                                           str(tmp_path / out), "--device", "cpu"])
        assert error_line(result) == f"error: Permission denied: {tmp_path / out}"


def _png_declaring(path, width: int, height: int) -> None:
    """A real 1x1 PNG whose header then claims width x height: what a decompression bomb's header looks like."""
    import struct
    import zlib

    from PIL import Image

    Image.new("L", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4:ihdr + 12] = struct.pack(">II", width, height)
    data[ihdr + 17:ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr:ihdr + 17])))
    path.write_bytes(bytes(data))


class TestLargeImages:
    def test_an_image_whose_header_is_too_large_is_refused_before_decoding(self, tiny_bundle, tmp_path):
        _png_declaring(tmp_path / "bomb.png", 13000, 13000)
        result = CliRunner().invoke(main, ["encode", str(tiny_bundle("vaegan")[0]), str(tmp_path / "bomb.png"),
                                           "--out", str(tmp_path / "z.npy"), "--device", "cpu"])
        assert "a 13000 x 13000 image (169 megapixels) is above the 64-megapixel bound" in error_line(result)

    def test_a_jpeg_is_decoded_at_a_reduced_scale_when_the_model_is_small(self, tmp_path):
        import numpy as np
        from PIL import Image

        from gvtool.imaging import open_image

        Image.fromarray(np.random.default_rng(0).integers(0, 255, (2000, 1600, 3), dtype=np.uint8)).save(tmp_path / "p.jpg")
        assert open_image(tmp_path / "p.jpg").size == (1600, 2000)
        assert open_image(tmp_path / "p.jpg", draft_size=16).size == (200, 250)  # 1/8 scale, still >= 16 a side

    def test_images_are_fitted_one_by_one_and_the_conversion_is_said_once(self, tiny_bundle, tmp_path):
        import numpy as np
        from PIL import Image

        for i in range(3):
            Image.fromarray(np.full((300, 200, 3), 40 * i, np.uint8)).save(tmp_path / f"{i}.png")
        result = CliRunner().invoke(main, ["encode", str(tiny_bundle("vaegan")[0]), *(str(tmp_path / f"{i}.png")
                                           for i in range(3)), "--out", str(tmp_path / "z.npy"), "--device", "cpu"])
        assert result.exit_code == 0, result.output
        assert result.stderr.count("3 image(s) converted to the model's (16, 16, 1)") == 1
        assert np.load(tmp_path / "z.npy").shape[0] == 3
