"""`gvtool sample / encode / decode / reconstruct / interpolate` through click's test runner, on the tiny
bundles of export_fixtures.py, plus `gvtool sample` in a subprocess with torch blocked.

Every command gets --device cpu (onnxruntime's CPU provider) except the one test of the default
`auto`, which tries TensorRT through gvtool.runtime.trt_runner first and skips where that module is
not there. Outputs are checked against the library's own answer for the same arguments.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import gvtool.runtime.model as model_module
import gvtool.runtime.outputs as outputs_module
from cli_helpers import error_line, said
from export_fixtures import leftovers, tiny_bundle, tiny_run  # noqa: F401
from gvtool.cli import main
from gvtool.runtime.model import load
from runtime_helpers import (TENSORRT_INSTALLED, copy_bundle, cuda_in_onnxruntime,
                             edit_manifest, flip_byte, grid_cell, grid_size, write_png)

SIDE = 16       # conftest.IMAGE_SIDE
LATENT = 4      # export_fixtures' TINY_MODEL latent size
CLASSES = 4     # conftest.NUM_CLASSES
CPU = ("--device", "cpu")
REPO = Path(__file__).resolve().parents[2]


def invoke(*args):
    # catch_exceptions=False: anything but a SystemExit surfaces as the test's own traceback
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def walk(bundle_dir, *args):
    """`gvtool interpolate BUNDLE --from 1 --to 2 ARGS --device cpu`."""
    return invoke("interpolate", bundle_dir, "--from", 1, "--to", 2, *args, *CPU)


def ok(result):
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def bundle(tiny_bundle):
    return lambda name: tiny_bundle(name)[0]


@pytest.fixture(scope="module")
def model(bundle):
    """model(name) -> the library's model for the bundle, to compare the commands' files with."""
    cache = {}

    def get(name: str):
        if name not in cache:
            cache[name] = load(bundle(name), backend="onnxruntime", device="cpu")
        return cache[name]

    return get


@pytest.fixture(scope="module")
def pngs(model, tmp_path_factory):
    """Two 16x16 grey PNGs of the vaegan's own samples: (paths, their pixels (2, H, W, 1))."""
    folder = tmp_path_factory.mktemp("pngs")
    images = model("vaegan").sample(2, seed=21)
    return [write_png(folder / f"{name}.png", im) for name, im in zip("ab", images)], images


def read_png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


