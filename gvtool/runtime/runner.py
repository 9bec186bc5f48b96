"""What every backend provides: a runner per graph, created once at load and called many times."""

from __future__ import annotations

from typing import Protocol

import numpy as np


class GraphRunner(Protocol):
    """Runs one graph of a bundle.

    Sessions, engines and buffers are made in __init__; run() only copies in, executes and copies out.
    """

    backend: str               # "tensorrt", "onnxruntime-cpu", "onnxruntime-cuda", "onnxruntime-tensorrt"
    max_batch: int | None      # the largest batch one run() takes (an engine's profile max); None: no limit

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """feeds: the graph's inputs by name, batch first, at most max_batch items.
        Returns the outputs in the manifest's order, as host arrays the caller may keep."""
        ...
