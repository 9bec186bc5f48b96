"""Rich views of long-running work, used by cli.py only."""

from __future__ import annotations

import time

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

# Short names for the progress line; the full names are in metrics.jsonl.
_SHORT = {"loss_encoder": "enc", "loss_decoder": "dec", "loss_discriminator": "dis", "kl": "kl", "recon": "rec",
          "d_real_acc": "D(real)", "d_fake_acc": "D(fake)", "loss_coarse": "coarse", "loss_detail": "detail",
          "loss_prior_decoder": "prior", "gamma": "gamma"}


class TrainProgress:
    """A training Reporter: a start table, then a progress bar with the live losses and the ETA.

    The bar is redrawn at most every REDRAW_S seconds (and whenever new losses arrive), so a fast GPU step does
    not wait on the terminal. With shown=False (the ranks of a torchrun world but rank 0) it draws nothing."""

    REDRAW_S = 0.25

    def __init__(self, console: Console, shown: bool = True):
        self.shown = shown
        self._last_drawn = float("-inf")
        self.console = console
        self.progress = Progress(TextColumn("epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[losses]}"), TimeElapsedColumn(), TextColumn("eta"),
                                 TimeRemainingColumn(), console=console, transient=False)
        self.task = None

    def __enter__(self) -> "TrainProgress":
        if self.shown:
            self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.shown:
            self.progress.stop()

    def started(self, info: dict) -> None:
        if not self.shown:
            return
        table = Table(title=f"training {escape(info['run_dir'])}", show_header=True, title_justify="left")
        table.add_column("network")
        table.add_column("parameters", justify="right")
        for name, count in info["parameters"].items():
            table.add_row(name, f"{count:,}")
        self.console.print(table)
        how = info["precision"] + (", one CUDA graph a step" if info.get("cuda_graph") else "")
        where = f" x {info['processes']} processes" if info.get("processes", 1) > 1 else ""
        self.console.print(f"device {info['device']}{where} ({how}), {info['train_items']:,} training items "
                           f"of shape {tuple(info['item_shape'])}, {info['held_out_items']:,} held out"
                           + (f", resuming at step {info['resumed_at_step']}" if info["resumed_at_step"] else ""))
        self.task = self.progress.add_task("train", total=info["total_steps"], completed=info["resumed_at_step"],
                                           epoch=1, losses="")

    def advanced(self, step: int, total: int, epoch: int, metrics: dict[str, float]) -> None:
        now = time.monotonic()
        if not self.shown or not (metrics or step >= total or now - self._last_drawn >= self.REDRAW_S):
            return
        self._last_drawn = now
        fields = {"epoch": epoch}
        if metrics:
            fields["losses"] = "  ".join(f"{_SHORT[k]} {v:.3g}" for k, v in metrics.items() if k in _SHORT)
        self.progress.update(self.task, completed=step, **fields)

    def epoch_done(self, row: dict) -> None:
        if not self.shown:
            return
        extra = "  ".join(f"{k} {v:.4g}" for k, v in row.items() if k not in ("epoch", "step"))
        if extra:
            self.progress.console.print(f"epoch {row['epoch']}: {extra}")


def _shape(spec) -> str:
    dtype = "" if spec.dtype == "float32" else f" {spec.dtype}"
    return f"{spec.name}({','.join('B' if d == 'batch' else str(d) for d in spec.shape)}){dtype}"


