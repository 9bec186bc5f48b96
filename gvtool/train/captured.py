"""The whole training step as one CUDA graph: one launch per step in place of hundreds.

A default MNIST step launches a few hundred small kernels (three forwards, three backwards, three optimizer steps,
the decoder's weight average), and at these network sizes the GPU finishes each before Python has launched the
next: the step is bound by the host. Captured once with torch.cuda.graph and replayed, the same kernels run back
to back from one launch (Nvidia's and PyTorch's "whole-network capture").

What a captured step needs, and how this module gives it:
- static inputs: the batch's item indices are copied into one fixed index tensor; the gather from the dataset
  (already on the device) and the pixel mapping happen inside the graph;
- no host values inside: the weight average's rate changes every step (its warm-up ramp), so it is a device
  scalar filled before each replay, not a Python float baked into the graph;
- no host reads: the losses and metrics come out as one static (K,) tensor, copied after each replay into a row
  of a window the metrics log reads once per flush;
- capturable optimizers: Adam keeps its step count on the device (loop._adam(..., capturable=True));
- warm-up: the first WARMUP_STEPS steps run eagerly on the capture's own side stream (lazy initialisation,
  cuDNN's choices, the optimizers' state), then the step is captured; every step, warm-up included, is a real
  training step, so a captured run trains the same steps as an eager one.

StaticStep is the same step on the same static buffers without the graph: what the CPU runs when the tests check
that this path trains exactly like the eager loop.
"""

from __future__ import annotations

from typing import Callable

import torch

from gvtool.train.ema import WeightAverage, effective_decay

WARMUP_STEPS = 3


class StaticStep:
    """The step on static buffers: `body(index)` trains one step on the items at `index` and returns its losses
    and metrics, as 0-d tensors in a fixed order. Each call copies the index in, sets the average's rate, runs
    the body (and the average), and copies the values into row `slot` of the window."""

    def __init__(self, body: Callable[[torch.Tensor], dict[str, torch.Tensor]], batch: int, device: torch.device,
                 average: WeightAverage | None, decoder: torch.nn.Module, window_rows: int):
        self.body, self.average, self.decoder = body, average, decoder
        self.index = torch.zeros(batch, dtype=torch.int64, device=device)
        self.rate = torch.zeros((), dtype=torch.float32, device=device)  # 1 - the average's decay at this step
        self.window_rows = window_rows
        self.keys: list[str] | None = None
        self.window: torch.Tensor | None = None  # (window_rows, K): one row per step since the last flush
        self.values: torch.Tensor | None = None  # (K,): the last step's, static where the step is captured
        self.device = device

    def _run_body(self) -> torch.Tensor:
        values = self.body(self.index)
        if self.average is not None:
            self.average.update_at_rate(self.decoder, self.rate)
        if self.keys is None:
            self.keys = list(values)
        return torch.stack([values[k].float() for k in self.keys])

    def _step(self) -> torch.Tensor:
        return self._run_body()

    def __call__(self, index: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        """Train one step on the items at `index`; `step` is the count of updates after it (the average's ramp).
        Returns this step's values as views of its window row (read before the window wraps: at each flush)."""
        self.index.copy_(index, non_blocking=True)
        if self.average is not None:
            self.rate.fill_(1.0 - effective_decay(self.average.decay, step))
        values = self._step()
        if self.window is None:
            self.window = torch.zeros(self.window_rows, len(self.keys), device=self.device)
        row = self.window[(step - 1) % self.window_rows]
        row.copy_(values)
        return {k: row[i] for i, k in enumerate(self.keys)}


class CapturedStep(StaticStep):
    """StaticStep replayed from a CUDA graph after WARMUP_STEPS eager steps on the capture stream."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.stream = torch.cuda.Stream(self.device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.eager_steps = 0

    def _step(self) -> torch.Tensor:
        if self.graph is not None:
            self.graph.replay()
            return self.values
        current = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(current)
        if self.eager_steps < WARMUP_STEPS:
            with torch.cuda.stream(self.stream):
                values = self._run_body()
            current.wait_stream(self.stream)
            self.eager_steps += 1
            return values
        # Gradients are set to None inside the body before its backward passes, so the captured backward allocates
        # them in the graph's own memory pool, at addresses every replay writes again
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, stream=self.stream):
            self.values = self._run_body()
        current.wait_stream(self.stream)
        self.graph.replay()  # capture records the step without running it
        return self.values


def can_capture(device: torch.device, precision: str, distributed: bool) -> tuple[bool, str]:
    """Whether the step can be captured here, and why not when it cannot."""
    if device.type != "cuda":
        return False, "CUDA graphs need a CUDA device"
    if precision == "fp16":
        return False, "fp16's loss scaling checks for infinities on the host every step"
    if distributed:
        return False, "a torchrun world steps eagerly (DistributedDataParallel's gradient hooks)"
    return True, ""
