"""Intervals of set-level quality metrics: each scheme checked against the sampling spread it
claims to estimate, on Gaussians where independent redraws give that spread directly."""

from __future__ import annotations

import numpy as np
import pytest

from ganaug.quality.bootstrap import bootstrap_ci, half_sample_ci
from ganaug.quality.frechet import feature_stats, frechet_distance
from ganaug.quality.manifold import density_coverage, manifold_hits, precision_recall
from ganaug.quality.suite import FeatureSet, feature_metrics


def gaussian(rng, n, d=6, shift=0.0):
    return rng.normal(0.0, 1.0, (n, d)) + np.eye(d)[0] * shift


def fd(real, fake):
    return frechet_distance(feature_stats(fake, "x"), feature_stats(real, "x"))


def test_half_sample_interval_width_matches_the_spread_of_independent_redraws():
    rng = np.random.default_rng(0)
    n = 300
    redraws = [fd(gaussian(rng, n), gaussian(rng, n, shift=0.7)) for _ in range(150)]
    true_sd = np.std(redraws)
    estimated_sd = []
    covered = 0
    for seed in range(12):
        real, fake = gaussian(rng, n), gaussian(rng, n, shift=0.7)
        interval = half_sample_ci(fd, real, fake, n_replicates=100, ci=0.95, seed=seed)
        estimated_sd.append((interval.high - interval.low) / (2 * 1.96))
        covered += interval.low <= np.mean(redraws) <= interval.high
    ratio = np.mean(estimated_sd) / true_sd
    assert 0.7 < ratio < 1.4, ratio  # a with-replacement bootstrap would not be centred on the value
    assert covered >= 9  # ~95% nominal; 12 draws


def test_with_replacement_bootstrap_biases_fd_where_half_sampling_does_not():
    rng = np.random.default_rng(1)
    real, fake = gaussian(rng, 200, d=32), gaussian(rng, 200, d=32, shift=0.2)
    with pytest.warns(RuntimeWarning, match="outside its"):
        bootstrap_ci(fd, real, fake, n_bootstrap=100, resample_real=True)  # duplicates inflate FD
    interval = half_sample_ci(fd, real, fake, n_replicates=100)
    assert interval.low < interval.value < interval.high


def test_half_sample_interval_refuses_tiny_sets_and_bad_levels():
    x = np.zeros((3, 2))
    with pytest.raises(ValueError, match="at least 4 real"):
        half_sample_ci(fd, x, np.ones((10, 2)))
    with pytest.raises(ValueError, match="ci must be"):
        half_sample_ci(fd, np.ones((10, 2)), np.ones((10, 2)), ci=1.0)


def test_manifold_hits_are_the_per_sample_values_of_the_four_metrics():
    rng = np.random.default_rng(2)
    real, fake = gaussian(rng, 150), gaussian(rng, 120, shift=0.8)
    pr, dc = manifold_hits(real, fake, 3), manifold_hits(real, fake, 5, with_recall=False)
    precision, recall = precision_recall(real, fake, 3)
    density, coverage = density_coverage(real, fake, 5)
    assert (pr.real_balls_per_fake > 0).mean() == precision and pr.real_in_fake_manifold.mean() == recall
    assert dc.real_balls_per_fake.mean() / 5 == density and dc.real_ball_has_fake.mean() == coverage
    assert dc.real_in_fake_manifold is None


def test_recall_interval_tracks_the_spread_over_real_redraws():
    """Recall is a mean over real samples with the fake set fixed: its bootstrap over reals
    should match the spread of recall when the real set is redrawn."""
    rng = np.random.default_rng(3)
    fake = gaussian(rng, 200, shift=0.5)
    redraws = [precision_recall(gaussian(rng, 200), fake, 3)[1] for _ in range(150)]
    widths = []
    for seed in range(8):
        out = feature_metrics(FeatureSet("domain", "x", gaussian(rng, 200), fake), with_ci=True, n_bootstrap=200, seed=seed)
        widths.append((out["recall_domain_ci_high"] - out["recall_domain_ci_low"]) / (2 * 1.96))
    assert 0.6 < np.mean(widths) / np.std(redraws) < 1.5


def test_every_feature_metric_has_an_interval_that_brackets_it():
    rng = np.random.default_rng(4)
    out = feature_metrics(FeatureSet("domain", "x", gaussian(rng, 200), gaussian(rng, 200, shift=0.5)), with_ci=True, n_bootstrap=100)
    for name in ("fd_domain", "kd_domain", "precision_domain", "recall_domain", "density_domain", "coverage_domain"):
        assert out[f"{name}_ci_low"] <= out[name] <= out[f"{name}_ci_high"], name
        assert out[f"{name}_ci_low"] < out[f"{name}_ci_high"], name


@pytest.mark.parametrize(("n_a", "n_b", "d"), [(300, 200, 8), (40, 30, 64)])
def test_frechet_distance_of_features_equals_the_covariance_route(n_a, n_b, d):
    rng = np.random.default_rng(5)
    a, b = gaussian(rng, n_a, d=d), gaussian(rng, n_b, d=d, shift=0.4) * 1.3
    from ganaug.quality.frechet import frechet_distance_of_features

    expected = fd(a, b)  # scipy sqrtm of the (D, D) product (singular when N < D)
    assert frechet_distance_of_features(a, b) == pytest.approx(expected, rel=1e-4)