def manifest_tables(bundle, manifest, files: dict[str, str] | None = None) -> list:
    """A bundle's manifest as rich renderables: a summary line, the graphs, the engines. `files` maps each listed
    file to what its hash check found ("ok", or why not; see manifest.check_files)."""
    files = files or {}

    def file_cell(name: str) -> str:
        state = files.get(name)
        return "[dim]not checked[/]" if state is None else "[green]ok[/]" if state == "ok" else f"[red]{escape(state)}[/]"

    m = manifest.model
    summary = (f"[bold]{escape(str(bundle))}[/]: {m.kind}{' conditional' if m.conditional else ''}, "
               f"{m.data_kind} {m.item_shape}, latent {m.latent_dim}"
               + (f" (the last {m.style_dim} each domain's style)" if m.style_dim else "")
               + (f", {m.num_classes} classes" if m.conditional and not m.text else "")
               + (f", prompted by text (up to {m.text.max_tokens} word pieces; {escape(m.text.encoder)})" if m.text else "")
               + (f", translates {escape(m.domains[0])} (a) <-> {escape(m.domains[1])} (b) {m.item_shape_b}"
                  if m.domains else "")
               + f"; gvtool {manifest.gvtool_version}, format {manifest.format}, "
               + f"from {escape(manifest.source.get('run_dir', '?'))}"
               + f" (step {manifest.source.get('step', '?')})")
    interfaces = {}
    for g in manifest.graphs.values():  # the same for every precision of a graph
        interfaces.setdefault(g.graph, f"  {g.graph}: {', '.join(_shape(s) for s in g.inputs)} -> "
                                       f"{', '.join(_shape(s) for s in g.outputs)}")
    graphs = Table(title="graphs (B = dynamic batch)", title_justify="left")
    for column, justify in (("graph", "left"), ("size", "right"), ("opset", "right"), ("max|d|", "right"),
                            ("mean|d|", "right"), ("check vs torch", "left"), ("sha256", "left")):
        graphs.add_column(column, justify=justify, no_wrap=True)
    for g in manifest.graphs.values():
        v = g.validation
        check = f"{v.metric.split('_')[0]} <= {v.tolerance:g} " + ("[green]ok[/]" if v.passed else "[red]FAILED[/]")
        if v.metric == "cosine":
            check = f"1 - cosine {v.cosine_gap:.1e} <= {v.tolerance:g} " + ("[green]ok[/]" if v.passed else "[red]FAILED[/]")
        graphs.add_row(g.key, f"{g.bytes / 1024:,.0f} KiB", f"{g.opset}/IR{g.ir_version}",
                       f"{v.max_abs_diff:.1e}", f"{v.mean_abs_diff:.1e}", check, file_cell(g.file))
    if m.text is not None:
        graphs.add_row(escape(m.text.tokenizer_file), "", "", "", "", "tokenizer", file_cell(m.text.tokenizer_file))
    out = [summary, *interfaces.values(), graphs]
    if manifest.engines:
        engines = Table(title="TensorRT engines", title_justify="left")
        for column in ("engine", "from", "size", "batch min/opt/max", "TensorRT", "GPU", "sm", "DLA", "sha256"):
            engines.add_column(column)
        for name, e in manifest.engines.items():
            engines.add_row(escape(e.file), e.graph_key, f"{e.bytes / 1024:,.0f} KiB",
                            f"{e.profile['min']}/{e.profile['opt']}/{e.profile['max']}", e.tensorrt_version,
                            escape(e.gpu_name), e.compute_capability, "-" if e.dla_core is None else str(e.dla_core),
                            file_cell(e.file))
        out.append(engines)
    else:
        out.append("no TensorRT engines (build them on the target device: gvtool export BUNDLE --trt)")
    return out


class count_progress:
    """A progress bar over a count of items; the context value is a callback taking the count done."""

    def __init__(self, console: Console, total: int, what: str):
        self.progress = Progress(TextColumn(what), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                 TextColumn("eta"), TimeRemainingColumn(), console=console, transient=True)
        self.total, self.task = total, None

    def __enter__(self):
        if not self.progress.console.is_terminal:  # a pipe or a log file gets no bar (and no blank line)
            return lambda done: None
        self.progress.start()
        self.task = self.progress.add_task("", total=self.total)
        return lambda done: self.progress.update(self.task, completed=done)

    def __exit__(self, *exc) -> None:
        if self.task is not None:
            self.progress.stop()


def bench_table(rows: list[dict], ratios: list[dict]) -> Table:
    """Benchmark rows as a table: latency percentiles, throughput, GFLOP/s and share of peak, ratio to torch."""
    vs = {(r["label"], r["graph"], r["precision"], r["batch"], r["backend"]): r for r in ratios}
    table = Table(title="gvtool bench (latency per call, copies included; vs torch = torch p50 / this p50, same run)",
                  title_justify="left")
    for column in ("machine/device", "graph", "backend", "prec", "batch", "p50 ms", "p90 ms", "p99 ms", "items/s",
                   "GFLOP/s", "% peak", "vs torch"):
        table.add_column(column, justify="left" if column in ("machine/device", "graph", "backend", "prec") else "right")
    for r in rows:
        if r["status"] != "ok":
            table.add_row(escape(r["label"]), r["graph"], r["backend"], r["precision"], str(r["batch"]),
                          f"[dim]skipped: {escape(r['reason'])}[/]", "", "", "", "", "", "")
            continue
        ratio = vs.get((r["label"], r["graph"], r["precision"], r["batch"], r["backend"]), {})
        table.add_row(escape(r["label"]), r["graph"], r["backend"], r["precision"], str(r["batch"]),
                      f"{r['p50_ms']:.3f}", f"{r['p90_ms']:.3f}", f"{r['p99_ms']:.3f}", f"{r['items_per_s']:,.0f}",
                      "" if r.get("gflops") is None else f"{r['gflops']:.1f}",
                      "" if r.get("percent_of_peak") is None else f"{r['percent_of_peak']:.0f}%",
                      "" if not ratio.get("latency_ratio") else f"{1 / ratio['latency_ratio']:.2f}x")
    return table


