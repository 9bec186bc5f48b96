"""A joint model's imputation, measured on held-out images: the label from an image, an image from a label, and the
missing part of partly seen images, for every mask kind and share missing (`gvtool eval` of a mvae run or bundle)."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from gvtool.errors import BadInputError
from gvtool.eval.evaluator import predict
from gvtool.manifest import cycled_labels
from gvtool.masks import MASK_KINDS, make_masks
from gvtool.train.data import PIXEL_SCALE

# (uint8 images (N, C, H, W), masks (N, 1, H, W)) -> class probabilities (N, classes)
Classify = Callable[[np.ndarray, np.ndarray], np.ndarray]
# (images, masks, n, seed) -> n completions of each, uint8 (N, n, C, H, W), the observed pixels kept
Impute = Callable[[np.ndarray, np.ndarray, int, int], np.ndarray]

IMPUTE_MISSING = (0.25, 0.5, 0.75)  # the shares of each held-out image hidden, by every mask kind
IMPUTE_DRAWS = 4                    # completions per masked image: their spread is the diversity figure


def imputation_metrics(classify: Classify, impute: Impute, fake: np.ndarray, data_split: tuple, num_classes: int,
                       seed: int, evaluator, meta: dict) -> dict:
    """A joint model of images and labels (its `classify` and `impute`) on the held-out images of `data_split`
    (train, held out), judged by the data's `evaluator` (`meta`: its accuracy and path), in each direction it fills in:

    - label from image: the classifier's accuracy against the true labels and its agreement with the evaluator's
      (whole images), beside the evaluator's own accuracy;
    - image from label: the evaluator's accuracy on the samples `fake` against the labels they were drawn for
      (cycled through the `num_classes` classes, as sampling draws them);
    - the missing part of an image, for every mask kind at 25%, 50% and 75% missing, IMPUTE_DRAWS completions each:
      the squared error on the missing pixels (model range; one completion, and the best of them) against filling
      them with the training mean image; the
      evaluator's accuracy on the completed images against the true labels, and on the mean-filled ones (what the
      visible part alone tells it); the label the model reads from the visible part alone; and the diversity of
      the completions: the per-pixel standard deviation across them over the missing pixels (model range)."""
    train_set, held_out = data_split
    if not len(held_out) or held_out.y is None:
        raise BadInputError("imputation metrics need labelled held-out images; this run holds none out")
    images, labels = held_out.x.numpy(), held_out.y.numpy()
    n, side = len(images), images.shape[-1]
    whole = np.ones((n, 1, side, side), np.float32)
    probabilities = classify(images, whole)
    eval_probs, _ = predict(evaluator, held_out.x)
    sample_probs, _ = predict(evaluator, torch.from_numpy(fake))
    asked = np.array(cycled_labels(len(fake), num_classes))
    result = {"n": n, "draws": IMPUTE_DRAWS,
              "evaluator": {"held_out_accuracy": meta["held_out_accuracy"], "path": meta["path"]},
              "label_from_image": {"accuracy": float((probabilities.argmax(1) == labels).mean()),
                                   "agreement_with_evaluator": float((probabilities.argmax(1) == eval_probs.argmax(1)).mean()),
                                   "evaluator_accuracy": float((eval_probs.argmax(1) == labels).mean())},
              "image_from_label": {"accuracy": float((sample_probs.argmax(1) == asked).mean()), "n": len(fake)},
              "inpainting": {}}
    mean_image = train_set.x.double().mean(dim=0).numpy()  # uint8 scale, (C, H, W)
    for missing in IMPUTE_MISSING:
        rows = {}
        for i, kind in enumerate(MASK_KINDS):
            masks = make_masks(kind, n, side, missing, seed + i)
            hidden = np.broadcast_to(masks == 0, images.shape)
            completed = impute(images, masks, IMPUTE_DRAWS, seed + i).astype(np.float64)  # (N, D, C, H, W)
            real = images.astype(np.float64)
            errors = ((completed - real[:, None]) / PIXEL_SCALE) ** 2
            mean_filled = np.where(hidden, np.rint(mean_image), real)
            completed_probs, _ = predict(evaluator, torch.from_numpy(completed.reshape(-1, *images.shape[1:])
                                                                     .astype(np.uint8)))
            filled_probs, _ = predict(evaluator, torch.from_numpy(mean_filled.astype(np.uint8)))
            read = classify(images, masks)
            rows[kind] = {
                "masked_mse": float((errors * hidden[:, None]).sum() / (hidden.sum() * IMPUTE_DRAWS)),
                "masked_mse_best": float(((errors * hidden[:, None]).sum(axis=(2, 3, 4)) / hidden.sum(axis=(1, 2, 3))[:, None])
                                         .min(axis=1).mean()),
                "masked_mse_mean_fill": float((((mean_filled - real) / PIXEL_SCALE) ** 2 * hidden).sum() / hidden.sum()),
                "evaluator_accuracy": float((completed_probs.argmax(1) == np.repeat(labels, IMPUTE_DRAWS)).mean()),
                "evaluator_accuracy_mean_fill": float((filled_probs.argmax(1) == labels).mean()),
                "label_accuracy": float((read.argmax(1) == labels).mean()),
                "diversity": float((completed.std(axis=1) / PIXEL_SCALE * hidden).sum() / hidden.sum()),
            }
        average = {key: float(np.mean([row[key] for row in rows.values()])) for key in next(iter(rows.values()))}
        result["inpainting"][f"{missing:g}"] = {"mean_over_kinds": average, "by_kind": rows}
    return result
