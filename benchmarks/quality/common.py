"""What the quality scripts share: reading a figure out of evaluate()'s result, training a run unless a finished
run of the same config is already there, and measuring a run through its exported bundle at every precision."""

from __future__ import annotations

import json
import statistics
import shutil
import time
from pathlib import Path

import torch

from gvtool.eval.evaluate import evaluate, json_ready
from gvtool.export.bundle import export_bundle
from gvtool.manifest import is_bundle, read_manifest, sha256_file
from gvtool.train import rundir
from gvtool.train.checkpoint import read_meta
from gvtool.train.config import TrainConfig
from gvtool.train.loop import complete_config, load_data, train

PRECISIONS = ("fp32", "fp16", "int8")  # the order rows are written in
TIMING_FILE = "train_seconds.json"  # beside the checkpoint: the wall time of the training that wrote it


def get(result: dict, path: tuple):
    """result[path[0]][path[1]]..., or None where a key is missing."""
    for key in path:
        result = result.get(key) if isinstance(result, dict) else None
    return result


def summary(values: list[float], higher_is_better: bool, worst: bool = True) -> str:
    """A table cell of one figure over the seeds: "mean ± std (worst)", the worst shown when `worst` and there are
    several; "—" for none."""
    if not values:
        return "—"
    spread = statistics.stdev(values) if len(values) > 1 else 0
    last = min(values) if higher_is_better else max(values)
    return f"{statistics.mean(values):.3g} ± {spread:.2g}" + (f" ({last:.3g})" if worst and len(values) > 1 else "")


def write_results(out: Path, stem: str, rows: list[dict], table: str) -> None:
    """out/STEM.json (every run and precision, JSON-ready) and out/STEM.md (the table)."""
    (out / f"{stem}.json").write_text(json.dumps(json_ready(rows), indent=2) + "\n")
    (out / f"{stem}.md").write_text(table + "\n")


def seeds_main(description: str, stem: str, run_one, table, samples_grid, options: dict[str, str] | None = None) -> None:
    """The command line of a one-data-set quality script: [--data mnist] [--seeds 0,1,2] [--epochs N] [--out DIR],
    and the script's own `options` (name -> help: --NAME VALUE, passed to run_one as NAME=VALUE, None when not given).
    Each seed's rows come from run_one(data, seed, epochs, out, **options), and out/STEM.json and .md are written after
    each (STEM-NAME for each option given); samples_grid(first row, out / "STEM-samples.png") draws the first seed's
    samples at the end."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data", default="mnist")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/quality/results"))
    for name, help_text in (options or {}).items():
        parser.add_argument(f"--{name}", default=None, help=help_text)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    given = {name: getattr(args, name) for name in options or {}}
    stem += "".join(f"-{name}" for name, value in given.items() if value is not None)
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        rows += run_one(args.data, seed, args.epochs, args.out, **given)
        print(f"{args.data} seed {seed}: done", flush=True)
        write_results(args.out, stem, rows, table(rows))
    samples_grid(rows[0], args.out / f"{stem}-samples.png")
    print(table(rows), flush=True)


def _trained_like(config: TrainConfig, stored: TrainConfig) -> bool:
    """Whether a checkpoint whose stored config is `stored` was trained with `config`, up to what a resume may change
    (epochs, device, precision). The stored config was completed from the data (shape, vector statistics), so
    `config` is completed the same way before comparing, as `train --resume` does."""
    data, data_b = load_data(config)
    return not complete_config(config, data, data_b).resume_differences(stored)


def trained(config: TrainConfig, run_dir: Path) -> float:
    """Train `config` into `run_dir` unless it holds a finished run of that very config (and its timing); return
    the training's wall seconds. Anything else in `run_dir` (another config, an unfinished run) is removed first."""
    checkpoint, timing = run_dir / rundir.CHECKPOINT_FILE, run_dir / TIMING_FILE
    if checkpoint.is_file():
        meta = read_meta(checkpoint)
        stored = TrainConfig.from_dict(meta["config"])
        if not (meta.get("complete") and stored.epochs == config.epochs and timing.is_file()
                and _trained_like(config, stored)):
            shutil.rmtree(run_dir)
    if not checkpoint.is_file():
        start = time.perf_counter()
        train(config, run_dir)
        timing.write_text(json.dumps({"train_seconds": time.perf_counter() - start}) + "\n")
    return json.loads(timing.read_text())["train_seconds"]


def through_bundle(run_dir: Path, bundle_dir: Path) -> list[dict]:
    """Export run_dir as `gvtool export` does (its default precisions) unless bundle_dir already holds the bundle of
    this very checkpoint, then evaluate the bundle with `gvtool eval`'s evaluate() (eval seed 0, the command's
    default) at every precision it holds: one JSON-ready result per precision, fp32 first."""
    checkpoint_hash = sha256_file(run_dir / rundir.CHECKPOINT_FILE)
    if is_bundle(bundle_dir) and read_manifest(bundle_dir).source.get("checkpoint_sha256") != checkpoint_hash:
        shutil.rmtree(bundle_dir)  # exported from a run since trained again
    if not is_bundle(bundle_dir):
        export_bundle(run_dir, bundle_dir)
    precisions = sorted({g.precision for g in read_manifest(bundle_dir).graphs.values()}, key=PRECISIONS.index)
    results = [json_ready(evaluate(bundle_dir, precision=p)) for p in precisions]
    results[0]["sample_latency_ms"] = sample_latency_ms(bundle_dir)
    return results


LATENCY_BATCHES = (1, 64)
PROMPT = "a thin 4 leaning right"  # a text-conditioned model's prompt when its sampling is timed


def sample_latency_ms(bundle_dir: Path, seconds: float = 1.0) -> dict[str, float]:
    """Median milliseconds of the bundle's whole sampling chain (onnxruntime on the CPU, fp32), per batch size: the
    latency a user of `gvtool sample` sees, the copies between stages included (a text-conditioned model's: one
    prompt encoded, then the batch drawn)."""
    from gvtool.bench.core import time_calls
    from gvtool.runtime.model import load

    with load(bundle_dir, backend="onnxruntime", device="cpu", operation="sample") as model:
        prompt = PROMPT if model.text is not None else None
        return {str(n): 1e3 * statistics.median(time_calls(lambda: model.sample(n, seed=0, labels=prompt),
                                                           warmup_s=0.2, duration_s=seconds))
                for n in LATENCY_BATCHES}


def measured(config: TrainConfig, out: Path, name: str) -> list[dict]:
    """Train `config` into out/runs/NAME (unless done), measure it through out/bundles/NAME at every precision, and
    tag each result with the seed, this process's thread count and the training's wall seconds."""
    run_dir = out / "runs" / name
    seconds = trained(config, run_dir)
    tags = {"seed": config.seed, "threads": torch.get_num_threads(), "train_seconds": seconds}
    return [r | tags for r in through_bundle(run_dir, out / "bundles" / name)]
