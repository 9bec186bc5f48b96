"""Translation between two image domains (gvtool train --model cyclevae) on the built-in pairs, over several seeds,
through the exported bundle at every precision: does a digit keep its class, does it look like the target domain,
does it come back?

    python benchmarks/quality/translation.py [--pairs mnist:digits,mnist:mnist-m] [--seeds 0,1,2] [--epochs N]
                                             [--class-weight W] [--style-dim S] [--content-adv-weight C]
                                             [--invariance-weight I]
                                             [--out benchmarks/quality/results]

Each (pair, seed) trains with `gvtool train --model cyclevae --data A --data-b B`'s defaults (or --epochs), is
exported as `gvtool export` does (fp32, fp16, int8) and measured with `gvtool eval`'s evaluate() at each precision:
for each direction the share of held-out digits whose translation the target domain's evaluator classifies as the
source digit's label ("class kept"), the translations' FD and precision/recall against the target domain's training
images, and the cycle error A -> B -> A. Beside them: the median latency of a translation (onnxruntime on the CPU,
fp32: encoder of one domain, then decoder of the other, from uint8 images to uint8 images) at batch 1 and 64.
Finished runs and bundles are reused when their config and checkpoint match (see common.py).

Writes translation.json (every run and precision), translation.md (mean ± std per pair and precision) and
translation-PAIR.png (seed 0's held-out digits and their translations both ways, from its last epoch); with
--style-dim, translation-...-PAIR-styles.png too (seed 0's digits into B with the typical style and three drawn).
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import statistics
from pathlib import Path

import numpy as np
import torch
from common import get, measured, summary, write_results  # benchmarks/quality/common.py, beside this script

from gvtool.train import rundir
from gvtool.train.config import TrainConfig

DIRECTIONS = ("a_to_b", "b_to_a")
FIGURES = [("class kept", ("class_kept",)), ("FD", ("frechet_distance",)), ("precision", ("prdc", "precision")),
           ("recall", ("prdc", "recall")), ("cycle MSE", ("cycle_mse",))]
LATENCY_BATCHES = (1, 64)


def translate_latency_ms(bundle_dir: Path, seconds: float = 1.0) -> dict[str, float]:
    """Median milliseconds of translating A's images into B through the runtime (onnxruntime, CPU, fp32)."""
    from gvtool.bench.core import time_calls
    from gvtool.runtime.model import load

    with load(bundle_dir, backend="onnxruntime", device="cpu", operation="translate") as model:
        c, h, w = model.manifest.model.item_shape
        images = np.random.default_rng(0).integers(0, 256, (max(LATENCY_BATCHES), h, w, c), dtype=np.uint8)
        return {str(n): 1e3 * statistics.median(time_calls(lambda: model.translate(images[:n], "b"), warmup_s=0.2,
                                                           duration_s=seconds))
                for n in LATENCY_BATCHES}


STYLE_SEEDS = (1, 2, 3)  # a style model's grid: its held-out A digits, typical style, then these draws


