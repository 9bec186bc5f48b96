"""Each graph's input/output contract, as the manifest records it: the named tensors of train/graphs.py's modules
with the dynamic batch axis in front.

The batch axis is dynamic ("batch"); every other dimension is fixed by the model. Inputs and outputs are float32 in
the model's range (images in [-1, 1]; the manifest's `pixels` says how to map uint8 pixels); labels are int64.
"""

from __future__ import annotations

from gvtool.manifest import BATCH_AXIS as BATCH
from gvtool.manifest import TensorSpec
from gvtool.train.graphs import Graph


def contract(graph: Graph) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """(inputs, outputs) of a graph module, in its argument and return order."""
    def specs(tensors):
        return tuple(TensorSpec(name, dtype, (BATCH, *shape)) for name, dtype, shape in tensors)
    return specs(graph.inputs), specs(graph.outputs)
