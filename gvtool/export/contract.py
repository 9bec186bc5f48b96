"""Each graph's input/output contract, declared once and copied into the manifest.

The batch axis is dynamic ("batch"); every other dimension is fixed by the model. Inputs and
outputs are float32 in the model's range (images in [-1, 1]; the manifest's `pixels` says how to
map uint8 pixels); labels are int64.
"""

from __future__ import annotations

from gvtool.manifest import BATCH_AXIS as BATCH
from gvtool.manifest import ModelInfo, TensorSpec, item_name



def encoder_contract(model: ModelInfo) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """images (B, C, H, W) -> mean (B, K), logvar (B, K). The encoder takes no labels."""
    k = model.latent_dim
    inputs = (TensorSpec(item_name(model.data_kind), "float32", (BATCH, *model.item_shape)),)
    outputs = (TensorSpec("mean", "float32", (BATCH, k)), TensorSpec("logvar", "float32", (BATCH, k)))
    return inputs, outputs


def decoder_contract(model: ModelInfo) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """latents (B, K) [+ labels (B,) int64] -> images (B, C, H, W) or vectors (B, D)."""
    inputs = (TensorSpec("latents", "float32", (BATCH, model.latent_dim)),)
    if model.conditional:
        inputs += (TensorSpec("labels", "int64", (BATCH,)),)
    outputs = (TensorSpec(item_name(model.data_kind), "float32", (BATCH, *model.item_shape)),)
    return inputs, outputs


CONTRACTS = {"encoder": encoder_contract, "decoder": decoder_contract}
