"""Model A vs Model B comparison: vectorised metrics equal sklearn's, the paired bootstrap
brackets the observed difference and detects a real one, and classification metrics."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, recall_score, roc_auc_score

from ganaug.classify.metrics import classification_metrics
from ganaug.config import EvaluateConfig
from ganaug.stages.evaluate import (
    batch_accuracy,
    batch_balanced_accuracy,
    batch_recall,
    batch_roc_auc,
    compare_arms,
    comparison_table,
)


def random_predictions(n=300, k=2, seed=0, skill=1.0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + skill * np.eye(k)[labels]
    logits = np.round(logits, 1)  # ties, which the rank AUC must average like sklearn
    proba = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return labels, proba


@pytest.mark.parametrize("k", [2, 3])
def test_batch_metrics_equal_sklearn(k):
    labels, proba = random_predictions(k=k)
    pred = proba.argmax(1)
    one = (labels[None], proba[None])
    assert batch_accuracy(*one)[0] == pytest.approx((pred == labels).mean())
    assert batch_balanced_accuracy(*one)[0] == pytest.approx(balanced_accuracy_score(labels, pred))
    assert batch_recall(*one, 0)[0] == pytest.approx(recall_score(labels, pred, labels=[0], average=None)[0])
    expected_auc = roc_auc_score(labels, proba[:, 1]) if k == 2 else roc_auc_score(labels, proba, multi_class="ovr")
    assert batch_roc_auc(*one)[0] == pytest.approx(expected_auc)


def test_batch_metrics_on_many_resamples_match_one_by_one():
    labels, proba = random_predictions()
    index = np.random.default_rng(1).integers(0, len(labels), (5, len(labels)))
    batched = batch_roc_auc(labels[index], proba[index])
    single = [roc_auc_score(labels[i], proba[i][:, 1]) for i in index]
    np.testing.assert_allclose(batched, single)


def test_identical_arms_differ_by_zero():
    labels, proba = random_predictions()
    arms = {"real": {"seed0": proba}, "augmented": {"seed0": proba}}
    result = compare_arms(labels, arms, EvaluateConfig(n_bootstrap=200), minority=0, class_names=["normal", "pneumonia"])
    for diff in result["difference"].values():
        assert diff["augmented_minus_real"] == 0 and diff["ci_low"] == 0 and diff["ci_high"] == 0


def test_bootstrap_detects_a_real_improvement_and_brackets_the_observed_one():
    labels, weak_a = random_predictions(n=400, skill=0.5, seed=2)
    _, weak_b = random_predictions(n=400, skill=0.5, seed=3)
    rng = np.random.default_rng(4)
    strong = np.eye(2)[labels] * 0.8 + 0.1 + rng.normal(0, 0.05, (400, 2))  # near-perfect
    arms = {"real": {"seed0": weak_a, "seed1": weak_b}, "augmented": {"seed0": strong, "seed1": strong}}
    result = compare_arms(labels, arms, EvaluateConfig(n_bootstrap=500), minority=0, class_names=["normal", "pneumonia"])
    for name, diff in result["difference"].items():
        assert diff["ci_low"] <= diff["augmented_minus_real"] <= diff["ci_high"], name
    assert result["difference"]["balanced_accuracy"]["ci_low"] > 0.1
    assert result["arms"]["real"]["accuracy"]["n_seeds"] == 2
    table = comparison_table(result)
    assert list(table["metric"]) == ["balanced_accuracy", "accuracy", "roc_auc", "recall_normal"]


def test_classification_metrics_per_class_and_confusion():
    labels = np.array([0, 0, 1, 1, 1])
    proba = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.3, 0.7], [0.6, 0.4]])
    m = classification_metrics(labels, proba, ["normal", "pneumonia"])
    assert m["accuracy"] == pytest.approx(0.6)
    assert m["recall_normal"] == pytest.approx(0.5) and m["recall_pneumonia"] == pytest.approx(2 / 3)
    assert m["confusion_matrix"] == [[1, 1], [1, 2]]
    assert m["roc_auc"] == pytest.approx(roc_auc_score(labels, proba[:, 1]))


def test_interval_includes_seed_variance():
    """Two arms with the same mean skill: one arm's seeds disagree wildly. The two-level bootstrap
    must widen the interval against the test-images-only one (one seed per arm, same draws)."""
    labels, good = random_predictions(n=400, skill=2.0, seed=5)
    _, poor = random_predictions(n=400, skill=0.0, seed=6)
    _, mid = random_predictions(n=400, skill=1.0, seed=7)
    steady = {"real": {"s0": mid, "s1": mid, "s2": mid}, "augmented": {"s0": mid, "s1": mid, "s2": mid}}
    noisy = {"real": {"s0": mid, "s1": mid, "s2": mid}, "augmented": {"s0": good, "s1": poor, "s2": mid}}
    cfg = EvaluateConfig(n_bootstrap=500)
    names = ["normal", "pneumonia"]
    width = {}
    for name, arms in (("steady", steady), ("noisy", noisy)):
        d = compare_arms(labels, arms, cfg, minority=0, class_names=names)["difference"]["balanced_accuracy"]
        width[name] = d["ci_high"] - d["ci_low"]
        assert d["corrected_ci_low"] <= d["ci_low"] <= d["ci_high"] <= d["corrected_ci_high"]
    assert width["steady"] == 0  # identical models: no test-image or seed variance in the difference
    assert width["noisy"] > 0.1  # the seeds' spread (about 0.25 between good and poor) shows


def test_verdict_only_when_corrected_interval_excludes_zero():
    from ganaug.stages.evaluate import verdict

    assert verdict(0.01, 0.2) == "helped" and verdict(-0.2, -0.01) == "hurt"
    assert verdict(-0.01, 0.2) == "no clear difference"


def test_balance_caveat_names_the_shift():
    from ganaug.stages.evaluate import balance_caveat

    note = balance_caveat({"normal": 100, "pneumonia": 300}, {"normal": 200})
    assert note is not None and "normal 25% -> 50%" in note and "class-balanced" in note
    assert balance_caveat({"normal": 100, "pneumonia": 100}, {"normal": 10, "pneumonia": 10}) is None