class TestSampleCommand:
    def test_png_is_a_grid_of_n_items(self, bundle, tmp_path):
        out = tmp_path / "x.png"
        ok(invoke("sample", bundle("vaegan"), "--n", 16, "--out", out, *CPU))
        with Image.open(out) as png:
            assert (png.format, png.mode, png.size) == ("PNG", "L", grid_size(16, None, SIDE))

    def test_png_cells_are_the_seeded_samples(self, bundle, model, tmp_path):
        out = tmp_path / "x.png"
        ok(invoke("sample", bundle("vaegan"), "--n", 5, "--seed", 4, "--out", out, *CPU))
        expected = model("vaegan").sample(5, seed=4)
        grid = read_png(out)
        assert grid.shape[::-1] == grid_size(5, None, SIDE)
        for i in range(5):
            np.testing.assert_array_equal(grid_cell(grid, i, ncols=3, side=SIDE), expected[i, :, :, 0])

    def test_conditional_png_has_one_column_per_class(self, bundle, tmp_path):
        out = tmp_path / "x.png"
        ok(invoke("sample", bundle("conditional"), "--n", 10, "--out", out, *CPU))
        with Image.open(out) as png:
            assert png.size == grid_size(10, CLASSES, SIDE)

    def test_prints_the_backend_choice_and_what_it_wrote(self, bundle, tmp_path):
        out = tmp_path / "x.png"
        result = ok(invoke("sample", bundle("vaegan"), "--n", 2, "--out", out, *CPU))
        assert "onnxruntime-cpu on cpu (fp32): --device cpu" in said(result)
        assert f"wrote 2 samples -> {out}" in said(result)

    def test_npy_holds_n_uint8_images_equal_to_the_library_sample(self, bundle, model, tmp_path):
        out = tmp_path / "x.npy"
        ok(invoke("sample", bundle("vaegan"), "--n", 16, "--seed", 3, "--out", out, *CPU))
        items = np.load(out)
        assert (items.dtype, items.shape) == (np.uint8, (16, SIDE, SIDE, 1))
        np.testing.assert_array_equal(items, model("vaegan").sample(16, seed=3))

    def test_vector_npy_holds_float32_n_d(self, bundle, model, tmp_path):
        out = tmp_path / "v.npy"
        ok(invoke("sample", bundle("ring8"), "--n", 7, "--seed", 1, "--out", out, *CPU))
        np.testing.assert_array_equal(np.load(out), model("ring8").sample(7, seed=1))

    def test_label_and_temperature_reach_the_model(self, bundle, model, tmp_path):
        out = tmp_path / "x.npy"
        ok(invoke("sample", bundle("conditional"), "--n", 5, "--seed", 2, "--label", 3, "--temperature", 0.5,
                  "--out", out, *CPU))
        np.testing.assert_array_equal(np.load(out), model("conditional").sample(5, seed=2, labels=3, temperature=0.5))

    @pytest.fixture
    def big(self, bundle, tmp_path, monkeypatch):
        """`sample --n 3000 --seed 9 --out big.npy` with small runner chunks: (out folder, chunk sizes streamed)."""
        monkeypatch.setattr(model_module, "DEFAULT_CHUNK", 64)
        streamed, real = [], outputs_module.stream_npy
        monkeypatch.setattr(outputs_module, "stream_npy", lambda chunks, *a, **k: real(
            (streamed.append(len(c)) or c for c in chunks), *a, **k))
        folder = tmp_path / "big"
        ok(invoke("sample", bundle("vaegan"), "--n", 3000, "--seed", 9, "--out", folder / "big.npy", *CPU))
        return folder, streamed

    def test_large_npy_has_the_right_shape_and_items(self, big, model):
        folder, _ = big
        items = np.load(folder / "big.npy")
        assert (items.dtype, items.shape) == (np.uint8, (3000, SIDE, SIDE, 1))
        np.testing.assert_array_equal(items, model("vaegan").sample(3000, seed=9))

    def test_large_npy_is_streamed_in_chunks(self, big):
        _, streamed = big
        assert len(streamed) > 1 and sum(streamed) == 3000 and max(streamed) < 3000

    def test_large_npy_leaves_no_temporary_file(self, big):
        folder, _ = big
        assert sorted(p.name for p in folder.iterdir()) == ["big.npy"]
        assert leftovers(folder) == []

    def test_without_bundle_samples_the_newest_under_bundles(self, bundle, model, tmp_path, monkeypatch):
        older = copy_bundle(bundle("gan"), tmp_path / "bundles" / "older")
        newer = copy_bundle(bundle("vaegan"), tmp_path / "bundles" / "newer")
        (tmp_path / "bundles" / "unfinished").mkdir()  # no manifest: not a bundle
        os.utime(older / "manifest.json", (1_000_000, 1_000_000))
        os.utime(newer / "manifest.json", (2_000_000, 2_000_000))
        monkeypatch.chdir(tmp_path)
        ok(invoke("sample", "--n", 4, "--seed", 0, "--out", "x.npy", *CPU))
        np.testing.assert_array_equal(np.load(tmp_path / "x.npy"), model("vaegan").sample(4, seed=0))

    def test_without_bundle_or_bundles_folder_says_to_export_first(self, tmp_path, monkeypatch):
        monkeypatch.chdir(tmp_path)
        line = error_line(invoke("sample", "--n", 4, *CPU))
        assert "no bundle under bundles/; export one first" in line

    @pytest.mark.skipif(TENSORRT_INSTALLED, reason="tensorrt is installed here: auto may pick it")
    def test_default_device_auto_falls_back_to_the_cpu_saying_why(self, bundle, tmp_path):
        if cuda_in_onnxruntime():
            pytest.skip("this onnxruntime has CUDA: auto picks it")
        result = ok(invoke("sample", bundle("vaegan"), "--n", 4, "--out", tmp_path / "x.png"))
        assert "onnxruntime-cpu on cpu (fp32): no usable TensorRT engine (" in said(result)
        assert (tmp_path / "x.png").is_file()


