"""Tests for gvtool.eval.metrics: each metric on cases with a known answer."""

import math
import subprocess
import sys

import numpy as np
import pytest

from gvtool.errors import BadInputError
from gvtool.eval.metrics import class_coverage, frechet_distance, kl_to_uniform, mode_coverage, prdc
from gvtool.train.mixtures import mixture_centres, sample_mixture

N_SAMPLES = 2500  # the VEEGAN / PacGAN protocol


class TestKlToUniform:
    def test_uniform_histogram_gives_zero(self):
        assert kl_to_uniform([3, 3, 3, 3]) == 0.0

    def test_one_full_bin_gives_log_k(self):
        assert kl_to_uniform([0, 7, 0, 0, 0]) == pytest.approx(math.log(5))

    def test_half_the_bins_give_log_2(self):
        assert kl_to_uniform([2, 2, 0, 0]) == pytest.approx(math.log(2))

    def test_uneven_histogram_matches_the_formula(self):
        p = np.array([1, 3]) / 4
        assert kl_to_uniform([1, 3]) == pytest.approx(float(np.sum(p * np.log(2 * p))))

    def test_empty_histogram_gives_inf(self):
        assert kl_to_uniform([0, 0, 0]) == math.inf

    @pytest.mark.parametrize("counts", [[], [[1, 2]], [1, -1], [1, float("nan")]])
    def test_bad_counts_raise(self, counts):
        with pytest.raises(BadInputError):
            kl_to_uniform(counts)


class TestModeCoverage:
    @pytest.mark.parametrize("name, n_modes", [("ring8", 8), ("grid25", 25)])
    def test_true_samples_cover_every_mode(self, name, n_modes):
        centres, std = mixture_centres(name)
        points, _ = sample_mixture(name, N_SAMPLES, seed=0)
        result = mode_coverage(points, centres, std)
        assert (result.modes_covered, result.n_modes) == (n_modes, n_modes)
        # in 2-D a true sample lies within 3 std with probability 1 - exp(-4.5) ~ 0.989, not 0.997
        assert result.high_quality > 0.98
        assert result.kl_to_uniform < 0.01
        assert sum(result.counts) == round(result.high_quality * N_SAMPLES)

    @pytest.mark.parametrize("name", ["ring8", "grid25"])
    def test_collapsed_set_covers_one_mode_with_kl_log_k(self, name):
        centres, std = mixture_centres(name)
        points = np.repeat(centres[3:4], N_SAMPLES, axis=0)
        result = mode_coverage(points, centres, std)
        assert result.modes_covered == 1
        assert result.high_quality == 1.0
        assert result.counts[3] == N_SAMPLES
        assert result.kl_to_uniform == pytest.approx(math.log(len(centres)))

    def test_far_away_samples_are_low_quality_and_cover_nothing(self):
        centres, std = mixture_centres("ring8")
        result = mode_coverage(np.full((100, 2), 10.0), centres, std)
        assert (result.high_quality, result.modes_covered) == (0.0, 0)
        assert result.counts == (0,) * 8
        assert result.kl_to_uniform == math.inf

    def test_hand_made_counts_2_2_0_0_give_kl_log_2(self):
        centres = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
        samples = np.array([[0.01, 0.0], [0.0, -0.01], [1.0, 0.02], [0.99, 0.0],
                            [0.5, 0.5]])  # the last one is nearest some centre but far from all: low quality
        result = mode_coverage(samples, centres, std=0.01)
        assert result.counts == (2, 2, 0, 0)
        assert result.modes_covered == 2
        assert result.high_quality == pytest.approx(4 / 5)
        assert result.kl_to_uniform == pytest.approx(math.log(2))

    def test_n_sigma_sets_the_quality_radius(self):
        centres = np.zeros((1, 2))
        samples = np.array([[0.05, 0.0], [0.15, 0.0]])
        assert mode_coverage(samples, centres, std=0.05, n_sigma=2.0).high_quality == 0.5
        assert mode_coverage(samples, centres, std=0.05, n_sigma=3.0).high_quality == 1.0

    @pytest.mark.parametrize("samples, centres, std", [
        (np.zeros(5), np.zeros((2, 2)), 0.1),          # samples not 2-D
        (np.zeros((0, 2)), np.zeros((2, 2)), 0.1),     # no samples
        (np.zeros((5, 3)), np.zeros((2, 2)), 0.1),     # dimensions differ
        (np.zeros((5, 2)), np.zeros((2, 2, 1)), 0.1),  # centres not 2-D
        (np.full((5, 2), np.nan), np.zeros((2, 2)), 0.1),
        (np.zeros((5, 2)), np.zeros((2, 2)), 0.0),     # std not positive
    ])
    def test_bad_input_raises(self, samples, centres, std):
        with pytest.raises(BadInputError):
            mode_coverage(samples, centres, std)


