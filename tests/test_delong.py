"""DeLong's test (ganaug.stats.delong): a hand-worked example, DeLong's structural-components
covariance computed here by loops, the macro one-vs-rest AUROC against scikit-learn, the variance
against a stratified bootstrap, and the test's size under the null."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from ganaug.classify.metrics import roc_auc
from ganaug.stats.metrics import batch_roc_auc
from ganaug.stats.delong import auc_influence, delong_test, stratified_variance


def structural_covariance(x_pos: np.ndarray, x_neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong 1988 by the definitions: x_pos (M, m), x_neg (M, n) -> AUCs (M,), covariance (M, M)."""
    def psi(a, b):
        return 1.0 if a > b else 0.5 if a == b else 0.0

    n_models, m = x_pos.shape
    n = x_neg.shape[1]
    v10 = np.array([[np.mean([psi(x_pos[r, i], x_neg[r, j]) for j in range(n)]) for i in range(m)] for r in range(n_models)])
    v01 = np.array([[np.mean([psi(x_pos[r, i], x_neg[r, j]) for i in range(m)]) for j in range(n)] for r in range(n_models)])
    auc = v10.mean(1)
    s10 = np.cov(v10)  # (M, M), ddof 1 over the positives
    s01 = np.cov(v01)
    return auc, np.atleast_2d(s10) / m + np.atleast_2d(s01) / n


def as_binary_proba(score: np.ndarray) -> np.ndarray:
    return np.stack([1 - score, score], axis=1)


def test_hand_worked_example():
    # positives 0.8, 0.6; negatives 0.7, 0.2: pairs (0.8>0.7, 0.8>0.2, 0.6<0.7, 0.6>0.2) -> AUC 3/4;
    # V10 = [1, 1/2], V01 = [1/2, 1]: S10 = S01 = 1/8, Var = 1/8 / 2 + 1/8 / 2 = 1/8
    positive = np.array([True, True, False, False])
    auc, phi = auc_influence(positive, np.array([[0.8, 0.6, 0.7, 0.2]]))
    assert auc[0] == pytest.approx(0.75)
    assert stratified_variance(phi[0], positive.astype(int)) == pytest.approx(1 / 8)
    # against a model with AUC 1 (its V's are constant: variance 0), the difference keeps variance 1/8
    labels = positive.astype(int)
    result = delong_test(labels, [as_binary_proba(np.array([0.8, 0.6, 0.7, 0.2]))],
                         [as_binary_proba(np.array([0.9, 0.8, 0.3, 0.1]))])
    assert result["difference"] == pytest.approx(-0.25)
    assert result["se"] == pytest.approx(np.sqrt(1 / 8))
    assert result["p_value"] == pytest.approx(2 * norm.sf(0.25 / np.sqrt(1 / 8)))


@pytest.mark.parametrize("ties", [False, True])
def test_binary_difference_matches_structural_components_by_loops(ties):
    rng = np.random.default_rng(3)
    n = 40
    labels = (rng.random(n) < 0.4).astype(int)
    shared = rng.normal(size=n) + labels  # the two models share most of their signal: correlated AUCs
    a = shared + 0.5 * rng.normal(size=n)
    b = shared + 0.8 * rng.normal(size=n) + 0.3 * labels
    if ties:
        a, b = np.round(a, 0), np.round(b, 0)  # many tied scores
    auc, cov = structural_covariance(np.stack([a, b])[:, labels == 1], np.stack([a, b])[:, labels == 0])
    result = delong_test(labels, [as_binary_proba(a)], [as_binary_proba(b)])
    assert auc[0] == pytest.approx(roc_auc_score(labels, a))
    assert result["difference"] == pytest.approx(auc[0] - auc[1])
    assert result["se"] ** 2 == pytest.approx(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])


def test_seed_means_are_delongs_contrast():
    rng = np.random.default_rng(4)
    n = 30
    labels = (rng.random(n) < 0.5).astype(int)
    scores = [labels + rng.normal(size=n) * s for s in (0.6, 0.9, 1.2, 1.5, 0.7)]  # arm: 3 seeds, reference: 2
    auc, cov = structural_covariance(np.stack(scores)[:, labels == 1], np.stack(scores)[:, labels == 0])
    contrast = np.array([1 / 3, 1 / 3, 1 / 3, -1 / 2, -1 / 2])
    result = delong_test(labels, [as_binary_proba(s) for s in scores[:3]], [as_binary_proba(s) for s in scores[3:]])
    assert result["difference"] == pytest.approx(contrast @ auc)
    assert result["se"] ** 2 == pytest.approx(contrast @ cov @ contrast)


