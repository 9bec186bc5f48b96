"""Training figures: loss curves from metrics.jsonl rows, and 2-D samples against their data.

Uses matplotlib's object-oriented API with the Agg canvas: no pyplot, no global figure registry, no
display needed, and nothing to close (a figure is freed when it goes out of scope). Each figure is
rendered to PNG bytes in memory and written atomically.
"""

from __future__ import annotations

import io
import math
import numbers
import os
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from gvtool.errors import BadInputError
from gvtool.fileio import atomic_write_bytes

__all__ = ["plot_losses", "plot_points"]

_PANEL_INCHES = 3.0  # each panel is 3x3 in; three panels make the 9x3 in loss figure
_DPI = 100
_NOT_METRICS = frozenset({"type", "step", "epoch"})


def plot_losses(rows: list[dict], path: str | os.PathLike) -> None:
    """Plot the "step" rows of metrics.jsonl against step, as a PNG at `path`.

    Panels, left to right, each drawn only if it has data: keys starting "loss_"; keys starting
    "d_" (discriminator accuracies, y in [0, 1]); every other numeric key (kl, recon, ..., log y
    when all values > 0) with the "epoch" rows' "val_*" keys as markers. Each key is a faint raw
    line plus a trailing moving average over ~len/50 steps, so noisy GAN losses stay readable.
    Non-numeric, non-finite and missing values are skipped.
    """
    _check_png(path, "plot_losses")
    if not isinstance(rows, (list, tuple)):
        raise BadInputError(f"rows must be a list of dicts, got {type(rows).__name__}")
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise BadInputError(f"rows[{i}] is {type(row).__name__}, expected a dict")

    step_rows = [r for r in rows if r.get("type") == "step" and _is_number(r.get("step"))]
    if not step_rows:
        raise BadInputError(
            f"no 'step' rows with a numeric 'step' among {len(rows)} rows; nothing to plot"
        )
    series = _series(step_rows, lambda key: key not in _NOT_METRICS)
    epoch_rows = [r for r in rows if r.get("type") == "epoch" and _is_number(r.get("step"))]
    val_series = _series(epoch_rows, lambda key: key.startswith("val_"))

    losses = {k: v for k, v in series.items() if k.startswith("loss_")}
    accs = {k: v for k, v in series.items() if k.startswith("d_")}
    others = {k: v for k, v in series.items() if k not in losses and k not in accs}
    # (title, {key: line}, {key: markers}); a panel with neither is skipped
    panels = [
        (title, lines, markers)
        for title, lines, markers in (
            ("losses", losses, {}),
            ("discriminator", accs, {}),
            ("other", others, val_series),
        )
        if lines or markers
    ]
    if not panels:
        raise BadInputError(
            f"{len(step_rows)} step rows but no numeric metric in them; nothing to plot"
        )

    size = (_PANEL_INCHES * len(panels), _PANEL_INCHES)
    fig = Figure(figsize=size, dpi=_DPI, layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, lines, markers) in zip(axes, panels):
        for key, (x, y) in lines.items():
            (raw,) = ax.plot(x, y, lw=0.8, alpha=0.3, marker="." if len(x) == 1 else None)
            xs, ys = _moving_average(x, y)
            ax.plot(xs, ys, lw=1.4, color=raw.get_color(), label=key)
        for key, (x, y) in markers.items():
            ax.plot(x, y, ls="none", marker="o", ms=4, label=key)
        if title == "discriminator":
            ax.set_ylim(-0.02, 1.02)
        elif title == "other":
            values = [y for _, y in (*lines.values(), *markers.values())]
            if all(np.all(v > 0) for v in values):
                ax.set_yscale("log")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    _write_figure(fig, path)