def styles_grid(bundle_dir: Path, config: TrainConfig, path: Path, n: int = 8) -> None:
    """A style model's translations of n held-out digits of A into B: the originals, the target's typical style,
    then a style drawn with each of STYLE_SEEDS (gvtool translate --style-seed), a row each."""
    from gvtool.imaging import save_grid
    from gvtool.runtime.model import load
    from gvtool.train.data import load_dataset, split

    _, held_out = split(load_dataset(config.data, image_size=config.image_size), config.val_fraction,
                        config.split_seed)
    images = held_out.x[:n].permute(0, 2, 3, 1).numpy()  # (n, H, W, C) uint8
    with load(bundle_dir, backend="onnxruntime", device="cpu", operation="translate") as model:
        rows = [model.translate(images, "b")] + [model.translate(images, "b", seed) for seed in STYLE_SEEDS]
    channels = rows[0].shape[3]
    save_grid(np.concatenate([np.repeat(images, channels // images.shape[3], axis=3), *rows]), path, ncols=n)


# The model options the script takes, each named in the results' file names by its short form: "-cw1-sd4-ca10"
OPTIONS = {"class_weight": "cw", "style_dim": "sd", "content_adv_weight": "ca", "invariance_weight": "inv"}


def setting(options: dict) -> str:
    """The options given, as a name's suffix in OPTIONS' order: "-cw1-sd4-ca10", or "" for the defaults. A style
    size given is named even where it is the default's (0); the weights are named where they are not 0."""
    return "".join(f"-{short}{options[name]:g}" for name, short in OPTIONS.items()
                   if options.get(name) is not None and (options[name] or name == "style_dim"))


def run_one(a: str, b: str, seed: int, epochs: int | None, out: Path, options: dict) -> list[dict]:
    suffix = setting(options)
    name = f"cyclevae-{a}-{b}{suffix}-s{seed}-t{torch.get_num_threads()}"
    config = TrainConfig.defaults_for(a, "cpu", "cyclevae").replace(data_b=b, seed=seed)
    config = config.replace(**({"epochs": epochs} if epochs else {}), model=dataclasses.replace(
        config.model, **{k: v for k, v in options.items() if v is not None}))
    results = measured(config, out, name)
    results[0]["translate_latency_ms"] = translate_latency_ms(out / "bundles" / name)
    if config.model.style_dim and seed == 0:
        styles_grid(out / "bundles" / name, config, out / f"translation{suffix}-{a}-{b}-styles.png")
    return [r | {"pair": f"{a}:{b}", "run_dir": str(out / "runs" / name)} for r in results]


def table(results: list[dict]) -> str:
    lines = []
    for pair in dict.fromkeys(r["pair"] for r in results):
        rows = [r for r in results if r["pair"] == pair]
        a, b = pair.split(":")
        n_seeds = len({r["seed"] for r in rows})
        header = [f"{a} → {b} {label}" for label, _ in FIGURES] + [f"{b} → {a} {label}" for label, _ in FIGURES]
        lines += [f"### {a} ↔ {b} ({n_seeds} seed{'s' if n_seeds > 1 else ''}, mean ± std; worst seed in brackets)", "",
                  "| precision | " + " | ".join(header) + " | translate ms b1 | b64 | train s |",
                  "|---" * (len(header) + 4) + "|"]
        for precision in dict.fromkeys(r["precision"] for r in rows):
            cells = []
            paths = [("translation", d) + path for d in DIRECTIONS for _, path in FIGURES]
            paths += [("translate_latency_ms", str(n)) for n in LATENCY_BATCHES] + [("train_seconds",)]
            for path in paths:
                values = [v for r in rows if r["precision"] == precision and (v := get(r, path)) is not None]
                cells.append(summary(values, path[-1] in ("class_kept", "precision", "recall"),
                                     worst=path[0] == "translation"))
            lines.append(f"| {precision} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", default="mnist:digits,mnist:mnist-m")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--class-weight", type=float, default=0.0,
                        help="train with domain A's labels kept through translation (gvtool train --class-weight); "
                             "the results are then translation-cwW.json and .md, the grids translation-cwW-PAIR.png")
    parser.add_argument("--style-dim", type=int, default=None,
                        help="the style values per domain (gvtool train --style-dim; 0: one shared code) in place of "
                             "the default's; the results are then translation[-cwW]-sdS.*")
    parser.add_argument("--content-adv-weight", type=float, default=0.0,
                        help="align the domains' content codes (gvtool train --content-adv-weight); the results are "
                             "then translation[-cwW][-sdS]-caC.*")
    parser.add_argument("--invariance-weight", type=float, default=0.0,
                        help="content codes blind to recolouring (gvtool train --invariance-weight); the results are "
                             "then translation[-cwW][-sdS][-caC]-invI.*")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/quality/results"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    options = {name: getattr(args, name) for name in OPTIONS}
    stem = "translation" + setting(options)
    rows = []
    for pair in args.pairs.split(","):
        a, b = pair.split(":")
        for seed in (int(s) for s in args.seeds.split(",")):
            rows += run_one(a, b, seed, args.epochs, args.out, options)
            print(f"{pair} seed {seed}: done", flush=True)
        first = min(r["seed"] for r in rows if r["pair"] == pair)
        grids = sorted((Path(next(r["run_dir"] for r in rows if r["pair"] == pair and r["seed"] == first))
                        / rundir.SAMPLES_DIR).glob("epoch_*.png"))
        if grids:
            shutil.copyfile(grids[-1], args.out / f"{stem}-{a}-{b}.png")
        write_results(args.out, stem, rows, table(rows))
    print(table(rows), flush=True)


if __name__ == "__main__":
    main()