class TestClassCoverage:
    def test_uniform_one_hot_covers_every_class_with_kl_0(self):
        probabilities = np.eye(10)[np.arange(1000) % 10]
        result = class_coverage(probabilities)
        assert (result.classes_covered, result.n_classes) == (10, 10)
        assert result.kl_to_uniform == pytest.approx(0.0, abs=1e-12)
        assert result.confident == 1.0
        assert result.counts == (100,) * 10

    def test_all_one_class_covers_one_with_kl_log_10(self):
        result = class_coverage(np.eye(10)[np.full(500, 7)])
        assert result.classes_covered == 1
        assert result.counts[7] == 500
        assert result.kl_to_uniform == pytest.approx(math.log(10))

    def test_flat_probabilities_are_never_confident(self):
        assert class_coverage(np.full((50, 4), 0.25)).confident == 0.0

    def test_confident_counts_rows_at_or_above_threshold(self):
        probabilities = np.array([[0.9, 0.1], [0.89, 0.11], [0.05, 0.95], [0.5, 0.5]])
        assert class_coverage(probabilities, threshold=0.9).confident == 0.5

    @pytest.mark.parametrize("probabilities, threshold", [
        (np.full(10, 0.1), 0.9),              # not 2-D
        (np.full((5, 3), 0.5), 0.9),          # rows do not sum to 1 (e.g. logits)
        (np.array([[1.5, -0.5]]), 0.9),       # outside [0, 1]
        (np.eye(3), 0.0),                     # threshold outside (0, 1]
    ])
    def test_bad_input_raises(self, probabilities, threshold):
        with pytest.raises(BadInputError):
            class_coverage(probabilities, threshold)


@pytest.fixture(scope="module")
def features():
    """500 correlated 8-D features."""
    rng = np.random.default_rng(1)
    return rng.normal(size=(500, 8)) @ rng.normal(size=(8, 8))


