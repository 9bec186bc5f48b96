"""Missing modalities (gvtool train --model mvae): a joint model of images and labels, given part of what it models,
fills in the rest. Over several seeds, through the exported bundle at every precision.

    python benchmarks/quality/impute.py [--data mnist] [--seeds 0,1,2] [--epochs N] [--captions builtin]
                                        [--out benchmarks/quality/results]

Each seed trains `gvtool train --model mvae`'s defaults (or --epochs): an expert per modality (a partly observed
image with its mask; a label), a product of their Gaussians as the posterior of what is observed, the VAE-GAN's
decoder for the image and a small classifier for the label. It is exported as `gvtool export` does (fp32, fp16, int8)
and measured with `gvtool eval`'s evaluate() at each precision on the held-out images: the label from the image
(against the true labels and the evaluator's), the image from a label (does the evaluator read the asked class?),
and inpainting with every mask kind (top, bottom, left, right bands; random pixels) at 25%, 50% and 75% missing,
four completions each: the squared error on the missing pixels (one completion, and the best of four) against
filling them with the mean training image, the evaluator's accuracy on the completed digits against the same on
mean-filled ones, the label read from the visible part alone, and the completions' spread. Beside them: the median
latency of imputing one image and 64 (onnxruntime on the CPU, fp32: encoder -> decoder). Finished runs and bundles
are reused (common.py).

With --captions (builtin: captions made from each digit's label and measured thickness, slant, size and position),
the joint model has a third modality, a caption, and the image drawn from a held-out caption (phrased as no training
caption is) is measured as `gvtool eval` measures a text-conditioned model: the prompted digit and the attribute
errors against the described image's; the results go to impute-captions.json and .md.

Writes impute.json (every run and precision), impute.md (mean ± std, worst seed in brackets) and
impute-samples.png (seed 0's fp32 bundle: per held-out digit, the original, what was seen, four completions; a
row each for the top, left and random masks at 50% and the bottom band at 75%).
"""

from __future__ import annotations

import statistics
from pathlib import Path

import torch
from common import get, measured, seeds_main, summary  # benchmarks/quality/common.py, beside this script

from gvtool.train.config import TrainConfig

MISSING = ("0.25", "0.5", "0.75")
FIGURES = [("label from image", ("imputation", "label_from_image", "accuracy"), "max"),
           ("image from label", ("imputation", "image_from_label", "accuracy"), "max"),
           ("FD", ("frechet_distance",), "min")]
CAPTION_FIGURES = [("image from caption: digit", ("text", "class_accuracy"), "max"),
                   ("slant error °", ("text", "slant", "mean_abs_error"), "min"),
                   ("ignoring it", ("text", "slant", "mean_abs_error_ignoring_it"), "min"),
                   ("thickness error px", ("text", "thickness", "mean_abs_error"), "min"),
                   ("ignoring it", ("text", "thickness", "mean_abs_error_ignoring_it"), "min")]
INPAINT = [("MSE", "masked_mse", "min"), ("best of 4", "masked_mse_best", "min"), ("mean fill", "masked_mse_mean_fill", "min"),
           ("evaluator", "evaluator_accuracy", "max"), ("mean fill", "evaluator_accuracy_mean_fill", "max"),
           ("label", "label_accuracy", "max"), ("spread", "diversity", "max")]
LATENCY_BATCHES = (1, 64)
SHOWN = (("top", 0.5), ("left", 0.5), ("random", 0.5), ("bottom", 0.75))


def impute_latency_ms(bundle_dir: Path, seconds: float = 1.0) -> dict[str, float]:
    import numpy as np

    from gvtool.bench.core import time_calls
    from gvtool.runtime.model import load

    with load(bundle_dir, backend="onnxruntime", device="cpu", operation="impute") as model:
        images = np.random.default_rng(0).integers(0, 256, (max(LATENCY_BATCHES), *model.item_shape[1:],
                                                            model.item_shape[0]), dtype=np.uint8)
        return {str(n): 1e3 * statistics.median(time_calls(lambda: model.impute(images[:n], "top"),
                                                           warmup_s=0.2, duration_s=seconds))
                for n in LATENCY_BATCHES}


