"""What `gvtool train` gives with no option but --data and --seed, measured through the exported bundle.

    python benchmarks/quality/defaults.py [--data mnist,ring8,grid25] [--seeds 0,1,2,3,4] [--device cpu|cuda]
                                          [--out benchmarks/quality/results/defaults]

Each seed trains the data set's defaults in this process (train.loop.train on TrainConfig.defaults_for: the
command's code path), exports the bundle as `gvtool export` does, and evaluates it with `gvtool eval`'s
evaluate() at every precision the bundle holds. The thread count is part of a run's name and result: run the
script again under OMP_NUM_THREADS=1 to add those runs. A finished run or bundle is reused only when its config
matches. Writes DATA.json (every run and precision) and DATA.md (each run, then the worst run against the targets).
`--device cuda` trains on cuda:0 with the defaults `gvtool train` picks there (longer image training) and writes
DATA-cuda.json and DATA-cuda.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from common import PRECISIONS, get, measured  # benchmarks/quality/common.py, beside this script

from gvtool.train.config import TrainConfig

# The issue's targets: (label, path in evaluate()'s result, threshold, higher is better)
TARGETS = {
    "image": [("confident", ("class_coverage", "confident"), 0.90, True),
              ("class KL", ("class_coverage", "kl_to_uniform"), 0.02, False),
              ("classes", ("class_coverage", "classes_covered"), 10, True),
              ("FD", ("frechet_distance",), 10.0, False),
              ("precision", ("prdc", "precision"), 0.90, True),
              ("recall", ("prdc", "recall"), 0.90, True),
              ("near-copies", ("copies", "sample_rate"), None, False),
              ("held-out near-copies", ("copies", "held_out_rate"), None, False)],
    "ring8": [("modes", ("mode_coverage", "modes_covered"), 8, True),
              ("high quality", ("mode_coverage", "high_quality"), 0.98, True),
              ("KL", ("mode_coverage", "kl_to_uniform"), 0.02, False)],
    "grid25": [("modes", ("mode_coverage", "modes_covered"), 25, True),
               ("high quality", ("mode_coverage", "high_quality"), 0.95, True),
               ("KL", ("mode_coverage", "kl_to_uniform"), 0.02, False)],
}


def measure(data: str, seed: int, out: Path, device: str) -> list[dict]:
    name = f"{data}-s{seed}-t{torch.get_num_threads()}" if device == "cpu" else f"{data}-s{seed}-{device}"
    return measured(TrainConfig.defaults_for(data, device).replace(seed=seed, device=device), out, name)


def table(data: str, results: list[dict]) -> str:
    targets = TARGETS.get(data, TARGETS["image"])
    head = "| seed | threads | precision | " + " | ".join(label for label, *_ in targets) + " | train s |"
    lines = [head, "|---" * (head.count("|") - 1) + "|"]
    for r in results:
        cells = [f"{get(r, path):.4g}" if isinstance(get(r, path), (int, float)) else "—" for _, path, *_ in targets]
        lines.append(f"| {r['seed']} | {r['threads']} | {r['precision']} | " + " | ".join(cells)
                     + f" | {r['train_seconds']:.0f} |")
    worst = []
    for label, path, threshold, higher in targets:
        values = [v for r in results if isinstance(v := get(r, path), (int, float))]
        if not values:
            continue
        value = min(values) if higher else max(values)
        verdict = "" if threshold is None else (" (met)" if (value >= threshold if higher else value <= threshold)
                                                else f" (target {'>=' if higher else '<='} {threshold}: not met)")
        worst.append(f"- worst {label}: {value:.4g}{verdict}")
    slowest = max(r["train_seconds"] for r in results)
    return "\n".join(lines + ["", f"Worst run of {len(results)} (every seed, thread count and precision):"] + worst
                     + [f"- slowest training: {slowest:.0f} s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="mnist,ring8,grid25")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="train with the defaults `gvtool train` picks on this device type")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/quality/results/defaults"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = "" if args.device == "cpu" else f"-{args.device}"
    for data in args.data.split(","):
        path = args.out / f"{data}{suffix}.json"
        results = json.loads(path.read_text()) if path.is_file() else []
        for seed in (int(s) for s in args.seeds.split(",")):
            new = measure(data, seed, args.out, args.device)
            keep = {(r["seed"], r["threads"], r["precision"]) for r in new}
            results = [r for r in results if (r["seed"], r["threads"], r["precision"]) not in keep] + new
            results.sort(key=lambda r: (r["seed"], r["threads"], PRECISIONS.index(r["precision"])))
            path.write_text(json.dumps(results, indent=2) + "\n")
            print(f"{data} seed {seed}: done", flush=True)
        (args.out / f"{data}{suffix}.md").write_text(table(data, results) + "\n")
        print(table(data, results))


if __name__ == "__main__":
    main()
