"""The copy check: nearest-neighbour distances, and rates on generators that copy and generators that do not."""

from __future__ import annotations

import numpy as np
import pytest

from gvtool.errors import BadInputError
from gvtool.eval.copies import QUANTILE, copy_check, nearest_distances


def _cloud(n, seed, d=20):
    return np.random.default_rng(seed).normal(size=(n, d))


class TestNearestDistances:
    def test_known_points(self):
        reference = np.array([[0.0, 0.0], [3.0, 4.0]])
        queries = np.array([[0.0, 1.0], [3.0, 4.0], [6.0, 8.0]])
        np.testing.assert_allclose(nearest_distances(queries, reference), [1.0, 0.0, 5.0], atol=1e-6)

    def test_agrees_with_brute_force_across_chunks(self):
        q, r = _cloud(2_100, 0), _cloud(300, 1)  # more query rows than one chunk
        brute = np.sqrt(((q[:, None] - r[None]) ** 2).sum(-1)).min(axis=1)
        np.testing.assert_allclose(nearest_distances(q, r), brute, rtol=1e-4)

    def test_dimension_mismatch_raises(self):
        with pytest.raises(BadInputError, match="values per row"):
            nearest_distances(np.zeros((2, 3)), np.zeros((2, 4)))

    def test_non_finite_raises(self):
        with pytest.raises(BadInputError, match="NaN"):
            nearest_distances(np.array([[np.nan, 0.0]]), np.zeros((2, 2)))


class TestCopyCheck:
    TRAIN, HELD = _cloud(2_000, 0), _cloud(1_000, 1)

    def test_samples_from_the_data_distribution_copy_at_the_held_out_rate(self):
        result = copy_check(self.TRAIN, self.HELD, _cloud(1_000, 2))
        assert result.held_out_rate == pytest.approx(QUANTILE, abs=0.03)
        assert result.sample_rate == pytest.approx(QUANTILE, abs=0.03)
        assert result.median_ratio == pytest.approx(1.0, abs=0.05)

    def test_a_generator_that_returns_training_items_copies_every_sample(self):
        result = copy_check(self.TRAIN, self.HELD, self.TRAIN[:500] + 1e-3)
        assert result.sample_rate == 1.0
        assert result.median_ratio < 0.01

    def test_a_generator_far_from_the_data_copies_nothing(self):
        result = copy_check(self.TRAIN, self.HELD, _cloud(500, 3) * 3)
        assert result.sample_rate == 0.0 and result.median_ratio > 1.5

    @pytest.mark.parametrize("quantile", [0.0, 1.0, -0.5])
    def test_quantile_outside_the_open_unit_interval_raises(self, quantile):
        with pytest.raises(BadInputError, match="quantile"):
            copy_check(self.TRAIN, self.HELD, self.HELD, quantile=quantile)

    def test_too_few_held_out_items_raise(self):
        with pytest.raises(BadInputError, match="at least 4"):
            copy_check(self.TRAIN, self.HELD[:3], self.HELD)