class TestFrechetDistance:
    def test_identical_sets_give_zero(self, features):
        assert frechet_distance(features, features.copy()) == pytest.approx(0.0, abs=1e-6)

    def test_shifted_set_gives_squared_shift(self, features):
        shift = np.array([1.0, -2.0, 0.5, 0.0, 3.0, 0.0, 0.0, 1.0])
        # equal covariances: the trace term vanishes, leaving ||shift||^2 exactly
        assert frechet_distance(features, features + shift) == pytest.approx(shift @ shift, rel=1e-6)

    def test_one_dimension_matches_closed_form(self):
        a = np.random.default_rng(2).normal(size=(1000, 1))
        b = 3.0 * a + 0.5
        expected = (a.std(ddof=1) - b.std(ddof=1)) ** 2 + (a.mean() - b.mean()) ** 2
        assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)

    def test_independent_gaussians_give_squared_mean_difference(self):
        rng = np.random.default_rng(3)
        mu = np.array([1.0, 2.0, -1.0])
        a, b = rng.normal(size=(20000, 3)), rng.normal(size=(20000, 3)) + mu
        # sampling error of the mean difference: 2 mu.e with e ~ N(0, 1e-4 I) has std ~0.05
        assert frechet_distance(a, b) == pytest.approx(mu @ mu, abs=0.15)

    def test_is_symmetric(self, features):
        other = np.random.default_rng(4).normal(size=(300, 8)) * 2.0 + 1.0
        assert frechet_distance(features, other) == pytest.approx(frechet_distance(other, features), rel=1e-6)

    def test_rank_deficient_features_still_give_a_finite_value(self):
        rng = np.random.default_rng(5)
        a = np.zeros((100, 4))
        a[:, :2] = rng.normal(size=(100, 2))  # two constant features: singular covariance
        assert frechet_distance(a, a + 1.0) == pytest.approx(4.0, rel=1e-6)

    def test_fewer_samples_than_dimensions_give_a_finite_non_negative_value(self):
        rng = np.random.default_rng(6)
        a, b = rng.normal(size=(50, 64)), rng.normal(size=(50, 64))
        value = frechet_distance(a, b)
        assert math.isfinite(value) and value > 0
        assert value == pytest.approx(frechet_distance(b, a), rel=1e-6)

    def test_complex_root_is_retried_with_regularised_covariances(self, features, monkeypatch):
        from gvtool.eval import metrics
        real_sqrtm, calls = metrics.linalg.sqrtm, []

        def sqrtm_complex_first(m):  # the first root has a large imaginary diagonal, as for a singular product
            calls.append(m)
            root = real_sqrtm(m)
            return root + 1j * np.eye(len(m)) if len(calls) == 1 else root

        monkeypatch.setattr(metrics.linalg, "sqrtm", sqrtm_complex_first)
        assert frechet_distance(features, features) == pytest.approx(0.0, abs=1e-4)
        assert len(calls) == 2

    def test_root_still_complex_after_retry_raises(self, features, monkeypatch):
        from gvtool.eval import metrics
        monkeypatch.setattr(metrics.linalg, "sqrtm", lambda m: np.full(m.shape, np.nan))
        with pytest.raises(BadInputError, match="no real square root"):
            frechet_distance(features, features)

    @pytest.mark.parametrize("a, b", [
        (np.zeros((10, 3)), np.zeros((10, 4))),  # dimensions differ
        (np.zeros((1, 3)), np.zeros((10, 3))),   # one row: no covariance
        (np.zeros(10), np.zeros(10)),            # not 2-D
    ])
    def test_bad_input_raises(self, a, b):
        with pytest.raises(BadInputError):
            frechet_distance(a, b)


class TestPrdc:
    def test_set_against_itself_has_full_precision_recall_coverage(self, features):
        result = prdc(features, features.copy(), k=5)
        assert (result.precision, result.recall, result.coverage) == (1.0, 1.0, 1.0)
        assert result.k == 5

    def test_density_is_near_1_for_same_distribution(self):
        rng = np.random.default_rng(6)
        result = prdc(rng.normal(size=(2000, 4)), rng.normal(size=(2000, 4)), k=5)
        assert result.density == pytest.approx(1.0, abs=0.15)
        assert result.precision > 0.8 and result.recall > 0.8 and result.coverage > 0.9

    def test_far_shifted_set_scores_zero(self, features):
        result = prdc(features, features + 1000.0, k=5)
        assert (result.precision, result.recall, result.density, result.coverage) == (0.0, 0.0, 0.0, 0.0)

    def test_prints_nothing(self, features, capsys):
        prdc(features, features, k=3)
        assert capsys.readouterr().out == ""

    @pytest.mark.parametrize("real, fake, k", [
        (np.zeros((20, 3)), np.zeros((20, 4)), 5),  # dimensions differ
        (np.zeros((6, 3)), np.zeros((20, 3)), 5),   # fewer than k + 2 rows
        (np.zeros((20, 3)), np.zeros((20, 3)), 0),  # k not positive
    ])
    def test_bad_input_raises(self, real, fake, k):
        with pytest.raises(BadInputError):
            prdc(real, fake, k)


class TestImports:
    def test_metrics_import_no_torch(self):
        code = "import sys, gvtool.eval.metrics; sys.exit('torch' in sys.modules)"
        assert subprocess.run([sys.executable, "-c", code]).returncode == 0
