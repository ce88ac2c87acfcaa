"""Label combinations for multi-label synthesis (ganaug.gan.conditioning)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import chisquare

from ganaug.gan.conditioning import combination_counts, draw_combinations, fill_findings


def correlated_labels(n: int = 600, seed: int = 0) -> np.ndarray:
    """(n, 4) multi-hot with co-occurrence (finding 3 mostly with finding 2) and a rare finding 1."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((n, 4), np.uint8)
    labels[:, 0] = rng.random(n) < 0.4
    labels[:, 1] = rng.random(n) < 0.03
    labels[:, 2] = rng.random(n) < 0.2
    labels[:, 3] = (labels[:, 2] == 1) & (rng.random(n) < 0.7)
    return labels


def test_drawn_combination_frequencies_match_the_train_distribution():
    train = correlated_labels()
    drawn = draw_combinations(train, 20_000, seed=3)
    assert drawn.shape == (20_000, 4) and drawn.dtype == np.uint8
    combos, train_counts = np.unique(train, axis=0, return_counts=True)
    # every drawn vector is a train combination: nothing the data never shows
    assert {tuple(r) for r in np.unique(drawn, axis=0)} <= {tuple(r) for r in combos}
    drawn_counts = np.array([(drawn == c).all(axis=1).sum() for c in combos])
    expected = train_counts / train_counts.sum() * len(drawn)
    assert chisquare(drawn_counts, expected).pvalue > 1e-3
    # co-occurrence kept: P(3 | 2) as in the train split, not the product of marginals
    cond = lambda y: y[y[:, 2] == 1, 3].mean()
    assert abs(cond(drawn) - cond(train)) < 0.03


def test_a_wrong_distribution_fails_the_same_check():
    """The chi-square check above can fail: independent findings with the same marginals do."""
    train = correlated_labels()
    rng = np.random.default_rng(1)
    independent = (rng.random((20_000, 4)) < train.mean(axis=0)).astype(np.uint8)
    combos, train_counts = np.unique(train, axis=0, return_counts=True)
    counts = np.array([(independent == c).all(axis=1).sum() for c in combos])
    expected = train_counts / train_counts.sum() * counts.sum()
    assert chisquare(counts, expected).pvalue < 1e-6


def test_draws_are_a_function_of_the_seed():
    train = correlated_labels()
    assert np.array_equal(draw_combinations(train, 50, 7), draw_combinations(train, 50, 7))
    assert not np.array_equal(draw_combinations(train, 50, 7), draw_combinations(train, 50, 8))
    assert draw_combinations(train, 0, 7).shape == (0, 4)
    # a smaller draw is the prefix of a larger one (one seeded pool; smaller mixing ratios take its first rows)
    assert np.array_equal(draw_combinations(train, 500, 7)[:37], draw_combinations(train, 37, 7))


def test_fill_findings_reaches_every_target_and_spares_common_findings():
    train = correlated_labels()
    real = train.sum(axis=0)
    target = int(real.max())  # fill every finding up to the most frequent one
    synthetic = fill_findings(train, target, seed=0)
    total = real + synthetic.sum(axis=0)
    assert (total >= target).all(), (real, total, target)
    # each drawn vector is a train combination containing a finding that was below target
    combos = {tuple(r) for r in train}
    assert all(tuple(r) in combos for r in synthetic)
    below = np.flatnonzero(real < target)
    assert synthetic[:, below].any(axis=1).all()
    # the most frequent finding got no image of its own (only those it co-occurs with)
    assert len(synthetic) <= sum(target - real[k] for k in below)
    assert np.array_equal(synthetic, fill_findings(train, target, seed=0))
    assert not np.array_equal(synthetic, fill_findings(train, target, seed=1))


def test_fill_findings_per_finding_targets_and_nothing_to_fill():
    train = correlated_labels()
    real = train.sum(axis=0)
    targets = real + np.array([0, 25, 0, 5])
    synthetic = fill_findings(train, targets, seed=2)
    assert (real + synthetic.sum(axis=0) >= targets).all()
    assert synthetic[:, 1].sum() >= 25
    assert fill_findings(train, 0, seed=2).shape == (0, 4)


def test_fill_findings_counts_a_given_set_instead_of_the_train_split():
    """Topping up a drawn set (as the multi-label GAN evaluation does): its own counts are the start."""
    train = correlated_labels()
    drawn = draw_combinations(train, 30, seed=0)
    extra = fill_findings(train, 8, seed=1, present=drawn)
    assert ((drawn.sum(axis=0) + extra.sum(axis=0)) >= 8).all()
    assert 0 < len(extra) < 8 * 4
    assert ((fill_findings(train, 2, seed=1, present=train[:0]).sum(axis=0)) >= 2).all()


def test_bad_requests_name_the_problem():
    train = correlated_labels()
    with pytest.raises(ValueError, match="one per finding"):
        fill_findings(train, [10, 10], seed=0)
    with pytest.raises(ValueError, match="multi-hot"):
        draw_combinations(np.arange(5), 3, seed=0)
    with pytest.raises(ValueError, match="only 0 and 1"):
        draw_combinations(train * 2, 3, seed=0)
    no_second = train.copy()
    no_second[:, 1] = 0
    with pytest.raises(ValueError, match="finding 1 has no train image"):
        fill_findings(no_second, 10, seed=0)


def test_combination_counts_name_the_combinations():
    labels = np.array([[0, 0], [1, 0], [1, 1], [1, 0], [0, 0], [1, 0]], np.uint8)
    assert combination_counts(labels, ["effusion", "cardiomegaly"]) == {
        "effusion": 3, "no finding": 2, "effusion+cardiomegaly": 1}
