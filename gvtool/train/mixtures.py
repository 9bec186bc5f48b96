"""The 2-D Gaussian mixtures (ring8, grid25): a toy source whose modes can be counted after training."""

import itertools

import numpy as np

MIXTURES = ("ring8", "grid25")

# The classic mode-collapse benchmarks: tight, well-separated modes, so a sample is easy to
# assign to its nearest centre and missing modes show up at once.
_RING_RADIUS = 1.0
_RING_STD = 0.01
_GRID_STEP_VALUES = (-4.0, -2.0, 0.0, 2.0, 4.0)
_GRID_STD = 0.05


def mixture_centres(name: str) -> tuple[np.ndarray, float]:
    """Return the (K, 2) float64 component centres of mixture `name` and their common std."""
    if name == "ring8":
        angles = 2 * np.pi * np.arange(8) / 8
        centres = _RING_RADIUS * np.stack([np.cos(angles), np.sin(angles)], axis=1)  # (8, 2)
        return centres, _RING_STD
    if name == "grid25":
        centres = np.array(list(itertools.product(_GRID_STEP_VALUES, repeat=2)))  # (25, 2)
        return centres, _GRID_STD
    raise ValueError(f"unknown mixture {name!r}: expected one of {', '.join(MIXTURES)}")


def sample_mixture(name: str, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw n points, components chosen uniformly: ((n, 2) float32 points, (n,) int64 component index)."""
    centres, std = mixture_centres(name)
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(centres), size=n, dtype=np.int64)
    points = centres[labels] + rng.normal(0.0, std, size=(n, 2))
    return points.astype(np.float32), labels