class TestEncodeCommand:
    def test_two_images_give_latents_of_shape_2_k(self, bundle, model, pngs, tmp_path):
        paths, images = pngs
        out = tmp_path / "z.npy"
        result = ok(invoke("encode", bundle("vaegan"), *paths, "--out", out, *CPU))
        z = np.load(out)
        assert (z.dtype, z.shape) == (np.float32, (2, LATENT))
        np.testing.assert_array_equal(z, model("vaegan").encode(images))
        assert f"wrote latents (2, {LATENT}) -> {out}" in said(result)

    def test_logvar_is_written_beside_the_means(self, bundle, model, pngs, tmp_path):
        paths, images = pngs
        ok(invoke("encode", bundle("vaegan"), *paths, "--out", tmp_path / "z.npy", "--logvar", *CPU))
        np.testing.assert_array_equal(np.load(tmp_path / "z-logvar.npy"),
                                      model("vaegan").encode(images, return_logvar=True)[1])

    def test_an_rgb_image_of_another_size_is_converted_with_one_warning_line(self, bundle, tmp_path):
        rgb = write_png(tmp_path / "rgb.png", np.random.default_rng(0).integers(0, 256, (24, 30, 3), dtype=np.uint8))
        result = ok(invoke("encode", bundle("vaegan"), rgb, rgb, "--out", tmp_path / "z.npy", *CPU))
        assert np.load(tmp_path / "z.npy").shape == (2, LATENT)
        assert sum(line.startswith("warning:") for line in result.stderr.splitlines()) == 1

    def test_grey_pngs_of_the_model_size_give_no_warning(self, bundle, pngs, tmp_path):
        paths, _ = pngs
        result = ok(invoke("encode", bundle("vaegan"), *paths, "--out", tmp_path / "z.npy", *CPU))
        assert "warning" not in result.stderr


class TestDecodeCommand:
    @pytest.fixture
    def latents(self, model, tmp_path):
        z = model("vaegan").sample_latents(5, seed=6)
        np.save(tmp_path / "z.npy", z)
        return tmp_path / "z.npy", z

    def test_png_is_a_grid_of_the_decoded_items(self, bundle, model, latents, tmp_path):
        path, z = latents
        ok(invoke("decode", bundle("vaegan"), path, "--out", tmp_path / "d.png", *CPU))
        grid = read_png(tmp_path / "d.png")
        assert grid.shape[::-1] == grid_size(5, None, SIDE)
        np.testing.assert_array_equal(grid_cell(grid, 4, ncols=3, side=SIDE), model("vaegan").decode(z)[4, :, :, 0])

    def test_npy_holds_the_decoded_items(self, bundle, model, latents, tmp_path):
        path, z = latents
        ok(invoke("decode", bundle("vaegan"), path, "--out", tmp_path / "d.npy", *CPU))
        items = np.load(tmp_path / "d.npy")
        assert (items.dtype, items.shape) == (np.uint8, (5, SIDE, SIDE, 1))
        np.testing.assert_array_equal(items, model("vaegan").decode(z))

    def test_label_is_the_class_of_every_item(self, bundle, model, latents, tmp_path):
        path, z = latents
        ok(invoke("decode", bundle("conditional"), path, "--label", 2, "--out", tmp_path / "d.npy", *CPU))
        np.testing.assert_array_equal(np.load(tmp_path / "d.npy"), model("conditional").decode(z, np.full(5, 2)))

    def test_one_latent_of_shape_k_decodes_with_a_label(self, bundle, tmp_path):
        np.save(tmp_path / "z1.npy", np.zeros(LATENT, np.float32))
        ok(invoke("decode", bundle("conditional"), tmp_path / "z1.npy", "--label", 1, "--out", tmp_path / "d.npy", *CPU))
        assert np.load(tmp_path / "d.npy").shape == (1, SIDE, SIDE, 1)


