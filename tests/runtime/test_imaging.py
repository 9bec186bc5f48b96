"""gvtool.imaging: grids, PNG/GIF writing, image loading, input checks, atomic writes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gvtool import fileio, imaging
from gvtool.errors import BadInputError
from gvtool.imaging import load_image, make_grid, save_gif, save_grid, save_png


def _batch(n: int, h: int = 4, w: int = 4, c: int | None = 1) -> np.ndarray:
    """uint8 (n, h, w, c), or (n, h, w) when c is None.

    Image i is all i + 1, leaving 0 for padding.
    """
    batch = np.broadcast_to(np.arange(1, n + 1, dtype=np.uint8)[:, None, None], (n, h, w))
    return batch.copy() if c is None else np.repeat(batch[..., None], c, axis=-1)


class TestMakeGridShape:
    def test_five_4x4_images_padding_2_in_3_columns(self):
        grid = make_grid(_batch(5), ncols=3, padding=2)
        # 2 rows, 3 cols: (2*(4+2)+2, 3*(4+2)+2, 1)
        assert grid.shape == (14, 20, 1)
        assert grid.dtype == np.uint8

    def test_default_columns_are_ceil_sqrt_n(self):
        grid = make_grid(_batch(5, h=2, w=3), padding=1)  # ceil(sqrt(5)) = 3 cols, 2 rows
        assert grid.shape == (2 * 3 + 1, 3 * 4 + 1, 1)

    def test_no_padding(self):
        assert make_grid(_batch(4), ncols=2, padding=0).shape == (8, 8, 1)

    def test_rgb_keeps_three_channels(self):
        assert make_grid(_batch(2, c=3), ncols=2, padding=1).shape == (6, 11, 3)

    def test_three_dim_input_is_one_channel(self):
        assert make_grid(_batch(2, c=None), ncols=2, padding=0).shape == (4, 8, 1)

    def test_more_columns_than_images_is_clamped(self):
        assert make_grid(_batch(2), ncols=10, padding=0).shape == (4, 8, 1)


class TestMakeGridContent:
    def test_each_image_lands_in_its_cell(self):
        n, h, w, p, cols = 5, 4, 4, 2, 3
        grid = make_grid(_batch(n, h, w), ncols=cols, padding=p)
        for i in range(n):
            top, left = p + (i // cols) * (h + p), p + (i % cols) * (w + p)
            assert (grid[top : top + h, left : left + w] == i + 1).all()

    def test_empty_cells_and_padding_hold_pad_value(self):
        grid = make_grid(_batch(5), ncols=3, padding=2, pad_value=200)
        assert (grid[8:12, 14:18] == 200).all()  # cell 5 (row 1, col 2) is empty
        assert (grid[:2] == 200).all() and (grid[:, :2] == 200).all()
        assert np.count_nonzero(grid != 200) == 5 * 16


class TestMakeGridBadInput:
    @pytest.mark.parametrize(
        "images, match",
        [
            (np.zeros((2, 4, 4, 1), np.float32), "expected uint8"),
            (np.zeros((4, 4), np.uint8), "expected"),
            (np.zeros((1, 2, 4, 4, 1), np.uint8), "expected"),
            (np.zeros((2, 4, 4, 2), np.uint8), "expected 1 or 3"),
            (np.zeros((0, 4, 4, 1), np.uint8), "empty"),
            ([[1, 2]], "numpy array"),
        ],
        ids=["float", "ndim2", "ndim5", "two-channels", "n0", "list"],
    )
    def test_bad_images_raise(self, images, match):
        with pytest.raises(BadInputError, match=match):
            make_grid(images)

    @pytest.mark.parametrize(
        "kwargs", [{"ncols": 0}, {"ncols": 1.5}, {"padding": -1}, {"pad_value": 256}]
    )
    def test_bad_options_raise(self, kwargs):
        with pytest.raises(BadInputError):
            make_grid(_batch(2), **kwargs)


class TestSavePng:
    @pytest.mark.parametrize(
        "shape, mode", [((3, 5), "L"), ((3, 5, 1), "L"), ((3, 5, 3), "RGB")]
    )
    def test_mode_and_pixels_round_trip(self, tmp_path, shape, mode):
        image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
        save_png(image, tmp_path / "a.png")
        with Image.open(tmp_path / "a.png") as img:
            assert img.mode == mode
            assert img.size == (5, 3)
            read = np.array(img)
            np.testing.assert_array_equal(read, image.reshape(read.shape))

    @pytest.mark.parametrize("c", [1, 3])
    def test_strided_view_is_written_as_seen(self, tmp_path, c):
        base = np.random.default_rng(1).integers(0, 256, (9, 14, c), dtype=np.uint8)
        view = base[::2, ::-3]  # neither C-contiguous nor positively strided
        save_png(view, tmp_path / "v.png")
        with Image.open(tmp_path / "v.png") as img:
            np.testing.assert_array_equal(np.array(img).reshape(view.shape), view)

    def test_save_grid_writes_the_grid(self, tmp_path):
        save_grid(_batch(5, c=3), tmp_path / "g.png", ncols=3)
        with Image.open(tmp_path / "g.png") as img:
            assert img.mode == "RGB"
            np.testing.assert_array_equal(np.array(img), make_grid(_batch(5, c=3), ncols=3))

    @pytest.mark.parametrize("name", ["a.jpg", "a", "a.gif"])
    def test_wrong_suffix_raises(self, tmp_path, name):
        with pytest.raises(BadInputError, match=r"\.png"):
            save_png(np.zeros((2, 2), np.uint8), tmp_path / name)
        with pytest.raises(BadInputError, match=r"\.png"):
            save_grid(_batch(2), tmp_path / name)

    @pytest.mark.parametrize(
        "image, match",
        [
            (np.zeros((2, 2), np.int64), "expected uint8"),
            (np.zeros(4, np.uint8), "expected"),
            (np.zeros((2, 2, 4), np.uint8), "expected 1 or 3"),
        ],
        ids=["int64", "ndim1", "four-channels"],
    )
    def test_bad_image_raises(self, tmp_path, image, match):
        with pytest.raises(BadInputError, match=match):
            save_png(image, tmp_path / "a.png")
        assert not (tmp_path / "a.png").exists()


class TestSaveGif:
    @pytest.mark.parametrize("c", [None, 1, 3], ids=["THW", "C1", "C3"])
    def test_has_t_frames(self, tmp_path, c):
        save_gif(_batch(4, h=6, w=5, c=c) * 50, tmp_path / "a.gif")  # 4 distinct frames
        with Image.open(tmp_path / "a.gif") as img:
            assert img.n_frames == 4
            assert img.size == (5, 6)

    def test_duration_and_loop_are_stored(self, tmp_path):
        save_gif(_batch(3) * 60, tmp_path / "a.gif", duration_ms=70, loop=2)
        with Image.open(tmp_path / "a.gif") as img:
            assert img.info["duration"] == 70
            assert img.info["loop"] == 2

    def test_wrong_suffix_raises(self, tmp_path):
        with pytest.raises(BadInputError, match=r"\.gif"):
            save_gif(_batch(2), tmp_path / "a.png")

    @pytest.mark.parametrize(
        "frames, kwargs",
        [
            (np.zeros((0, 4, 4), np.uint8), {}),
            (np.zeros((2, 4, 4), np.float64), {}),
            (np.zeros((2, 4, 4, 2), np.uint8), {}),
            (np.zeros((2, 4, 4), np.uint8), {"duration_ms": 0}),
            (np.zeros((2, 4, 4), np.uint8), {"loop": -1}),
        ],
        ids=["t0", "float", "two-channels", "duration0", "loop-negative"],
    )
    def test_bad_input_raises(self, tmp_path, frames, kwargs):
        with pytest.raises(BadInputError):
            save_gif(frames, tmp_path / "a.gif", **kwargs)


class TestLoadImage:
    def _write(self, path, array):
        Image.fromarray(array).save(path)
        return path

    def test_square_of_right_size_is_unchanged(self, tmp_path):
        image = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
        out = load_image(self._write(tmp_path / "a.png", image), channels=3, size=8)
        np.testing.assert_array_equal(out, image)

    def test_centre_crop_keeps_the_middle(self, tmp_path):
        image = np.zeros((4, 8), np.uint8)
        image[:, 2:6] = 255  # only the centred 4x4 square is white
        out = load_image(self._write(tmp_path / "a.png", image), channels=1, size=4)
        assert out.shape == (4, 4, 1) and (out == 255).all()

    def test_shrink_averages_blocks(self, tmp_path):
        image = np.zeros((4, 4), np.uint8)
        image[:2, :2] = 200  # top-left 2x2 block -> one output pixel
        out = load_image(self._write(tmp_path / "a.png", image), channels=1, size=2)
        np.testing.assert_array_equal(out[..., 0], [[200, 0], [0, 0]])

    def test_enlarge_gives_requested_size(self, tmp_path):
        image = np.full((3, 5, 3), 77, np.uint8)
        out = load_image(self._write(tmp_path / "a.png", image), channels=3, size=9)
        assert out.shape == (9, 9, 3) and out.dtype == np.uint8
        assert (out == 77).all()  # a flat image stays flat under bicubic

    def test_rgb_to_grayscale(self, tmp_path):
        out = load_image(self._write(tmp_path / "a.png", np.full((2, 2, 3), 255, np.uint8)), 1, 2)
        assert out.shape == (2, 2, 1) and (out == 255).all()

    def test_grayscale_to_rgb(self, tmp_path):
        out = load_image(self._write(tmp_path / "a.png", np.full((2, 2), 9, np.uint8)), 3, 2)
        assert out.shape == (2, 2, 3) and (out == 9).all()

    def test_rgba_jpeg_and_palette_files_load(self, tmp_path):
        Image.new("RGBA", (6, 4), (10, 20, 30, 128)).save(tmp_path / "a.png")
        Image.new("RGB", (6, 4), (10, 20, 30)).save(tmp_path / "b.jpg")
        Image.new("P", (6, 4)).save(tmp_path / "c.gif")
        for name in ("a.png", "b.jpg", "c.gif"):
            assert load_image(tmp_path / name, channels=3, size=4).shape == (4, 4, 3)

    def test_unreadable_file_raises_naming_it(self, tmp_path):
        path = tmp_path / "broken.png"
        path.write_bytes(b"not an image")
        with pytest.raises(BadInputError, match="broken.png"):
            load_image(path, channels=1, size=4)

    def test_missing_file_raises_naming_it(self, tmp_path):
        with pytest.raises(BadInputError, match="nope.png"):
            load_image(tmp_path / "nope.png", channels=1, size=4)

    @pytest.mark.parametrize("channels, size", [(2, 4), (4, 4), (1, 0), (3, 2.5)])
    def test_bad_channels_or_size_raise(self, tmp_path, channels, size):
        path = self._write(tmp_path / "a.png", np.zeros((4, 4), np.uint8))
        with pytest.raises(BadInputError):
            load_image(path, channels=channels, size=size)


class TestAtomicWrites:
    def _leftovers(self, folder):
        return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]

    def test_write_leaves_no_temp_file(self, tmp_path):
        save_png(np.zeros((2, 2), np.uint8), tmp_path / "a.png")
        save_gif(_batch(2), tmp_path / "a.gif")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["a.gif", "a.png"]

    @pytest.mark.parametrize("write", ["png", "grid", "gif"])
    def test_failed_render_keeps_existing_file(self, tmp_path, monkeypatch, write):
        path = tmp_path / ("a.gif" if write == "gif" else "a.png")
        path.write_bytes(b"old")

        def broken_save(self, fp, *args, **kwargs):
            fp.write(b"half")
            raise OSError("disk on fire")

        def broken_compress(*args, **kwargs):
            raise OSError("disk on fire")

        monkeypatch.setattr(Image.Image, "save", broken_save)  # GIFs are rendered by Pillow
        monkeypatch.setattr(imaging.zlib, "compress", broken_compress)  # PNGs by gvtool.imaging
        with pytest.raises(OSError, match="disk on fire"):
            {"png": lambda: save_png(np.zeros((2, 2), np.uint8), path),
             "grid": lambda: save_grid(_batch(2), path),
             "gif": lambda: save_gif(_batch(2), path)}[write]()
        assert path.read_bytes() == b"old"
        assert self._leftovers(tmp_path) == []

    def test_failed_rename_keeps_existing_file(self, tmp_path, monkeypatch):
        path = tmp_path / "a.png"
        path.write_bytes(b"old")

        def broken_replace(src, dst):
            raise OSError("rename failed")

        monkeypatch.setattr(fileio.os, "replace", broken_replace)
        with pytest.raises(OSError, match="rename failed"):
            save_png(np.zeros((2, 2), np.uint8), path)
        assert path.read_bytes() == b"old"
        assert self._leftovers(tmp_path) == []


class TestImports:
    @staticmethod
    def _run(code: str) -> subprocess.CompletedProcess:
        repo = Path(__file__).resolve().parents[2]
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=repo)

    def test_imports_neither_torch_nor_matplotlib(self):
        result = self._run(
            "import sys, gvtool.imaging; "
            "bad = [m for m in ('torch', 'matplotlib') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)"
        )
        assert result.returncode == 0, result.stdout + result.stderr

    def test_writing_a_png_grid_does_not_import_pillow(self, tmp_path):
        result = self._run(
            "import sys, numpy as np, gvtool.imaging as im; "
            f"im.save_grid(np.zeros((4, 3, 3, 1), np.uint8), {str(tmp_path / 'g.png')!r}); "
            "sys.exit(1 if 'PIL' in sys.modules else 0)"
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert (tmp_path / "g.png").exists()


class TestSixteenBitGrey:
    def test_16_bit_grey_png_is_scaled_not_clipped(self, tmp_path):
        path = tmp_path / "deep.png"
        Image.fromarray(np.full((8, 8), 100 * 257, dtype=np.uint16)).save(path)
        assert Image.open(path).mode.startswith("I")  # Pillow keeps the 16-bit depth
        assert (load_image(path, channels=1, size=8) == 100).all()
