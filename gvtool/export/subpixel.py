"""An exact, faster form of the decoder for inference: nearest-upsample + 3x3 conv -> 3x3 conv + pixel shuffle.

Upsampling x2 by nearest neighbour and then a 3x3 convolution computes, for each of the four output
phases (dy, dx), a 3x3 convolution of the LOW-resolution input whose taps are sums of the original
taps (nearest upsampling repeats each input pixel, so several taps read the same one). Stacking the
four phase kernels gives one conv with 4x the output channels at the low resolution, followed by
DepthToSpace (PixelShuffle). Same FLOPs, but no Resize, a quarter of the positions and 4x wider
output channels: onnxruntime's blocked conv wastes most of its work on a 1-channel full-size output,
and this removes that. Batch norm after the conv is folded into it. The result equals the trained
decoder up to float rounding, which export validation measures like any other graph.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from gvtool.train.models import Decoder, DomainDecoder, condition_vector

# Rewrite only convs this narrow: a wide conv at full resolution already runs near peak, and its
# sub-pixel form (4x channels at a quarter of the positions, then a large DepthToSpace) measured slower
# in onnxruntime (the 64->32 stage of the MNIST decoder: 2.5 ms as Resize + Conv, 3.3 + 1.4 ms rewritten).
NARROW = 8

# Which original tap rows (offsets -1, 0, +1) land on each low-res offset (-1, 0, +1), per output phase:
# phase 0 reads rows 2i-1, 2i, 2i+1 -> low-res i-1, i, i; phase 1 reads 2i, 2i+1, 2i+2 -> i, i, i+1.
_TAPS = {0: ((0,), (1, 2), ()), 1: ((), (0, 1), (2,))}


def _phase_kernel(weight: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """(C_out, C_in, 3, 3) kernel of a conv after x2 nearest upsampling -> the kernel of output phase (dy, dx)."""
    out = torch.zeros_like(weight)
    for r, rows in enumerate(_TAPS[dy]):
        for c, cols in enumerate(_TAPS[dx]):
            for a in rows:
                for b in cols:
                    out[:, :, r, c] += weight[:, :, a, b]
    return out


def subpixel_conv(conv: nn.Conv2d, norm: nn.BatchNorm2d | None) -> nn.Sequential:
    """Conv2d(k=3, p=1, s=1) applied after x2 nearest upsampling (and an optional eval-mode BatchNorm2d)
    -> Conv2d at the input resolution + PixelShuffle(2), computing the same values."""
    weight = conv.weight.detach()
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros(weight.shape[0])
    if norm is not None:  # fold: y = gamma * (x - mean) / sqrt(var + eps) + beta
        scale = norm.weight.detach() / torch.sqrt(norm.running_var + norm.eps)
        weight = weight * scale[:, None, None, None]
        bias = (bias - norm.running_mean) * scale + norm.bias.detach()
    c_out, c_in = weight.shape[:2]
    # PixelShuffle takes output channel c of phase (dy, dx) from input channel 4c + 2dy + dx.
    phases = torch.stack([_phase_kernel(weight, dy, dx) for dy in (0, 1) for dx in (0, 1)], dim=1)
    fused = nn.Conv2d(c_in, 4 * c_out, 3, padding=1)
    with torch.no_grad():
        fused.weight.copy_(phases.reshape(4 * c_out, c_in, 3, 3))
        fused.bias.copy_(bias.repeat_interleave(4))
    return nn.Sequential(fused, nn.PixelShuffle(2))


def inference_decoder(decoder: nn.Module) -> nn.Module:
    """A copy of an image decoder whose narrow (Upsample, Conv2d[, BatchNorm2d]) runs (the one making the
    output channels) are rewritten as sub-pixel convs; a translation model's decoder has each domain's rewritten."""
    if isinstance(decoder, DomainDecoder):
        fast = copy.deepcopy(decoder)
        fast.fronts = nn.ModuleList(_rewritten(list(front)) for front in decoder.fronts)
        return fast.eval()
    if decoder.cfg.data_kind != "image":
        return decoder
    return _InferenceDecoder(decoder, _rewritten(list(decoder.net))).eval()


def _rewritten(modules: list[nn.Module]) -> nn.Sequential:
    layers, i = [], 0
    while i < len(modules):
        m = modules[i]
        if (isinstance(m, nn.Upsample) and m.mode == "nearest" and m.scale_factor in (2, 2.0)
                and isinstance(modules[i + 1], nn.Conv2d) and modules[i + 1].kernel_size == (3, 3)
                and modules[i + 1].out_channels < NARROW):
            norm = modules[i + 2] if i + 2 < len(modules) and isinstance(modules[i + 2], nn.BatchNorm2d) else None
            layers.append(subpixel_conv(modules[i + 1], norm))
            i += 3 if norm is not None else 2
        else:
            layers.append(m)
            i += 1
    return nn.Sequential(*layers)


class _InferenceDecoder(nn.Module):
    def __init__(self, decoder: Decoder, net: nn.Sequential):
        super().__init__()
        self.cfg, self.project, self.net = decoder.cfg, decoder.project, net
        self.top, self.base = decoder.top, decoder.base

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        condition = condition_vector(labels, self.cfg, z)
        if condition is not None:
            z = torch.cat([z, condition], dim=1)
        return self.net(self.project(z).view(-1, self.top, self.base, self.base))