class TestReconstructCommand:
    def test_png_puts_each_original_beside_its_reconstruction(self, bundle, model, pngs, tmp_path):
        paths, images = pngs
        ok(invoke("reconstruct", bundle("vaegan"), *paths, "--out", tmp_path / "r.png", *CPU))
        grid = read_png(tmp_path / "r.png")
        assert grid.shape[::-1] == grid_size(4, 4, SIDE)  # 2 inputs -> 2 pairs in one row
        rebuilt = model("vaegan").reconstruct(images)
        for i in range(2):
            np.testing.assert_array_equal(grid_cell(grid, 2 * i, 4, SIDE), images[i, :, :, 0])
            np.testing.assert_array_equal(grid_cell(grid, 2 * i + 1, 4, SIDE), rebuilt[i, :, :, 0])

    def test_png_of_one_input_is_one_pair(self, bundle, pngs, tmp_path):
        paths, _ = pngs
        ok(invoke("reconstruct", bundle("vaegan"), paths[0], "--out", tmp_path / "r.png", *CPU))
        assert read_png(tmp_path / "r.png").shape[::-1] == grid_size(2, 2, SIDE)

    def test_png_of_five_inputs_has_four_pairs_a_row(self, bundle, pngs, tmp_path):
        paths, _ = pngs
        ok(invoke("reconstruct", bundle("vaegan"), *paths, *paths, paths[0], "--out", tmp_path / "r.png", *CPU))
        assert read_png(tmp_path / "r.png").shape[::-1] == grid_size(10, 8, SIDE)

    def test_npy_holds_the_reconstructions(self, bundle, model, pngs, tmp_path):
        paths, images = pngs
        ok(invoke("reconstruct", bundle("vaegan"), *paths, "--out", tmp_path / "r.npy", *CPU))
        np.testing.assert_array_equal(np.load(tmp_path / "r.npy"), model("vaegan").reconstruct(images))

    def test_a_conditional_bundle_asks_for_encode_then_decode(self, bundle, pngs, tmp_path):
        paths, _ = pngs
        line = error_line(invoke("reconstruct", bundle("conditional"), paths[0], "--out", tmp_path / "r.png", *CPU))
        assert "needs each image's label" in line


class TestInterpolateCommand:
    def test_png_is_one_row_of_steps(self, bundle, tmp_path):
        ok(walk(bundle("vaegan"), "--steps", 5, "--out", tmp_path / "s.png"))
        assert read_png(tmp_path / "s.png").shape[::-1] == grid_size(5, 5, SIDE)

    def test_npy_holds_the_steps_equal_to_the_library_path(self, bundle, model, tmp_path):
        ok(walk(bundle("vaegan"), "--steps", 5, "--out", tmp_path / "p.npy"))
        path = np.load(tmp_path / "p.npy")
        assert (path.dtype, path.shape) == (np.uint8, (5, SIDE, SIDE, 1))
        np.testing.assert_array_equal(path, model("vaegan").interpolate(1, 2, steps=5))

    def test_gif_has_one_frame_per_step(self, bundle, model, tmp_path):
        frames = model("vaegan").interpolate(1, 2, steps=5)
        distinct = 1 + sum(not np.array_equal(a, b) for a, b in zip(frames, frames[1:]))
        assert distinct == 5, "Pillow merges equal consecutive frames: pick seeds whose frames differ"
        ok(walk(bundle("vaegan"), "--steps", 5, "--out", tmp_path / "a.gif"))
        with Image.open(tmp_path / "a.gif") as gif:
            assert (gif.format, gif.n_frames, gif.size) == ("GIF", 5, (SIDE, SIDE))

    def test_lerp_method_reaches_the_model(self, bundle, model, tmp_path):
        ok(walk(bundle("vaegan"), "--steps", 4, "--method", "lerp", "--out", tmp_path / "p.npy"))
        np.testing.assert_array_equal(np.load(tmp_path / "p.npy"), model("vaegan").interpolate(1, 2, 4, "lerp"))

    def test_an_image_file_end_is_encoded(self, bundle, model, pngs, tmp_path):
        paths, images = pngs
        ok(invoke("interpolate", bundle("vaegan"), "--from", paths[0], "--to", 3, "--steps", 4,
                  "--out", tmp_path / "p.npy", *CPU))
        path, m = np.load(tmp_path / "p.npy"), model("vaegan")
        np.testing.assert_array_equal(path[0], m.decode(m.encode(images[:1]))[0])
        np.testing.assert_array_equal(path[-1], m.decode(m.sample_latents(1, seed=3))[0])

    def test_conditional_path_defaults_to_class_0(self, bundle, model, tmp_path):
        ok(walk(bundle("conditional"), "--steps", 3, "--out", tmp_path / "p.npy"))
        np.testing.assert_array_equal(np.load(tmp_path / "p.npy"), model("conditional").interpolate(1, 2, 3, label=0))