def run_one(data: str, seed: int, epochs: int | None, out: Path, captions: str | None = None) -> list[dict]:
    name = f"impute-{data}{'-captions' if captions else ''}-s{seed}-t{torch.get_num_threads()}"
    config = TrainConfig.defaults_for(data, "cpu", "mvae").replace(seed=seed, captions=captions,
                                                                    **({"epochs": epochs} if epochs else {}))
    results = measured(config, out, name)
    results[0]["impute_latency_ms"] = impute_latency_ms(out / "bundles" / name)
    return [r | {"run_dir": str(out / "runs" / name), "bundle": str(out / "bundles" / name)} for r in results]


def table(results: list[dict]) -> str:
    n_seeds = len({r["seed"] for r in results})
    captioned = any("text" in r for r in results)
    figures = FIGURES + (CAPTION_FIGURES if captioned else [])
    modalities = "images, labels and captions" if captioned else "images and labels"
    head = (f"### {results[0]['data']}: a joint model of {modalities} ({n_seeds} seed{'s' if n_seeds > 1 else ''}, "
            "mean ± std; worst seed in brackets)")
    lines = [head, "", "| precision | " + " | ".join(label for label, _, _ in figures)
             + " | impute ms b1 | b64 | train s |", "|---" * (len(figures) + 4) + "|"]
    precisions = list(dict.fromkeys(r["precision"] for r in results))
    for precision in precisions:
        rows = [r for r in results if r["precision"] == precision]
        cells = [summary([v for r in rows if (v := get(r, path)) is not None], better == "max")
                 for _, path, better in figures + [(str(n), ("impute_latency_ms", str(n)), "min") for n in LATENCY_BATCHES]
                 + [("train s", ("train_seconds",), "min")]]
        lines.append(f"| {precision} | " + " | ".join(cells) + " |")
    lines += ["", "Inpainting, mean over the five mask kinds (MSE on the missing pixels, model scale [-1, 1]; "
              "evaluator: its accuracy on the completed digits; label: the model's label from the visible part):", "",
              "| precision | missing | " + " | ".join(label for label, _, _ in INPAINT) + " |",
              "|---" * (len(INPAINT) + 2) + "|"]
    for precision in precisions:
        rows = [r for r in results if r["precision"] == precision]
        for missing in MISSING:
            cells = [summary([v for r in rows if (v := get(r, ("imputation", "inpainting", missing, "mean_over_kinds",
                                                                key))) is not None], better == "max")
                     for _, key, better in INPAINT]
            lines.append(f"| {precision} | {float(missing):.0%} | " + " | ".join(cells) + " |")
    return "\n".join(lines + [""])


def samples_grid(bundle: Path, run_dir: Path, path: Path) -> None:
    import numpy as np

    from gvtool.imaging import save_grid
    from gvtool.masks import make_masks
    from gvtool.runtime.model import load
    from gvtool.train.config import TrainConfig
    from gvtool.train.data import load_dataset, split

    config = TrainConfig.from_file(run_dir / "config.json")
    _, held_out = split(load_dataset(config.data, image_size=config.image_size), config.val_fraction, config.split_seed)
    images = held_out.x[:len(SHOWN)].numpy().transpose(0, 2, 3, 1)
    rows = []
    with load(bundle, backend="onnxruntime", device="cpu", operation="impute") as model:
        for image, (kind, missing) in zip(images, SHOWN):
            mask = make_masks(kind, 1, image.shape[0], missing, seed=0)
            seen = np.where(mask[0].transpose(1, 2, 0) > 0, image, 128).astype(np.uint8)
            completed = model.impute(image[None], mask, n=4, seed=0)[0]
            rows.append(np.concatenate([image[None], seen[None], completed]))
    save_grid(np.concatenate(rows), path, ncols=6)
    path.with_suffix(".txt").write_text("".join(f"row {i + 1}: {kind}, {missing:.0%} missing: original, seen, four "
                                                f"completions\n" for i, (kind, missing) in enumerate(SHOWN)))


def main() -> None:
    seeds_main(__doc__.splitlines()[0], "impute", run_one, table,
               lambda row, path: samples_grid(Path(row["bundle"]), Path(row["run_dir"]), path),
               {"captions": "a third modality: builtin (captions made from the digits) or a captions file"})


if __name__ == "__main__":
    main()
