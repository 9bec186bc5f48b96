"""gvtool.train.plots: loss curves and 2-D scatter figures, input checks, atomic writes."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from PIL import Image

from gvtool.errors import BadInputError
from gvtool.train.plots import plot_losses, plot_points


def _vae_gan_rows(steps: int = 120) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for s in range(1, steps + 1):
        rows.append({
            "type": "step", "step": s, "epoch": 1 + s // 40,
            "loss_enc": 1.2 + rng.normal(0, 0.3), "loss_dec": 0.7 + rng.normal(0, 0.3),
            "loss_dis": 1.3 + rng.normal(0, 0.3), "kl": 4.1 / s, "recon": 0.05, "feat_recon": 0.3,
            "d_real_acc": 0.8, "d_fake_acc": 0.6,
        })
        if s % 40 == 0:
            rows.append({"type": "epoch", "epoch": s // 40, "step": s, "val_recon": 0.06})
    return rows


def _gan_rows(steps: int = 60) -> list[dict]:
    return [
        {"type": "step", "step": s, "epoch": 1, "loss_gen": 2.0 / s, "loss_dis": 0.69,
         "d_real_acc": 0.5, "d_fake_acc": 0.5}
        for s in range(1, steps + 1)
    ]


def _png_size(path) -> tuple[int, int]:
    with Image.open(path) as img:
        assert img.format == "PNG"
        img.load()
        return img.size


class TestPlotLosses:
    def test_vae_gan_rows_write_a_three_panel_png(self, tmp_path):
        plot_losses(_vae_gan_rows(), tmp_path / "losses.png")
        w, h = _png_size(tmp_path / "losses.png")
        assert w > 0 and h > 0
        assert w == 3 * h  # three 3x3 in panels

    def test_gan_rows_without_kl_or_recon(self, tmp_path):
        plot_losses(_gan_rows(), tmp_path / "losses.png")
        w, h = _png_size(tmp_path / "losses.png")
        assert w == 2 * h  # the empty "other" panel is skipped

    def test_single_step_row(self, tmp_path):
        plot_losses([{"type": "step", "step": 0, "loss_enc": 1.0}], tmp_path / "losses.png")
        assert _png_size(tmp_path / "losses.png")[0] > 0

    def test_non_numeric_missing_and_nan_values_are_skipped(self, tmp_path):
        rows = _gan_rows(10)
        rows[3]["loss_gen"] = "n/a"
        rows[4]["loss_gen"] = float("nan")
        rows[5]["loss_gen"] = None
        del rows[6]["loss_dis"]
        rows[7]["flag"] = True  # a bool is not a metric
        rows.append({"type": "step", "loss_gen": 1.0})  # no step: cannot be placed
        plot_losses(rows, tmp_path / "losses.png")
        assert _png_size(tmp_path / "losses.png")[0] > 0

    def test_zero_step_rows_raise(self, tmp_path):
        with pytest.raises(BadInputError, match="no 'step' rows"):
            epoch_only = [{"type": "epoch", "epoch": 1, "step": 5, "val_recon": 0.1}]
            plot_losses(epoch_only, tmp_path / "l.png")
        with pytest.raises(BadInputError, match="no 'step' rows"):
            plot_losses([], tmp_path / "l.png")
        assert not (tmp_path / "l.png").exists()

    def test_step_rows_without_metrics_raise(self, tmp_path):
        with pytest.raises(BadInputError, match="no numeric metric"):
            plot_losses([{"type": "step", "step": 1, "epoch": 1, "note": "hi"}], tmp_path / "l.png")

    @pytest.mark.parametrize("rows", [{"type": "step"}, ["not a dict"]], ids=["dict", "strs"])
    def test_rows_of_wrong_type_raise(self, tmp_path, rows):
        with pytest.raises(BadInputError):
            plot_losses(rows, tmp_path / "l.png")

    def test_wrong_suffix_raises(self, tmp_path):
        with pytest.raises(BadInputError, match=r"\.png"):
            plot_losses(_gan_rows(), tmp_path / "losses.svg")


class TestPlotPoints:
    def test_points_alone_write_a_png(self, tmp_path):
        points = np.random.default_rng(0).normal(size=(200, 2)).astype(np.float32)
        plot_points(points, tmp_path / "p.png")
        w, h = _png_size(tmp_path / "p.png")
        assert w > 0 and h > 0

    def test_with_reference_centres_and_title(self, tmp_path):
        rng = np.random.default_rng(0)
        centres = np.array([[-4.0, 0.0], [4.0, 0.0], [0.0, 6.0]])
        reference = centres[rng.integers(0, 3, 300)] + rng.normal(0, 0.3, (300, 2))
        points = rng.normal(0, 3, (100, 2))
        path = tmp_path / "p.png"
        plot_points(points, path, centres=centres, reference=reference, title="epoch 3")
        assert _png_size(path)[0] > 0

    def test_single_point_and_integer_dtype(self, tmp_path):
        plot_points(np.array([[1, 2]]), tmp_path / "p.png")
        assert _png_size(tmp_path / "p.png")[0] > 0

    @pytest.mark.parametrize(
        "points, match",
        [
            (np.zeros((5, 3)), r"expected \(N, 2\)"),
            (np.zeros(4), r"expected \(N, 2\)"),
            (np.zeros((0, 2)), "empty"),
            (np.array([[0.0, np.nan]]), "finite"),
            (np.array([["a", "b"]]), "dtype"),
            ([[0.0, 1.0]], "numpy array"),
        ],
        ids=["three-columns", "ndim1", "empty", "nan", "strings", "list"],
    )
    def test_bad_points_raise(self, tmp_path, points, match):
        with pytest.raises(BadInputError, match=match):
            plot_points(points, tmp_path / "p.png")

    def test_bad_centres_or_reference_raise(self, tmp_path):
        points = np.zeros((3, 2))
        with pytest.raises(BadInputError, match="centres"):
            plot_points(points, tmp_path / "p.png", centres=np.zeros((2, 3)))
        with pytest.raises(BadInputError, match="reference"):
            plot_points(points, tmp_path / "p.png", reference=np.zeros(2))

    def test_wrong_suffix_raises(self, tmp_path):
        with pytest.raises(BadInputError, match=r"\.png"):
            plot_points(np.zeros((3, 2)), tmp_path / "p.jpg")


class TestAtomicWrites:
    def test_write_leaves_no_temp_file(self, tmp_path):
        plot_losses(_gan_rows(), tmp_path / "losses.png")
        plot_points(np.zeros((3, 2)), tmp_path / "points.png")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["losses.png", "points.png"]

    @pytest.mark.parametrize("plot", ["losses", "points"])
    def test_failed_render_keeps_existing_file(self, tmp_path, monkeypatch, plot):
        path = tmp_path / "figure.png"
        path.write_bytes(b"old")

        def broken_print_png(self, fp, *args, **kwargs):
            fp.write(b"half")
            raise RuntimeError("render failed")

        monkeypatch.setattr(FigureCanvasAgg, "print_png", broken_print_png)
        with pytest.raises(RuntimeError, match="render failed"):
            if plot == "losses":
                plot_losses(_gan_rows(), path)
            else:
                plot_points(np.zeros((3, 2)), path)
        assert path.read_bytes() == b"old"
        assert [p.name for p in tmp_path.iterdir()] == ["figure.png"]
