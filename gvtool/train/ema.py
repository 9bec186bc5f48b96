"""An exponential moving average of a network's weights, kept beside the trained network.

A GAN's generator weights keep moving along the adversarial game's rotation after its samples are good;
their running average sits near the centre of that orbit and samples cleaner items (Karras et al. 2018,
Yazici et al. 2019). The average is what a run samples, exports and evaluates; the trained weights go on
training.
"""

from __future__ import annotations

import copy
from typing import Iterable

import torch
from torch import nn

# Early in a run the weights move fast and an average over ~1/(1-decay) steps would hold on to the random
# start: the effective decay ramps up as (1 + step) / (WARMUP + step), as in TensorFlow's ExponentialMovingAverage.
WARMUP = 10
EMA_NAME = "decoder_ema"  # the decoder's average's name among a checkpoint's networks


def average_name(network: str) -> str:
    """The name a network's weight average has among a checkpoint's networks: decoder -> decoder_ema."""
    return f"{network}_ema"
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


def effective_decay(decay: float, step: int) -> float:
    """The decay used at `step` (1-based count of updates so far): min(decay, (1 + step) / (WARMUP + step))."""
    return min(decay, (1.0 + step) / (WARMUP + step))


class WeightAverage:
    """average <- d * average + (1 - d) * weights after each optimizer step; buffers (batch-norm running
    statistics) are copied, since they are statistics of the current weights rather than weights.

    Copied statistics belong to the trained weights, not to the average: the averaged layers produce other
    activations, and normalising them with the trained network's mean and variance shifts every sample
    (MNIST seed 1: FD 59 with copied statistics, 15 with its own). `recalibrate` measures the average's own
    ("standing statistics", Brock et al. 2019) before it is sampled or saved."""

    def __init__(self, net: nn.Module, decay: float):
        self.decay = decay
        self.net = copy.deepcopy(net).requires_grad_(False).eval()  # same device and memory layout as `net`

    @torch.no_grad()
    def update(self, net: nn.Module, step: int) -> None:
        weight = 1.0 - effective_decay(self.decay, step)
        ours, theirs = list(self.net.parameters()), [p.detach() for p in net.parameters()]
        torch._foreach_lerp_(ours, theirs, weight)  # one fused pass over every tensor
        for mine, current in zip(self.net.buffers(), net.buffers()):
            mine.copy_(current)

    @torch.no_grad()
    def update_at_rate(self, net: nn.Module, rate: torch.Tensor) -> None:
        """`update` with 1 - decay given as a 0-d tensor on the weights' device (filled in before each step), so
        that a captured CUDA graph reads the step's own rate rather than the one it was captured with. The same
        arithmetic as `update`, to the bit."""
        ours, theirs = list(self.net.parameters()), [p.detach() for p in net.parameters()]
        torch._foreach_lerp_(ours, theirs, [rate] * len(ours))
        for mine, current in zip(self.net.buffers(), net.buffers()):
            mine.copy_(current)

    @torch.no_grad()
    def recalibrate(self, batches: Iterable[tuple[torch.Tensor, ...]]) -> None:
        """Batch-norm running statistics of the average, as the plain mean over its own activations on `batches`
        (each a tuple of the network's inputs). A network without batch norm is left as it is."""
        norms = [m for m in self.net.modules() if isinstance(m, _NORMS)]
        if not norms:
            return
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over the batches, not an exponential one
        self.net.train()
        try:
            for inputs in batches:
                self.net(*inputs)
        finally:
            self.net.eval()
            for m, momentum in zip(norms, momenta):
                m.momentum = momentum
