"""The six models of the tool (gan, vae, vaegan, ali, prior, hier) with the same networks and budget, over several
seeds, through the exported bundle: the paper's claims, measured.

    python benchmarks/quality/run.py [--data ring8,grid25,mnist,stacked-mnist] [--models gan,vae,vaegan,ali,prior,hier]
                                     [--seeds 0,1,2] [--epochs N] [--out benchmarks/quality/results]

Each (data, model, seed) is trained with `gvtool train`'s defaults (or --epochs): every model the same epochs of the
same data. A prior is a second stage: it trains `gvtool train --model prior`'s defaults over the vaegan run of the
same data and seed (trained first when missing), and its time is both stages'. Each run is exported as
`gvtool export` does (fp32, fp16 and int8 for images; fp32 and fp16 for vectors), and each precision measured with
`gvtool eval`'s evaluate() (eval seed 0, the command's default), with the latency of the bundle's whole sampling
chain (onnxruntime on the CPU, fp32; median of timed calls after a warm-up) at batch 1 and 64. Finished runs and
bundles are reused when their config and checkpoint match, so the script can be stopped and run again. Runs are
named by their thread count too: under OMP_NUM_THREADS=1 the same seeds are other runs.
Writes, per data set, DATA.json (every run and precision), DATA.md (mean and spread per model and precision,
with the training time) and DATA-samples.png (the first seed's samples of the models side by side). On this
project's 2-core CPU a 2-D run takes under two minutes, an MNIST or Stacked MNIST run up to 5 minutes.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
from pathlib import Path

import torch
from common import get, measured, trained, write_results  # benchmarks/quality/common.py, beside this script
from PIL import Image, ImageDraw

from gvtool.train import rundir
from gvtool.train.config import TrainConfig

# (label, path in evaluate()'s result) of the figures tabulated per data kind
FIGURES = {
    "vector": [("modes covered", ("mode_coverage", "modes_covered")), ("high quality", ("mode_coverage", "high_quality")),
               ("KL to uniform", ("mode_coverage", "kl_to_uniform"))],
    "image": [("classes covered", ("class_coverage", "classes_covered")),
              ("KL to uniform", ("class_coverage", "kl_to_uniform")), ("confident", ("class_coverage", "confident")),
              ("FD", ("frechet_distance",)),
              ("precision", ("prdc", "precision")), ("recall", ("prdc", "recall")),
              ("coverage", ("prdc", "coverage")), ("held-out recon MSE", ("held_out_recon_mse",))],
}
LATENCY = [("sample ms b1", ("sample_latency_ms", "1")), ("sample ms b64", ("sample_latency_ms", "64"))]


def run_one(data: str, model: str, seed: int, epochs: int | None, out: Path) -> list[dict]:
    """One result per precision of the run's bundle."""
    # The thread count is part of a run's identity: another count sums in another order and sends a GAN's
    # trajectory elsewhere (ring8 seed 2 at the defaults of the time: 95.2% high quality on one thread, 20.2% on two).
    name = f"{data}-{model}-s{seed}-t{torch.get_num_threads()}"
    config = TrainConfig.defaults_for(data)
    config = config.replace(seed=seed, **({"epochs": epochs} if epochs else {}))
    before = 0.0
    if model == "prior":  # the second stage, over the vaegan of this data and seed
        base_name = f"{data}-vaegan-s{seed}-t{torch.get_num_threads()}"
        before = trained(config.replace(model=dataclasses.replace(config.model, kind="vaegan")),
                         out / "runs" / base_name)
        config = TrainConfig.for_prior(TrainConfig.from_file(out / "runs" / base_name / rundir.CONFIG_FILE),
                                       out / "runs" / base_name).replace(seed=seed)
    else:
        config = config.replace(model=dataclasses.replace(config.model, kind=model))
    return [r | {"run_dir": str(out / "runs" / name), "train_seconds": r["train_seconds"] + before}
            for r in measured(config, out, name)]


def table(results: list[dict]) -> str:
    lines = []
    for data in dict.fromkeys(r["data"] for r in results):
        rows = [r for r in results if r["data"] == data]
        figures = FIGURES["vector" if "mode_coverage" in rows[0] else "image"] + LATENCY
        n_seeds = len({r["seed"] for r in rows})
        lines += [f"### {data} ({n_seeds} seed{'s' if n_seeds > 1 else ''}, mean ± std)", "",
                  "| model | precision | " + " | ".join(label for label, _ in figures) + " | train s |",
                  "|---" * (len(figures) + 3) + "|"]
        for model, precision in dict.fromkeys((r["model"], r["precision"]) for r in rows):
            cells = []
            for _, path in figures + [("train s", ("train_seconds",))]:
                got = [v for r in rows if (r["model"], r["precision"]) == (model, precision)
                       and (v := get(r, path)) is not None]
                values = [v for v in got if math.isfinite(v)]  # a KL with no high-quality sample is infinite
                cell = "—" if not values else (f"{statistics.mean(values):.3g} ± "
                                               f"{statistics.stdev(values) if len(values) > 1 else 0:.2g}")
                cells.append(cell + (f" (inf in {len(got) - len(values)})" if len(values) < len(got) else ""))
            lines.append(f"| {model} | {precision} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def side_by_side(results: list[dict], out: Path) -> None:
    for data in dict.fromkeys(r["data"] for r in results):
        firsts = [r for r in results if r["data"] == data and r["seed"] == min(x["seed"] for x in results)
                  and r["precision"] == "fp32"]
        images = []
        for r in firsts:
            samples = sorted((Path(r["run_dir"]) / rundir.SAMPLES_DIR).glob("epoch_*.png"))
            if samples:
                images.append((r["model"], Image.open(samples[-1]).convert("RGB")))
        if images:
            header = 16  # each model's name above its samples
            canvas = Image.new("RGB", (sum(i.width for _, i in images) + 8 * (len(images) - 1),
                                       header + max(i.height for _, i in images)), "white")
            draw, x = ImageDraw.Draw(canvas), 0
            for model, image in images:
                draw.text((x + 2, 2), model, fill="black")
                canvas.paste(image, (x, header))
                x += image.width + 8
            canvas.save(out / f"{data}-samples.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="ring8,grid25,mnist", help="also stacked-mnist (1,000 modes; longer)")
    parser.add_argument("--models", default="gan,vae,vaegan,ali,prior,hier")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/quality/results"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for data in args.data.split(","):  # one set of files per data set, written as soon as its runs are done
        rows = []
        for seed in (int(s) for s in args.seeds.split(",")):
            for model in args.models.split(","):
                rows += run_one(data, model, seed, args.epochs, args.out)
                print(f"{data} {model} seed {seed}: done", flush=True)
        write_results(args.out, data, rows, table(rows))
        side_by_side(rows, args.out)
        print(table(rows), flush=True)


if __name__ == "__main__":
    main()
