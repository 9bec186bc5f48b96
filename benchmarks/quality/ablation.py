"""The sample-quality ablation: one row per technique added to the VAE-GAN, each over several seeds.

    python benchmarks/quality/ablation.py [--data mnist] [--rows ROW,ROW,...] [--seeds 0,1,2]
                                          [--out benchmarks/quality/results/ablation]

Each row is the row it builds on plus one change (ROWS below); `legacy` is the VAE-GAN as it trained before any
of them. Runs train in this process with `gvtool train`'s code path (train.loop.train on TrainConfig.defaults_for
plus the row's changes) and are measured with `gvtool eval`'s evaluate(). A finished run is reused only when its
stored config equals the one asked for; anything else is trained again. Writes DATA.json (every run, with its
wall time) and DATA.md (mean ± std per row, and the worst run). Runs are named by their thread count too:
run the script once more under OMP_NUM_THREADS=1 to add those runs to the same table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
from pathlib import Path

import torch
from common import get, trained  # benchmarks/quality/common.py, beside this script

from gvtool.eval.evaluate import evaluate, json_ready
from gvtool.train.config import TrainConfig

# name -> (what it adds, the row it adds to, changes to the model config, changes to the train config). The rows
# from `legacy` to `e35` build today's default one technique at a time; the others were tried on top of a row
# and not kept.
ROWS: dict[str, tuple[str, str | None, dict, dict]] = {
    "legacy": ("the VAE-GAN before this ablation: BCE, plain D, no average, no augmentation, Adam (0.5, 0.999), "
               "25 epochs", None,
               {"gan_loss": "bce", "spectral_norm": False, "ema_decay": 0.0, "augment": (), "extra_convs": 0},
               {"beta1": 0.5, "beta2": 0.999, "epochs": 25}),
    "sn": ("+ spectral norm in D", "legacy", {"spectral_norm": True}, {}),
    "hinge": ("+ hinge loss", "sn", {"gan_loss": "hinge"}, {}),
    "ema": ("+ decoder weight average (0.999)", "hinge", {"ema_decay": 0.999}, {}),
    "deep": ("+ one 3x3 conv at 7x7 in every network", "ema", {"extra_convs": 1}, {}),
    "adam": ("+ Adam betas (0, 0.9)", "deep", {}, {"beta1": 0.0, "beta2": 0.9}),
    "e35": ("+ 35 epochs in place of 25 (the default)", "adam", {}, {"epochs": 35}),
    "diffaug": ("ema + DiffAugment translation, cutout (not kept)", "ema", {"augment": ("translation", "cutout")}, {}),
}
# (label, path in evaluate()'s result, format, whether higher is better: the worst seed is shown beside the mean)
FIGURES = {
    "image": [("confident", ("class_coverage", "confident"), "{:.1%}", True),
              ("class KL", ("class_coverage", "kl_to_uniform"), "{:.3f}", False),
              ("FD", ("frechet_distance",), "{:.1f}", False),
              ("precision", ("prdc", "precision"), "{:.3f}", True), ("recall", ("prdc", "recall"), "{:.3f}", True),
              ("near-copies", ("copies", "sample_rate"), "{:.1%}", False),
              ("held-out recon", ("held_out_recon_mse",), "{:.4f}", False),
              ("train s", ("train_seconds",), "{:.0f}", False)],
    "vector": [("modes", ("mode_coverage", "modes_covered"), "{:.2f}", True),
               ("high quality", ("mode_coverage", "high_quality"), "{:.1%}", True),
               ("KL", ("mode_coverage", "kl_to_uniform"), "{:.3f}", False),
               ("train s", ("train_seconds",), "{:.0f}", False)],
}


def chain(row: str) -> list[str]:
    """The rows from `legacy` to `row`, in the order their changes apply."""
    return ([] if ROWS[row][1] is None else chain(ROWS[row][1])) + [row]


def config_for(data: str, rows: list[str], seed: int) -> TrainConfig:
    config = TrainConfig.defaults_for(data).replace(seed=seed)
    for name in rows:
        _, _, model_changes, train_changes = ROWS[name]
        config = config.replace(model=dataclasses.replace(config.model, **model_changes), **train_changes)
    return config


def run_one(data: str, rows: list[str], seed: int, out: Path) -> dict:
    # GAN training is chaotic: another thread count sums in another order and sends a seed elsewhere, so the
    # thread count is part of a run's identity (set it with OMP_NUM_THREADS; torch follows it).
    threads = torch.get_num_threads()
    run_dir = out / "runs" / f"{data}-{rows[-1]}-s{seed}-t{threads}"
    seconds = trained(config_for(data, rows, seed), run_dir)
    result = evaluate(run_dir, seed=0)
    return json_ready(result) | {"row": rows[-1], "seed": seed, "threads": threads, "train_seconds": seconds}


def table(results: list[dict], kind: str) -> str:
    figures = FIGURES[kind]
    lines = ["| row | adds | runs | " + " | ".join(label for label, *_ in figures) + " |",
             "|---|---|---|" + "---|" * len(figures)]
    for row in dict.fromkeys(r["row"] for r in results):
        got = [r for r in results if r["row"] == row]
        cells = []
        for _, path, fmt, higher_is_better in figures:
            values = [v for r in got if isinstance(v := get(r, path), (int, float))]
            if not values:
                cells.append("—")
                continue
            cell = fmt.format(statistics.mean(values))
            if len(values) > 1:
                cell += (f" ± {fmt.format(statistics.stdev(values)).rstrip('%')}"
                         f" (worst {fmt.format(min(values) if higher_is_better else max(values))})")
            cells.append(cell)
        lines.append(f"| {row} | {ROWS[row][0]} | {len(got)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="mnist")
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/quality/results/ablation"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    wanted = args.rows.split(",")
    unknown = [r for r in wanted if r not in ROWS]
    if unknown:
        parser.error(f"unknown rows {unknown}; expected some of {list(ROWS)}")
    order = list(ROWS)
    path = args.out / f"{args.data}.json"
    results = json.loads(path.read_text()) if path.is_file() else []
    for row in wanted:
        for seed in (int(s) for s in args.seeds.split(",")):
            result = run_one(args.data, chain(row), seed, args.out)
            key = (row, seed, result["threads"])
            results = [r for r in results if (r["row"], r["seed"], r.get("threads")) != key] + [result]
            path.write_text(json.dumps(results, indent=2) + "\n")
            print(f"{args.data} {row} seed {seed}: {result.get('frechet_distance', result.get('mode_coverage'))}",
                  flush=True)
    results.sort(key=lambda r: (order.index(r["row"]), r["seed"], r.get("threads", 0)))
    kind = "vector" if "mode_coverage" in results[0] else "image"
    (args.out / f"{args.data}.md").write_text(table(results, kind) + "\n")
    print(table(results, kind))


if __name__ == "__main__":
    main()