def test_macro_one_vs_rest_difference_equals_sklearn_and_its_variance_a_stratified_bootstrap():
    rng = np.random.default_rng(5)
    k, n = 3, 240
    labels = np.repeat(np.arange(k), n // k)

    def model(noise):
        logits = np.eye(k)[labels] * 1.5 + rng.normal(size=(n, k)) * noise
        return np.exp(logits) / np.exp(logits).sum(1, keepdims=True)

    arm, reference = [model(1.0), model(1.2)], [model(1.4)]
    result = delong_test(labels, arm, reference)
    expected = np.mean([roc_auc(labels, p) for p in arm]) - roc_auc(labels, reference[0])
    assert result["difference"] == pytest.approx(expected)
    idx = np.concatenate([rng.choice(np.flatnonzero(labels == c), (2000, n // k)) for c in range(k)], axis=1)  # (B, N)
    draws = np.mean([batch_roc_auc(labels[idx], p[idx]) for p in arm], axis=0) - batch_roc_auc(labels[idx], reference[0][idx])
    assert result["se"] == pytest.approx(np.std(draws, ddof=1), rel=0.12)


def test_multilabel_macro_auroc_leaves_out_undefined_findings():
    rng = np.random.default_rng(6)
    n = 60
    labels = (rng.random((n, 3)) < 0.3).astype(np.uint8)
    labels[:, 2] = 0  # a finding absent from the split: undefined, left out
    arm = [np.clip(labels + rng.normal(size=(n, 3)) * 0.8, 0, 1)]
    reference = [np.clip(labels + rng.normal(size=(n, 3)) * 1.2, 0, 1)]
    result = delong_test(labels, arm, reference)
    expected = np.mean([roc_auc_score(labels[:, j], arm[0][:, j]) - roc_auc_score(labels[:, j], reference[0][:, j])
                        for j in range(2)])
    assert result["difference"] == pytest.approx(expected)
    assert 0 < result["p_value"] <= 1


def test_size_under_the_null_is_near_nominal():
    # two models of the same quality, correlated through shared image difficulty: p < 0.05 about 5 % of the time
    rng = np.random.default_rng(7)
    n, rejections, runs = 150, 0, 400
    labels = np.repeat([0, 1], n // 2)
    for _ in range(runs):
        difficulty = rng.normal(size=n)
        a = labels + difficulty + rng.normal(size=n)
        b = labels + difficulty + rng.normal(size=n)
        rejections += delong_test(labels, [as_binary_proba(a)], [as_binary_proba(b)])["p_value"] < 0.05
    assert 0.02 <= rejections / runs <= 0.09, rejections / runs


# ------------------------------------------------------------------- in the arms' comparison


def test_compare_arms_reports_delong_beside_mcnemar():
    from ganaug.stats.compare import compare_arms, find_comparison
    from ganaug.stats.metrics import compared_metrics
    from ganaug.stats.report import comparison_markdown

    rng = np.random.default_rng(8)
    labels = np.repeat([0, 1], 100)
    arms = {"real": {f"seed{s}": as_binary_proba(1 / (1 + np.exp(-(labels - 0.5) * 1.0 - rng.normal(size=200))))
                     for s in range(3)},
            "synthetic-1.0": {f"seed{s}": as_binary_proba(1 / (1 + np.exp(-(labels - 0.5) * 3.0 - rng.normal(size=200))))
                              for s in range(2)}}
    result = compare_arms(labels, arms, ["real"], compared_metrics(0, ["normal", "pneumonia"]), n_bootstrap=100)
    record = find_comparison(result, "synthetic-1.0", "real", "roc_auc")
    direct = delong_test(labels, list(arms["synthetic-1.0"].values()), list(arms["real"].values()))
    assert record["delong_p"] == pytest.approx(direct["p_value"]) and record["delong_p"] < 0.001
    assert record["delong_auc_difference"] == pytest.approx(record["difference"])  # the same number the table shows
    assert "DeLong p" in comparison_markdown(result)


def test_compare_arms_on_multilabel_predictions():
    from ganaug.stats.compare import compare_arms, find_comparison
    from ganaug.stats.metrics import multilabel_compared_metrics

    rng = np.random.default_rng(9)
    n, k = 200, 4
    labels = (rng.random((n, k)) < 0.3).astype(np.uint8)
    arms = {"real": {f"seed{s}": np.clip(labels + rng.normal(size=(n, k)), 0, 1) for s in range(2)},
            "synthetic-0.5": {f"seed{s}": np.clip(labels + rng.normal(size=(n, k)) * 0.5, 0, 1) for s in range(2)}}
    result = compare_arms(labels, arms, ["real"], multilabel_compared_metrics(labels), n_bootstrap=100)
    record = find_comparison(result, "synthetic-0.5", "real", "roc_auc")
    expected = np.mean([np.mean([roc_auc_score(labels[:, j], p[:, j]) for j in range(k)]) for p in arms["synthetic-0.5"].values()])
    assert result["arms"]["synthetic-0.5"]["metrics"]["roc_auc"]["mean"] == pytest.approx(expected)
    assert record["mcnemar_p"] is None and record["delong_p"] < 0.05 and record["difference"] > 0.1
    assert result["label_kind"] == "multi_hot" and result["arms"]["real"]["collapsed_seeds"] == []
