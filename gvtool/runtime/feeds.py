"""Inputs for a bundle's graphs, made from its model block alone: what export validates and calibrates with, and
what a benchmark feeds. numpy only."""

from __future__ import annotations

import numpy as np

from gvtool.manifest import ModelInfo, cycled_labels, item_name


def feeds_for(model: ModelInfo, graph: str, batch: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Inputs of one batch: prior latents (and cycling labels) for the decoder, items in model range for the encoder."""
    if graph == "decoder":
        feeds = {"latents": rng.standard_normal((batch, model.latent_dim)).astype(np.float32)}
        if model.conditional:
            feeds["labels"] = np.array(cycled_labels(batch, model.num_classes), dtype=np.int64)
        return feeds
    return {item_name(model.data_kind): rng.uniform(-1, 1, (batch, *model.item_shape)).astype(np.float32)}
