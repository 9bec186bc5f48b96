"""Reading bench reports side by side: flat rows, a markdown table, ratios against a baseline, a plot.

Several reports (one per machine, say a desktop GPU and a Jetson) merge into one list of rows, each
labelled "machine / device". Ratios only compare results of the same report: these machines are
shared and noisy, so a comparison is only fair between numbers measured in one run.
"""

from __future__ import annotations

import io
import math
import os
from collections import Counter, defaultdict

from gvtool.errors import BackendUnavailableError, BadInputError
from gvtool.fileio import atomic_write_bytes
from gvtool.bench.core import BenchReport, BenchResult, LatencyStats, load_report

_COLUMNS = ("machine / device", "graph", "backend", "precision", "batch", "p50 ms", "p90 ms", "p99 ms",
            "items/s", "GFLOP/s", "% of peak", "status")
_PLOT_INCHES = (11.0, 4.0)  # two panels side by side; the legend below adds height
_LEGEND_LINE_INCHES = 0.22  # per legend row of two entries
_DPI = 100


def merge(paths) -> list[BenchReport]:
    """The reports at `paths`, in order; BadInputError for a missing or invalid file."""
    paths = list(paths)
    if not paths:
        raise BadInputError("no bench report files given to merge")
    return [load_report(path) for path in paths]


# --- rows ----------------------------------------------------------------------------------------

def result_rows(reports: list[BenchReport]) -> list[dict]:
    """One flat row per result of every report, labelled "machine / device" (e.g. "orin / cuda:0
    NVIDIA Jetson Orin Nano"). A machine that appears in several reports gets "#2", "#3"... on its
    later reports, so that runs stay apart; "report" is the report's index in `reports`."""
    seen: Counter = Counter()
    rows = []
    for index, report in enumerate(reports):
        machine = report.machine.get("label") or report.machine.get("host") or "unknown"
        seen[machine] += 1
        if seen[machine] > 1:
            machine = f"{machine}#{seen[machine]}"
        rows.extend(_row(index, machine, report, result) for result in report.results)
    return rows


def _row(index: int, machine: str, report: BenchReport, result: BenchResult) -> dict:
    peak = report.peaks.get(result.device)
    return {"report": index, "date": report.date, "machine": machine, "device": result.device,
            "label": f"{machine} / {_device_name(report.machine, result.device)}",
            "graph": result.graph, "backend": result.backend, "note": result.note, "precision": result.precision,
            "batch": result.batch, "status": result.status, "reason": result.reason,
            "p50_ms": _ms(result.latency, "p50"), "p90_ms": _ms(result.latency, "p90"),
            "p99_ms": _ms(result.latency, "p99"), "items_per_s": result.items_per_s,
            "device_compute_p50_ms": _ms(result.device_compute, "p50"),
            "copy_in_p50_ms": _ms(result.copy_in, "p50"), "copy_out_p50_ms": _ms(result.copy_out, "p50"),
            "gflops": result.gflops, "peak_gflops": peak,
            "percent_of_peak": 100.0 * result.gflops / peak if result.gflops is not None and peak else None}


def _device_name(machine: dict, device: str) -> str:
    """"cuda:0 NVIDIA Jetson Orin Nano" when the report lists that GPU, else the device as given."""
    kind, _, index = device.partition(":")
    for gpu in machine.get("gpus", []):
        if kind == "cuda" and str(gpu.get("index")) == (index or "0"):
            return f"{device} {gpu.get('name', '')}".rstrip()
    return device


def _ms(stats: LatencyStats | None, field: str) -> float | None:
    return None if stats is None else getattr(stats, field) * 1e3


# --- tables --------------------------------------------------------------------------------------

def markdown_table(rows: list[dict]) -> str:
    """A GitHub markdown table, one line per row; skipped rows show their reason."""
    lines = ["| " + " | ".join(_COLUMNS) + " |", "|" + "|".join("---" for _ in _COLUMNS) + "|"]
    for r in rows:
        status = "ok" if r["status"] == "ok" else f"skipped: {r['reason']}"
        cells = [r["label"], r["graph"], _backend(r), r["precision"], str(r["batch"]),
                 _num(r["p50_ms"]), _num(r["p90_ms"]), _num(r["p99_ms"]), _num(r["items_per_s"]),
                 _num(r["gflops"]), _num(r["percent_of_peak"]), status]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def ratios(rows: list[dict], baseline_backend: str = "torch") -> list[dict]:
    """Each backend's p50 and throughput against the baseline's, for every (report, machine / device,
    graph, precision, batch) that has an ok baseline result. latency_ratio < 1 and throughput_ratio > 1
    mean faster than the baseline. A baseline measured several ways (notes such as "torch.compile")
    gives one ratio per way."""
    groups = defaultdict(list)
    for r in rows:
        if r["status"] == "ok":
            groups[(r["report"], r["label"], r["graph"], r["precision"], r["batch"])].append(r)
    out = []
    for (_, label, graph, precision, batch), members in groups.items():
        bases = [r for r in members if r["backend"] == baseline_backend]
        for base in bases:
            for r in members:
                if r["backend"] != baseline_backend:
                    out.append(_ratio(label, graph, precision, batch, r, base))
    return out


def _ratio(label: str, graph: str, precision: str, batch: int, r: dict, base: dict) -> dict:
    return {"label": label, "graph": graph, "precision": precision, "batch": batch,
            "backend": _backend(r), "baseline": _backend(base),
            "p50_ms": r["p50_ms"], "baseline_p50_ms": base["p50_ms"],
            "latency_ratio": r["p50_ms"] / base["p50_ms"] if base["p50_ms"] else None,
            "throughput_ratio": (r["items_per_s"] / base["items_per_s"]
                                 if r["items_per_s"] is not None and base["items_per_s"] else None)}


def ratios_table(entries: list[dict]) -> str:
    """ratios() as a markdown table."""
    columns = ("machine / device", "graph", "precision", "batch", "backend", "baseline", "p50 ms",
               "baseline p50 ms", "latency ratio", "throughput ratio")
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for e in entries:
        cells = [e["label"], e["graph"], e["precision"], str(e["batch"]), e["backend"], e["baseline"],
                 _num(e["p50_ms"]), _num(e["baseline_p50_ms"]), _num(e["latency_ratio"]), _num(e["throughput_ratio"])]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _backend(row: dict) -> str:
    return f"{row['backend']} ({row['note']})" if row["note"] else row["backend"]


def _num(value: float | None) -> str:
    if value is None:
        return "—"
    # three significant digits at least, so that 0.0123 ms and 12.3 ms read alike
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}" if abs(value) >= 1 else f"{value:#.3g}"


def _cell(text: str) -> str:
    # a "|" inside a reason would split the cell; a newline would end the row
    return str(text).replace("|", "\\|").replace("\n", " ")


# --- plot ----------------------------------------------------------------------------------------

def plot(rows: list[dict], path: str | os.PathLike) -> None:
    """PNG of p50 latency (ms) and throughput (items/s) against batch size, all axes logarithmic, one
    line per (machine / device, graph, backend, precision): the graph too, since the encoder and the
    decoder of one bundle differ. Skipped rows are left out."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise BackendUnavailableError("plotting needs matplotlib: pip install matplotlib, "
                                      "or use the JSON or markdown output instead") from None
    lines = _plot_lines(rows)
    if not lines:
        raise BadInputError("nothing to plot: there is no successful result among the rows")
    # The OO API with the Agg canvas: no pyplot, no global figure registry, no display needed.
    width, height = _PLOT_INCHES
    fig = Figure(figsize=(width, height + _LEGEND_LINE_INCHES * math.ceil(len(lines) / 2)), dpi=_DPI,
                 layout="constrained")
    latency_ax, throughput_ax = fig.subplots(1, 2)
    for name, points in lines.items():
        batches, p50, items = zip(*sorted(points))
        latency_ax.plot(batches, p50, marker="o", label=name)
        throughput_ax.plot(batches, items, marker="o")
    batches = sorted({point[0] for points in lines.values() for point in points})
    for ax, ylabel in ((latency_ax, "p50 latency (ms)"), (throughput_ax, "throughput (items/s)")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(batches, [str(b) for b in batches])  # the measured sizes, not powers of two
        ax.minorticks_off()
        ax.set_yscale("log")
        ax.set_xlabel("batch size")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="major", alpha=0.3)
    # below both panels, where it covers no line however many there are
    fig.legend(loc="outside lower center", ncols=2, fontsize="small")
    buf = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buf)
    atomic_write_bytes(path, buf.getvalue())


def _plot_lines(rows: list[dict]) -> dict[str, list[tuple]]:
    """{"label, graph, backend, precision": [(batch, p50 ms, items/s)]} of the ok rows."""
    lines = defaultdict(list)
    for r in rows:
        if r["status"] == "ok" and r["p50_ms"] and r["items_per_s"]:
            key = f"{r['label']}, {r['graph']}, {_backend(r)}, {r['precision']}"
            lines[key].append((r["batch"], r["p50_ms"], r["items_per_s"]))
    return dict(lines)
