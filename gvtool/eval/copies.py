"""Does a generator copy its training items? Nearest-neighbour distances to the training set, for samples and for
held-out items, which no model has seen and which are as close to the training set as new data naturally is.

A generator that memorises puts many samples closer to some training item than new data ever comes. The check
sets a threshold at a low quantile of the held-out items' nearest-training distances (one half of them), then
counts the share of samples under it, beside the share of the other held-out half: a faithful generator's rate
stays near the held-out rate, a copying one's climbs towards 1.

Imports numpy only; callers pass flattened items (pixels) or features.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gvtool.errors import BadInputError

QUANTILE = 0.05    # "as close as only 1 in 20 new digits comes"
_CHUNK = 1_024     # query rows per distance block: 1,024 x 18,000 float32 distances is 74 MB


@dataclass(frozen=True)
class CopyCheck:
    threshold: float      # the QUANTILE of the first held-out half's nearest-training distances
    sample_rate: float    # share of samples nearer than threshold to their nearest training item
    held_out_rate: float  # the same share for the second held-out half (near QUANTILE for data like the training set)
    median_ratio: float   # median nearest-training distance of the samples / of all held-out items (< 1: nearer)


def nearest_distances(queries: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Euclidean distance from each query row (N, D) to its nearest reference row (M, D): (N,) float64.

    Computed as |q|^2 + |r|^2 - 2 q.r in float32 blocks (one matrix product each): pixel rows of a few thousand
    values keep their distances to ~1e-4 relative, far below the gaps the check compares."""
    q, r = _matrix(queries, "queries"), _matrix(reference, "reference")
    if q.shape[1] != r.shape[1]:
        raise BadInputError(f"queries have {q.shape[1]} values per row but the reference has {r.shape[1]}")
    r_sq = np.einsum("md,md->m", r, r)  # (M,)
    out = np.empty(len(q), dtype=np.float64)
    for start in range(0, len(q), _CHUNK):
        block = q[start:start + _CHUNK]  # (n, D)
        d2 = np.einsum("nd,nd->n", block, block)[:, None] + r_sq[None, :] - 2.0 * block @ r.T  # (n, M)
        out[start:start + _CHUNK] = np.sqrt(np.maximum(d2.min(axis=1), 0.0))
    return out


def copy_check(train: np.ndarray, held_out: np.ndarray, samples: np.ndarray, quantile: float = QUANTILE) -> CopyCheck:
    """train (M, D), held_out (H, D) with H >= 4, samples (N, D): flattened items on one scale."""
    if not 0 < quantile < 1:
        raise BadInputError(f"quantile must be in (0, 1), got {quantile}")
    if len(held_out) < 4:
        raise BadInputError(f"the copy check needs at least 4 held-out items, got {len(held_out)}")
    held = nearest_distances(held_out, train)
    first, second = held[0::2], held[1::2]  # two halves, interleaved: no ordering in the split can bias one
    threshold = float(np.quantile(first, quantile))
    sampled = nearest_distances(samples, train)
    median_held = float(np.median(held))
    return CopyCheck(threshold=threshold, sample_rate=float(np.mean(sampled < threshold)),
                     held_out_rate=float(np.mean(second < threshold)),
                     median_ratio=float(np.median(sampled)) / median_held if median_held > 0 else float("inf"))


def _matrix(x, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise BadInputError(f"{name} must be a 2-D array (N, D) with N, D >= 1, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise BadInputError(f"{name} contains NaN or infinite values")
    return arr