def plot_points(
    points: np.ndarray,
    path: str | os.PathLike,
    *,
    centres: np.ndarray | None = None,
    reference: np.ndarray | None = None,
    title: str = "",
) -> None:
    """Scatter 2-D samples (N, 2) as a PNG at `path`.

    `reference` (M, 2), the true data, is drawn beneath in light grey; `centres` (K, 2) as red
    crosses. Equal aspect, with square limits covering every point plus a 5% margin.
    """
    _check_png(path, "plot_points")
    points = _as_points(points, "points", allow_empty=False)
    reference = None if reference is None else _as_points(reference, "reference", allow_empty=True)
    centres = None if centres is None else _as_points(centres, "centres", allow_empty=True)

    fig = Figure(figsize=(4, 4), dpi=_DPI, layout="constrained")
    ax = fig.add_subplot()
    if reference is not None:
        ax.scatter(reference[:, 0], reference[:, 1], s=3, c="0.8", lw=0, label="data", zorder=1)
    ax.scatter(points[:, 0], points[:, 1], s=4, alpha=0.5, lw=0, label="samples", zorder=2)
    if centres is not None:
        ax.scatter(
            centres[:, 0], centres[:, 1], s=40, c="red", marker="x", label="centres", zorder=3
        )

    everything = np.concatenate([a for a in (points, reference, centres) if a is not None])
    lo, hi = everything.min(axis=0), everything.max(axis=0)  # (2,), (2,)
    mid = (lo + hi) / 2
    half = max(float((hi - lo).max()) / 2, 1e-6) * 1.05  # one half-width for both axes: square view
    ax.set_xlim(mid[0] - half, mid[0] + half)
    ax.set_ylim(mid[1] - half, mid[1] + half)
    ax.set_aspect("equal", adjustable="box")
    if title:
        ax.set_title(title, fontsize=9)
    ax.tick_params(labelsize=7)
    if reference is not None or centres is not None:
        ax.legend(fontsize=7, loc="upper right", markerscale=3)
    _write_figure(fig, path)


# --- helpers -----------------------------------------------------------------------------------


def _check_png(path: str | os.PathLike, func: str) -> None:
    if Path(path).suffix.lower() != ".png":
        raise BadInputError(f"{func} writes .png files, got path {os.fspath(path)!r}")


def _is_number(value: object) -> bool:
    return (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


def _series(rows: list[dict], wanted) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{key: (steps, values)} for each wanted key with numeric values, sorted by step.

    Keys keep their first-seen order, so colours and legends follow the order of the records.
    """
    pairs: dict[str, list[tuple[float, float]]] = {}
    for row in rows:
        for key, value in row.items():
            if wanted(key) and _is_number(value):
                pairs.setdefault(key, []).append((float(row["step"]), float(value)))
    out = {}
    for key, kv in pairs.items():
        kv.sort(key=lambda p: p[0])  # stable: a resumed run's repeated steps keep their order
        arr = np.asarray(kv)  # (n, 2)
        out[key] = (arr[:, 0], arr[:, 1])
    return out


def _moving_average(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Trailing mean over max(1, len/50) points, placed at each window's last step."""
    window = max(1, len(y) // 50)
    csum = np.concatenate([[0.0], np.cumsum(y)])
    return x[window - 1 :], (csum[window:] - csum[:-window]) / window


def _as_points(arr: object, name: str, allow_empty: bool) -> np.ndarray:
    if not isinstance(arr, np.ndarray):
        raise BadInputError(f"{name} must be a numpy array, got {type(arr).__name__}")
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise BadInputError(f"{name} has shape {arr.shape}, expected (N, 2)")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise BadInputError(f"{name} has dtype {arr.dtype}, expected a real number dtype")
    if arr.shape[0] == 0 and not allow_empty:
        raise BadInputError(f"{name} is empty (shape {arr.shape}), expected at least one point")
    arr = arr.astype(np.float64, copy=False)
    if not np.isfinite(arr).all():
        raise BadInputError(f"{name} holds NaN or infinite values, expected finite coordinates")
    return arr


def _write_figure(fig: Figure, path: str | os.PathLike) -> None:
    buf = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buf)
    atomic_write_bytes(path, buf.getvalue())
