"""Differentiable augmentation for the discriminator's inputs (DiffAugment, Zhao et al. 2020), and the colour
transforms a translation model's content code learns to ignore.

With 4,500 training digits a discriminator learns the training set by heart within a few epochs and
then rewards the decoder for copying it. Augmenting every item D sees, real and generated alike, with
transforms that are differentiable in the pixels keeps D's task hard without changing what the
decoder is asked to produce: the decoder's gradient flows back through the same transform.
"""

from __future__ import annotations

import torch

from gvtool.train.device import filled

TRANSLATION_RATIO = 0.125  # DiffAugment's default: shifts of up to 1/8 of the side (+-4 px at 28x28)
CUTOUT_RATIO = 0.5         # DiffAugment's default: a square of half the side is blanked


def diff_augment(x: torch.Tensor, policies: tuple[str, ...], draw: torch.Tensor | None = None,
                 n_draws: int | None = None) -> torch.Tensor:
    """Augment images x (B, C, H, W) by each policy in turn ("translation", "cutout").

    draw: (B,) int64 in [0, n_draws), which random draw each item takes; items with the same draw get the same
    transform (a real digit and its reconstruction, so the feature reconstruction compares like with like).
    None: every item its own draw. The caller gives n_draws with a draw: reading it off the tensor would be a
    host sync, which a step captured as a CUDA graph cannot make.
    """
    if not policies:
        return x
    if draw is None:
        draw, n_draws = torch.arange(x.shape[0], device=x.device), x.shape[0]
    elif n_draws is None:
        raise ValueError("diff_augment needs n_draws with a draw")
    for policy in policies:
        x = _POLICIES[policy](x, n_draws, draw)
    return x


def translate(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """x (B, C, H, W) shifted by shift (B, 2) whole pixels (rows down, columns right); the edges are repeated
    into the space uncovered (the background of a digit, the border colour of a photo)."""
    b, c, h, w = x.shape
    rows = (torch.arange(h, device=x.device) - shift[:, :1]).clamp(0, h - 1)  # (B, H): source row of each row
    cols = (torch.arange(w, device=x.device) - shift[:, 1:]).clamp(0, w - 1)  # (B, W)
    x = x.gather(2, rows.view(b, 1, h, 1).expand(b, c, h, w))
    return x.gather(3, cols.view(b, 1, 1, w).expand(b, c, h, w))


def cut_out(x: torch.Tensor, centre: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """x (B, C, H, W) with a size[0] x size[1] rectangle around centre (B, 2) set to 0 (clipped at the edges)."""
    h, w = x.shape[2:]
    top, left = centre[:, :1] - size[0] // 2, centre[:, 1:] - size[1] // 2  # (B, 1) each
    r, c = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    in_rows = (r >= top) & (r < top + size[0])  # (B, H)
    in_cols = (c >= left) & (c < left + size[1])  # (B, W)
    keep = ~(in_rows[:, :, None] & in_cols[:, None, :])  # (B, H, W)
    return x * keep[:, None].to(x.dtype)


def _translation(x: torch.Tensor, n_draws: int, draw: torch.Tensor) -> torch.Tensor:
    h, w = x.shape[2:]
    limit = filled([int(h * TRANSLATION_RATIO + 0.5), int(w * TRANSLATION_RATIO + 0.5)], x.device)
    shift = (torch.rand(n_draws, 2, device=x.device) * (2 * limit + 1)).long() - limit  # uniform in [-limit, limit]
    return translate(x, shift[draw])


def _cutout(x: torch.Tensor, n_draws: int, draw: torch.Tensor) -> torch.Tensor:
    h, w = x.shape[2:]
    size = (int(h * CUTOUT_RATIO + 0.5), int(w * CUTOUT_RATIO + 0.5))
    centre = (torch.rand(n_draws, 2, device=x.device) * filled([h, w], x.device)).long()
    return cut_out(x, centre[draw], size)


_POLICIES = {"translation": _translation, "cutout": _cutout}


def recolour(x: torch.Tensor, inverted: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """x (B, C, H, W) in [-1, 1] with the colours of the items where inverted (B,) bool is set inverted (-x: a light
    stroke on a dark ground becomes a dark one on a light ground) and each item's channels in order (B, C), a
    permutation of range(C) per item."""
    b, c = x.shape[:2]
    x = x.gather(1, order.view(b, c, 1, 1).expand_as(x))
    return torch.where(inverted.view(b, 1, 1, 1), -x, x)


def random_recolour(x: torch.Tensor) -> torch.Tensor:
    """x recoloured (recolour) at random: each item's colours inverted with probability 1/2 and its channels in an
    order drawn uniformly (a grey item keeps its one channel). Drawn on the device: it runs in a captured step."""
    b, c = x.shape[:2]
    order = torch.rand(b, c, device=x.device).argsort(dim=1)
    return recolour(x, torch.rand(b, device=x.device) < 0.5, order)
