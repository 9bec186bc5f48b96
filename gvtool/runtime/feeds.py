"""Inputs for a bundle's graphs, made from their declared tensors alone: what a benchmark feeds. numpy only."""

from __future__ import annotations

import numpy as np

from gvtool.manifest import BATCH_AXIS, MASK_INPUT, ModelInfo, TensorSpec, cycled_labels, item_name

ITEM_LIKE = ("images", "vectors", "coarse")  # fed uniform on [-1, 1], the model range of images
# A text encoder's tokens: a prompt of PROMPT_PIECES word pieces (ids from a range every BERT vocabulary holds), the
# rest padding. Its latency does not depend on the ids, nor on the padding: the graph's length is fixed.
PROMPT_PIECES = 12
TOKEN_IDS = (1000, 2000)


def feeds_for(model: ModelInfo, graph: str, batch: int, rng: np.random.Generator,
              inputs: tuple[TensorSpec, ...] | None = None) -> dict[str, np.ndarray]:
    """Inputs of one batch, by the graph's input tensors (`inputs`; None: the encoder's items, or the decoder's
    latents and labels, from the model block): cycling labels, items on [-1, 1], N(0, I) latents and noise."""
    if inputs is None:
        k, item = model.latent_dim, item_name(model.data_kind)
        inputs = ((TensorSpec(item, "float32", (BATCH_AXIS, *model.item_shape)),) if graph == "encoder" else
                  (TensorSpec("latents", "float32", (BATCH_AXIS, k)),)
                  + ((TensorSpec("labels", "int64", (BATCH_AXIS,)),) if model.conditional else ()))
    feeds = {}
    for spec in inputs:
        shape = (batch, *spec.shape[1:])
        if spec.name == "labels":
            feeds[spec.name] = np.array(cycled_labels(batch, model.num_classes), dtype=np.int64)
        elif spec.name == "input_ids":
            feeds[spec.name] = rng.integers(*TOKEN_IDS, size=shape).astype(np.int64)
        elif spec.name == "attention_mask":
            feeds[spec.name] = (np.arange(shape[1]) < min(PROMPT_PIECES, shape[1])).astype(np.int64)[None].repeat(batch, 0)
        elif spec.name == MASK_INPUT:  # a joint model's encoder: the top half missing
            feeds[spec.name] = np.ones(shape, np.float32)
            feeds[spec.name][:, :, :shape[2] // 2] = 0.0
        elif spec.name in ITEM_LIKE:
            feeds[spec.name] = rng.uniform(-1, 1, shape).astype(np.float32)
        else:
            feeds[spec.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds
