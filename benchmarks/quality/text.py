"""Text to image (gvtool train --captions builtin): does a model draw what a prompt it never saw says? Over several
seeds, through the exported bundle at every precision.

    python benchmarks/quality/text.py [--data mnist] [--seeds 0,1,2] [--epochs N] [--out benchmarks/quality/results]

Each seed trains `gvtool train --data D --captions builtin`'s defaults (or --epochs): a VAE-GAN whose decoder and
discriminator take the all-MiniLM-L6-v2 embedding of one of four captions of each digit. It is exported as
`gvtool export` does (fp32, fp16, int8; the text encoder's int8 is weight-only) and measured with `gvtool eval`'s
evaluate() at each precision, prompted with held-out captions in phrasings training never used: the share of
samples the evaluator reads as the prompted digit, the thickness (px) and slant (degrees) measured on the samples
against the described images' (beside the error of drawing the right digit while ignoring them), the share of
prompts saying "thin"/"thick" or "leaning left"/"upright"/"leaning right" whose samples measure so, FD and
precision/recall. Beside them: the median latency of prompt -> images (onnxruntime on the CPU, fp32: one prompt
tokenised and encoded, then the batch decoded) at batch 1 and 16. Finished runs and bundles are reused (common.py).

Writes text.json (every run and precision), text.md (mean ± std, worst seed in brackets) and text-samples.png (seed
0's fp32 bundle, a row of 8 samples per prompt of PROMPTS).
"""

from __future__ import annotations

import dataclasses
import statistics
from pathlib import Path

import torch
from common import get, measured, seeds_main, summary  # benchmarks/quality/common.py, beside this script

from gvtool.train.config import TrainConfig

FIGURES = [("prompted digit", ("text", "class_accuracy"), "max"),
           ("thickness error px", ("text", "thickness", "mean_abs_error"), "min"),
           ("ignoring it", ("text", "thickness", "mean_abs_error_ignoring_it"), "min"),
           ("thin/thick met", ("text", "thickness", "band_met"), "max"),
           ("slant error °", ("text", "slant", "mean_abs_error"), "min"),
           ("ignoring it", ("text", "slant", "mean_abs_error_ignoring_it"), "min"),
           ("slant met", ("text", "slant", "band_met"), "max"),
           ("FD", ("frechet_distance",), "min"), ("precision", ("prdc", "precision"), "max"),
           ("recall", ("prdc", "recall"), "max")]
LATENCY_BATCHES = (1, 16)
PROMPTS = ("a thin 4", "a thick 4", "a 7 leaning left", "a 7 leaning right", "a small thin 2", "a bold wide 0",
           "someone drew an upright 1", "a heavy eight tilted right")


def prompt_latency_ms(bundle_dir: Path, seconds: float = 1.0) -> dict[str, float]:
    from gvtool.bench.core import time_calls
    from gvtool.runtime.model import load

    with load(bundle_dir, backend="onnxruntime", device="cpu", operation="sample") as model:
        return {str(n): 1e3 * statistics.median(time_calls(lambda: model.sample(n, seed=0, labels=PROMPTS[0]),
                                                           warmup_s=0.2, duration_s=seconds))
                for n in LATENCY_BATCHES}


def run_one(data: str, seed: int, epochs: int | None, out: Path) -> list[dict]:
    name = f"text-{data}-s{seed}-t{torch.get_num_threads()}"
    config = TrainConfig.defaults_for(data)
    config = config.replace(model=dataclasses.replace(config.model, conditional=True), seed=seed, captions="builtin",
                            **({"epochs": epochs} if epochs else {}))
    results = measured(config, out, name)
    results[0]["prompt_latency_ms"] = prompt_latency_ms(out / "bundles" / name)
    return [r | {"run_dir": str(out / "runs" / name), "bundle": str(out / "bundles" / name)} for r in results]


def table(results: list[dict]) -> str:
    n_seeds = len({r["seed"] for r in results})
    lines = [f"### {results[0]['data']} with built-in captions ({n_seeds} seed{'s' if n_seeds > 1 else ''}, "
             "mean ± std; worst seed in brackets)", "",
             "| precision | " + " | ".join(label for label, _, _ in FIGURES) + " | prompt → images ms b1 | b16 | train s |",
             "|---" * (len(FIGURES) + 4) + "|"]
    for precision in dict.fromkeys(r["precision"] for r in results):
        rows = [r for r in results if r["precision"] == precision]
        cells = []
        for label, path, better in FIGURES + [(str(n), ("prompt_latency_ms", str(n)), "min") for n in LATENCY_BATCHES] \
                + [("train s", ("train_seconds",), "min")]:
            cells.append(summary([v for r in rows if (v := get(r, path)) is not None], better == "max"))
        lines.append(f"| {precision} | " + " | ".join(cells) + " |")
    return "\n".join(lines + [""])


def samples_grid(bundle: Path, path: Path) -> None:
    from gvtool.imaging import save_grid
    from gvtool.runtime.model import load

    with load(bundle, backend="onnxruntime", device="cpu", operation="sample") as model:
        images = model.sample(8 * len(PROMPTS), seed=0, labels=[p for p in PROMPTS for _ in range(8)])
    save_grid(images, path, ncols=8)
    path.with_suffix(".txt").write_text("".join(f"row {i + 1}: {p}\n" for i, p in enumerate(PROMPTS)))


def main() -> None:
    seeds_main(__doc__.splitlines()[0], "text", run_one, table,
               lambda row, path: samples_grid(Path(row["bundle"]), path))


if __name__ == "__main__":
    main()