class TestCommandErrors:
    """Each exits 1 with exactly one "error:" line and no traceback (error_line checks all three)."""

    @pytest.fixture
    def bundle_copy(self, bundle, tmp_path):
        return lambda name: copy_bundle(bundle(name), tmp_path / f"copy-{name}")

    def test_a_tampered_bundle(self, bundle_copy, tmp_path):
        copy = bundle_copy("vaegan")
        flip_byte(copy / "decoder.onnx")
        line = error_line(invoke("sample", copy, "--n", 4, "--out", tmp_path / "x.png", *CPU))
        assert "does not match the manifest (sha256" in line and "re-export the bundle" in line
        assert not (tmp_path / "x.png").exists()

    def test_an_unknown_manifest_version(self, bundle_copy, tmp_path):
        copy = bundle_copy("vaegan")
        edit_manifest(copy, lambda raw: raw.update(format=2))
        line = error_line(invoke("sample", copy, "--n", 4, "--out", tmp_path / "x.png", *CPU))
        assert "manifest format 2; this gvtool reads format 1" in line

    @pytest.mark.parametrize("command", ["sample", "decode", "interpolate", "encode", "reconstruct"])
    def test_an_unsupported_out_suffix(self, bundle, tmp_path, command, pngs):
        extra = {"sample": [], "decode": [tmp_path / "z.npy"], "interpolate": ["--from", 1, "--to", 2],
                 "encode": [pngs[0][0]], "reconstruct": [pngs[0][0]]}[command]
        np.save(tmp_path / "z.npy", np.zeros((2, LATENT), np.float32))
        line = error_line(invoke(command, bundle("vaegan"), *extra, "--out", tmp_path / "x.jpg", *CPU))
        assert "cannot write .jpg" in line
        assert not (tmp_path / "x.jpg").exists()

    def test_a_vector_model_with_png_out(self, bundle, tmp_path):
        line = error_line(invoke("sample", bundle("ring8"), "--n", 4, "--out", tmp_path / "x.png", *CPU))
        assert "a vector model's items are written as .npy, not .png" in line

    def test_decode_of_latents_with_nan(self, bundle, tmp_path):
        z = np.zeros((3, LATENT), np.float32)
        z[0, 0] = np.nan
        np.save(tmp_path / "z.npy", z)
        line = error_line(invoke("decode", bundle("vaegan"), tmp_path / "z.npy", "--out", tmp_path / "d.png", *CPU))
        assert "latents hold 1 NaN or infinite values" in line

    def test_decode_of_latents_of_the_wrong_size(self, bundle, tmp_path):
        np.save(tmp_path / "z.npy", np.zeros((3, LATENT + 3), np.float32))
        line = error_line(invoke("decode", bundle("vaegan"), tmp_path / "z.npy", "--out", tmp_path / "d.png", *CPU))
        assert f"latents have shape (3, {LATENT + 3}), expected (N, {LATENT})" in line

    def test_decode_of_a_file_that_is_not_npy(self, bundle, tmp_path):
        (tmp_path / "z.npy").write_text("not an array")
        line = error_line(invoke("decode", bundle("vaegan"), tmp_path / "z.npy", "--out", tmp_path / "d.png", *CPU))
        assert "z.npy is not a .npy array; latents must be one .npy array" in line

    def test_decode_of_latents_that_are_not_numbers(self, bundle, tmp_path):
        np.save(tmp_path / "z.npy", np.array([["a", "b", "c", "d"]]))
        error_line(invoke("decode", bundle("vaegan"), tmp_path / "z.npy", "--out", tmp_path / "d.png", *CPU))

    def test_decode_with_label_of_a_0d_npy(self, bundle, tmp_path):
        np.save(tmp_path / "z.npy", np.float32(1.0))
        line = error_line(invoke("decode", bundle("conditional"), tmp_path / "z.npy", "--label", 1,
                                 "--out", tmp_path / "d.png", *CPU))
        assert "latents have shape" in line

    def test_encode_of_an_unreadable_image(self, bundle, tmp_path):
        (tmp_path / "bad.png").write_bytes(b"\x89PNG but not really")
        line = error_line(invoke("encode", bundle("vaegan"), tmp_path / "bad.png", "--out", tmp_path / "z.npy", *CPU))
        assert f"{tmp_path / 'bad.png'}: cannot read image" in line
        assert not (tmp_path / "z.npy").exists()

    def test_encode_of_a_missing_image(self, bundle, tmp_path):
        line = error_line(invoke("encode", bundle("vaegan"), tmp_path / "none.png", "--out", tmp_path / "z.npy", *CPU))
        assert "cannot read image" in line

    def test_encode_with_a_gan_bundle(self, bundle, pngs, tmp_path):
        line = error_line(invoke("encode", bundle("gan"), pngs[0][0], "--out", tmp_path / "z.npy", *CPU))
        assert "holds a gan model, which has no encoder graph: it cannot encode" in line

    @pytest.mark.parametrize("out", ["x.png", "x.npy"])
    def test_n_0(self, bundle, tmp_path, out):
        line = error_line(invoke("sample", bundle("vaegan"), "--n", 0, "--out", tmp_path / out, *CPU))
        assert "the number of items must be a positive integer, got 0" in line
        assert list(tmp_path.iterdir()) == []

    @pytest.mark.parametrize("out", ["x.png", "x.npy"])
    def test_label_99(self, bundle, tmp_path, out):
        line = error_line(invoke("sample", bundle("conditional"), "--n", 4, "--label", 99, "--out", tmp_path / out, *CPU))
        assert "label 99 is out of range: this model has classes 0 to 3" in line
        assert list(tmp_path.iterdir()) == []

    def test_label_for_an_unconditional_bundle(self, bundle, tmp_path):
        line = error_line(invoke("sample", bundle("vaegan"), "--n", 4, "--label", 1, "--out", tmp_path / "x.png", *CPU))
        assert "this model is unconditional: it takes no labels" in line

    def test_temperature_0_with_npy_out(self, bundle, tmp_path):
        line = error_line(invoke("sample", bundle("vaegan"), "--n", 4, "--temperature", 0,
                                 "--out", tmp_path / "x.npy", *CPU))
        assert "temperature must be > 0" in line

    def test_temperature_0_with_png_out(self, bundle, tmp_path):
        line = error_line(invoke("sample", bundle("vaegan"), "--n", 4, "--temperature", 0,
                                 "--out", tmp_path / "x.png", *CPU))
        assert "temperature must be > 0, got 0.0" in line

    def test_cuda_device_with_onnxruntime_backend_without_cuda(self, bundle, tmp_path):
        if cuda_in_onnxruntime():
            pytest.skip("this onnxruntime has the CUDA provider")
        line = error_line(invoke("sample", bundle("vaegan"), "--n", 4, "--out", tmp_path / "x.png",
                                 "--device", "cuda:0", "--backend", "onnxruntime"))
        assert "needs onnxruntime's CUDAExecutionProvider" in line and "gvtool[gpu]" in line

    def test_tensorrt_backend_on_the_cpu(self, bundle, tmp_path):
        line = error_line(invoke("sample", bundle("vaegan"), "--n", 4, "--out", tmp_path / "x.png",
                                 "--backend", "tensorrt", *CPU))
        assert "--backend tensorrt runs on an NVIDIA GPU" in line

    @pytest.mark.parametrize("end", ["notanumber", "1.5", "missing.png"])
    def test_interpolate_from_neither_a_seed_nor_a_file(self, bundle, tmp_path, end):
        line = error_line(invoke("interpolate", bundle("vaegan"), "--from", end, "--to", 2,
                                 "--out", tmp_path / "s.png", *CPU))
        assert f"--from/--to '{end}' is neither an integer seed nor an image file" in line

    def test_interpolate_from_an_image_with_a_gan_bundle(self, bundle, pngs, tmp_path):
        line = error_line(invoke("interpolate", bundle("gan"), "--from", pngs[0][0], "--to", 2,
                                 "--out", tmp_path / "s.png", *CPU))
        assert "the encoder graph was not loaded" in line


class TestStartWithoutTorch:
    def test_sample_with_torch_blocked_writes_the_png(self, bundle, tmp_path):
        copy_bundle(bundle("gan"), tmp_path / "bundles" / "tiny")
        env = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        code = "import sys; sys.modules['torch'] = None; from gvtool.cli import main; main()"
        result = subprocess.run([sys.executable, "-c", code, "sample", "--n", "64", "--device", "cpu", "--out", "OUT.png"],
                                cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        with Image.open(tmp_path / "OUT.png") as png:
            assert png.size == grid_size(64, None, SIDE)


class TestOperatingSystemErrors:
    def test_an_output_folder_that_cannot_exist_is_one_error_line(self, bundle, tmp_path):
        (tmp_path / "file").write_text("a file, not a folder")
        result = CliRunner().invoke(main, ["sample", str(bundle("vaegan")), "--n", "2", "--device", "cpu",
                                           "--out", str(tmp_path / "file" / "x.png")])
        assert "file" in error_line(result)
