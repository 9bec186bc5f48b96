"""The PyTorch baseline for `gvtool bench`: the run's own checkpoint in eager mode (or torch.compile).

It is what a user would run without gvtool, measured beside the runtime's backends in the same
process and run so that the ratios hold on a noisy machine. It implements the runtime's GraphRunner,
taking and returning numpy arrays like the other backends (zero-copy on the CPU).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from gvtool.errors import BackendUnavailableError
from gvtool.train.trained import load_run
from gvtool.train.graphs import graph_modules


class TorchRunner:
    max_batch = None

    def __init__(self, run_dir: str | Path, graph: str, device: str = "cpu", compile: bool = False):
        run = load_run(run_dir)
        graphs = graph_modules(run.config.model, run.nets)
        if graph not in graphs:
            raise BackendUnavailableError(f"the run has no {graph}")
        module = graphs[graph]
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendUnavailableError(f"torch {torch.__version__} sees no CUDA device")
        self.device = torch.device(device)
        # channels_last, as in training: the faster layout for these convs on oneDNN and cuDNN
        self.module = module.eval().to(self.device, memory_format=torch.channels_last)
        if compile:
            self.module = torch.compile(self.module)
        self.backend = "torch.compile" if compile else "torch"
        self._sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        with torch.inference_mode():
            inputs = [torch.from_numpy(np.ascontiguousarray(a)).to(self.device) for a in feeds.values()]
            out = self.module(*inputs)
            outs = out if isinstance(out, tuple) else (out,)
            return [t.cpu().numpy() for t in outs]

    def sync(self) -> None:
        self._sync()
