"""Sample-quality metrics for `gvtool eval`: mode coverage on the 2-D mixtures, class coverage on images,
Fréchet distance and precision / recall / density / coverage in a feature space.

Imports numpy, scipy and prdc only (no torch): callers pass centres, classifier probabilities or features.
"""

from __future__ import annotations

import contextlib
import io
import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import linalg
from scipy.spatial.distance import cdist

from gvtool.errors import BackendUnavailableError, BadInputError

# pytorch-fid's values: the regulariser added to both covariances when sqrtm(Sa Sb) is not (nearly) real,
# and how large an imaginary part on the diagonal of the square root may be before that retry.
_FID_EPS = 1e-6
_FID_IMAG_ATOL = 1e-3
# Largest accepted ||root @ root - m||_F / ||m||_F: scipy's own accuracy estimate, checked instead of its warning.
_SQRTM_RTOL = 1e-6
# Softmax outputs in float32 sum to 1 only up to rounding.
_PROB_SUM_ATOL = 1e-3


@dataclass(frozen=True)
class ModeCoverage:
    modes_covered: int
    n_modes: int
    high_quality: float  # fraction of samples within n_sigma * std of their nearest centre, in [0, 1]
    kl_to_uniform: float  # nats; math.inf when no sample is high quality
    counts: tuple[int, ...]  # high-quality samples nearest to each mode


@dataclass(frozen=True)
class ClassCoverage:
    classes_covered: int
    n_classes: int
    kl_to_uniform: float  # nats, of the argmax histogram of all samples
    confident: float  # fraction of samples whose top probability is >= threshold
    counts: tuple[int, ...]  # samples whose argmax is each class


@dataclass(frozen=True)
class PRDC:
    precision: float
    recall: float
    density: float
    coverage: float
    k: int


def kl_to_uniform(counts) -> float:
    """KL(p || uniform) in nats for the histogram p_k = c_k / sum(c) over K bins: sum_k p_k log(p_k K), 0 log 0 = 0.

    An empty histogram (all counts zero) has no distribution to compare: math.inf, the worst possible score.
    """
    c = np.asarray(counts, dtype=np.float64)
    if c.ndim != 1 or c.size == 0:
        raise BadInputError(f"counts must be a non-empty 1-D sequence, got shape {c.shape}")
    if not np.all(np.isfinite(c)) or np.any(c < 0):
        raise BadInputError(f"counts must be finite and non-negative, got {c.tolist()}")
    total = c.sum()
    if total == 0:
        return math.inf
    p = c[c > 0] / total
    return max(0.0, float(np.sum(p * np.log(p * c.size))))


def mode_coverage(samples: np.ndarray, centres: np.ndarray, std: float, n_sigma: float = 3.0) -> ModeCoverage:
    """The VEEGAN / PacGAN protocol: each sample goes to its nearest centre (Euclidean); it is high quality if it
    lies within n_sigma * std of it; a mode is covered if at least one high-quality sample is nearest to it.
    The KL compares the histogram of high-quality samples over the modes with the uniform (math.inf if none).

    samples (N, D), centres (K, D). Note that with D = 2 and n_sigma = 3 a true sample is high quality with
    probability 1 - exp(-4.5) ~ 0.989 (its distance is Rayleigh distributed), not 0.997 as in 1-D.
    """
    x = _finite_matrix(samples, "samples")
    c = _finite_matrix(centres, "centres")
    if x.shape[1] != c.shape[1]:
        raise BadInputError(f"samples have {x.shape[1]} dimensions but centres have {c.shape[1]}")
    if not (math.isfinite(std) and std > 0):
        raise BadInputError(f"std must be a positive number, got {std}")
    if not (math.isfinite(n_sigma) and n_sigma > 0):
        raise BadInputError(f"n_sigma must be a positive number, got {n_sigma}")
    distances = cdist(x, c)  # (N, K)
    nearest = distances.argmin(axis=1)  # (N,)
    good = distances[np.arange(len(x)), nearest] <= n_sigma * std  # (N,)
    counts = np.bincount(nearest[good], minlength=len(c))  # (K,)
    return ModeCoverage(
        modes_covered=int(np.count_nonzero(counts)),
        n_modes=len(c),
        high_quality=float(good.mean()),
        kl_to_uniform=kl_to_uniform(counts),
        counts=tuple(int(n) for n in counts),
    )