def eval_table(result: dict) -> Table:
    """The metrics of one `gvtool eval` as a table; image metrics get a third column, the same figures for real
    held-out items in the samples' place."""
    table = Table(title=f"gvtool eval {escape(result['target'])} ({result['kind']}, {result['precision']}, "
                        f"{result['model']} on {escape(result['data'])}, n={result['n']})", title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    if "mode_coverage" in result:
        m = result["mode_coverage"]
        table.add_row("modes covered", f"{m['modes_covered']} / {m['n_modes']}")
        table.add_row("high-quality samples", f"{m['high_quality']:.1%}")
        table.add_row("KL(high-quality modes || uniform)", f"{m['kl_to_uniform']:.4f}")
    if "class_coverage" in result:
        c, p = result["class_coverage"], result["prdc"]
        ref = result["real_reference"]
        rc, rp = ref["class_coverage"], ref["prdc"]
        table.add_column(f"held-out real items (n={ref['n']})", justify="right", style="dim")
        table.add_row("evaluator held-out accuracy", f"{result['evaluator']['held_out_accuracy']:.2%}", "")
        table.add_row("classes covered", f"{c['classes_covered']} / {c['n_classes']}",
                      f"{rc['classes_covered']} / {rc['n_classes']}")
        table.add_row("KL(class histogram || uniform)", f"{c['kl_to_uniform']:.4f}", f"{rc['kl_to_uniform']:.4f}")
        table.add_row("confidently classified", f"{c['confident']:.1%}", f"{rc['confident']:.1%}")
        table.add_row("Fréchet distance to the training split", f"{result['frechet_distance']:.3f}",
                      f"{ref['frechet_distance']:.3f}")
        table.add_row("Fréchet distance to the held-out items", f"{result['frechet_distance_held_out']:.3f}", "")
        for key in ("precision", "recall", "density", "coverage"):
            table.add_row(f"{key} (k={p['k']})", f"{p[key]:.3f}", f"{rp[key]:.3f}")
    if "copies" in result:
        c = result["copies"]
        table.add_row("near-copies of training items", f"{c['sample_rate']:.1%}", f"{c['held_out_rate']:.1%}")
        table.add_row("median distance to training, samples / held out", f"{c['median_ratio']:.3f}")
    if "held_out_recon_mse" in result:
        table.add_row("held-out reconstruction MSE (model scale)", f"{result['held_out_recon_mse']:.4f}")
    text = result.get("text", {})
    if "class_accuracy" in text:
        table.add_row(f"prompted digit drawn ({text['prompts']} held-out captions)", f"{text['class_accuracy']:.1%}",
                      f"{text['class_accuracy_real']:.1%}")
        for attribute in ("thickness", "slant"):
            a = text[attribute]
            table.add_row(f"{attribute} error, {a['unit']} (ignoring the prompt's: "
                          f"{a['mean_abs_error_ignoring_it']:.2f})", f"{a['mean_abs_error']:.2f}", "")
            if a["band_met"] is not None:
                table.add_row(f"{attribute} said and met ({a['band_prompts']} prompts)", f"{a['band_met']:.1%}", "")
    for r in result.get("translation", {}).values():
        direction, p, rp = f"{escape(r['source'])} -> {escape(r['target'])}", r["prdc"], r["real_reference"]["prdc"]
        table.add_row(f"{direction}: class kept (n={r['n']})", f"{r['class_kept']:.1%}",
                      f"{r['evaluator']['held_out_accuracy']:.1%} accuracy")
        table.add_row(f"{direction}: Fréchet distance to {escape(r['target'])}'s training split",
                      f"{r['frechet_distance']:.3f}", f"{r['real_reference']['frechet_distance']:.3f}")
        table.add_row(f"{direction}: precision / recall", f"{p['precision']:.3f} / {p['recall']:.3f}",
                      f"{rp['precision']:.3f} / {rp['recall']:.3f}")
        table.add_row(f"{direction} -> back: cycle MSE (model scale)", f"{r['cycle_mse']:.4f}", "")
    if "imputation" in result:
        _imputation_rows(table, result["imputation"])
    return table


def _imputation_rows(table: Table, r: dict) -> None:
    """A joint model's rows: label from image, image from label, and inpainting per share missing (mean over the
    mask kinds), its figures against the mean-filled image's in the third column."""
    label = r["label_from_image"]
    table.add_row(f"label from image: accuracy (n={r['n']})", f"{label['accuracy']:.1%}",
                  f"{label['evaluator_accuracy']:.1%} evaluator")
    table.add_row("label from image: agrees with the evaluator", f"{label['agreement_with_evaluator']:.1%}", "")
    table.add_row(f"image from label: evaluator says that class (n={r['image_from_label']['n']})",
                  f"{r['image_from_label']['accuracy']:.1%}", "")
    for missing, block in r["inpainting"].items():
        m = block["mean_over_kinds"]
        share = f"{float(missing):.0%} missing"
        table.add_row(f"{share}: masked-pixel MSE, a completion / best of {r['draws']} (mean fill)",
                      f"{m['masked_mse']:.3f} / {m['masked_mse_best']:.3f}", f"{m['masked_mse_mean_fill']:.3f}")
        table.add_row(f"{share}: evaluator right on the completed digits (mean fill)",
                      f"{m['evaluator_accuracy']:.1%}", f"{m['evaluator_accuracy_mean_fill']:.1%}")
        table.add_row(f"{share}: label read from the visible part", f"{m['label_accuracy']:.1%}", "")
        table.add_row(f"{share}: spread of the completions (std, model scale)", f"{m['diversity']:.3f}", "")