def class_coverage(probabilities: np.ndarray, threshold: float = 0.9) -> ClassCoverage:
    """Coverage of an evaluator classifier's classes, as the Stacked-MNIST papers report it.

    probabilities (N, C), rows summing to 1. A sample's class is its argmax; coverage and KL to uniform use the
    argmax histogram of all samples; `confident` is the share whose top probability is >= threshold.
    """
    p = _finite_matrix(probabilities, "probabilities")
    if np.any(p < 0) or np.any(p > 1):
        raise BadInputError("probabilities must lie in [0, 1]")
    sums = p.sum(axis=1)
    if not np.allclose(sums, 1.0, atol=_PROB_SUM_ATOL):
        worst = float(sums[np.argmax(np.abs(sums - 1.0))])
        raise BadInputError(f"each row of probabilities must sum to 1 (softmax outputs), found a row summing to {worst}")
    if not 0 < threshold <= 1:
        raise BadInputError(f"threshold must be in (0, 1], got {threshold}")
    counts = np.bincount(p.argmax(axis=1), minlength=p.shape[1])  # (C,)
    return ClassCoverage(
        classes_covered=int(np.count_nonzero(counts)),
        n_classes=p.shape[1],
        kl_to_uniform=kl_to_uniform(counts),
        confident=float(np.mean(p.max(axis=1) >= threshold)),
        counts=tuple(int(n) for n in counts),
    )


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to features a (N, D) and b (M, D), as pytorch-fid computes it:
    ||mu_a - mu_b||^2 + Tr(Sa + Sb - 2 sqrtm(Sa Sb)), clipped at 0 against rounding.
    """
    a = _finite_matrix(a, "a", min_rows=2)
    b = _finite_matrix(b, "b", min_rows=2)
    if a.shape[1] != b.shape[1]:
        raise BadInputError(f"feature sets differ in dimension: {a.shape[1]} and {b.shape[1]}")
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    # atleast_2d: np.cov of one feature is a 0-d array
    sa, sb = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    covmean = _real_sqrtm(sa @ sb)
    if covmean is None:  # singular products can give a complex or non-finite root: regularise and retry
        offset = np.eye(len(sa)) * _FID_EPS
        covmean = _real_sqrtm((sa + offset) @ (sb + offset))
        if covmean is None:
            raise BadInputError("the covariance product has no real square root, even with "
                                f"{_FID_EPS} added to both diagonals: the features are degenerate")
    diff = mu_a - mu_b
    value = diff @ diff + np.trace(sa) + np.trace(sb) - 2.0 * np.trace(covmean)
    return max(0.0, float(value))


def prdc(real: np.ndarray, fake: np.ndarray, k: int = 5) -> PRDC:
    """Precision, recall (Kynkäänniemi et al. 2019), density and coverage (Naeem et al. 2020) of fake features
    (M, D) against real features (N, D), with k-nearest-neighbour balls, computed by the authors' `prdc` package.
    """
    try:  # optional extra `eval`; imported here so the other metrics work without it
        from prdc import compute_prdc
    except ImportError as e:
        raise BackendUnavailableError("precision/recall/density/coverage need the prdc package: "
                                      "pip install 'gvtool[eval]'") from e

    real = _finite_matrix(real, "real")
    fake = _finite_matrix(fake, "fake")
    if real.shape[1] != fake.shape[1]:
        raise BadInputError(f"feature sets differ in dimension: {real.shape[1]} and {fake.shape[1]}")
    if not (isinstance(k, (int, np.integer)) and k >= 1):
        raise BadInputError(f"k must be a positive integer, got {k!r}")
    # prdc partitions each row of distances at index k + 1 (the point itself is its 0th neighbour)
    for name, x in (("real", real), ("fake", fake)):
        if len(x) < k + 2:
            raise BadInputError(f"{name} has {len(x)} rows; k = {k} needs at least {k + 2}")
    with contextlib.redirect_stdout(io.StringIO()):  # compute_prdc prints the set sizes
        scores = compute_prdc(real_features=real, fake_features=fake, nearest_k=int(k))
    return PRDC(precision=float(scores["precision"]), recall=float(scores["recall"]),
                density=float(scores["density"]), coverage=float(scores["coverage"]), k=int(k))


def _real_sqrtm(m: np.ndarray) -> np.ndarray | None:
    """sqrtm(m) with its negligible imaginary part dropped, or None if it is not finite, not accurate or not nearly
    real."""
    with warnings.catch_warnings():
        # scipy warns on every singular m (any N <= D feature set); the residual below says whether the root is good
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        root = linalg.sqrtm(m)
    if not np.all(np.isfinite(root)):
        return None
    scale = np.linalg.norm(m)
    if scale > 0 and np.linalg.norm(root @ root - m) > _SQRTM_RTOL * scale:
        return None
    if np.iscomplexobj(root):
        if not np.allclose(np.diagonal(root).imag, 0.0, atol=_FID_IMAG_ATOL):
            return None
        root = root.real
    return root


def _finite_matrix(x, name: str, min_rows: int = 1) -> np.ndarray:
    """x as a float64 (N, D) array with N >= min_rows, D >= 1 and only finite values, else BadInputError."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] < min_rows or arr.shape[1] < 1:
        raise BadInputError(f"{name} must be a 2-D array (N, D) with N >= {min_rows} and D >= 1, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise BadInputError(f"{name} contains NaN or infinite values")
    return arr
