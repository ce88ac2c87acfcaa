"""Multi-label classification metrics (ganaug.classify.metrics.multilabel_metrics) against sklearn."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from ganaug.classify.metrics import classification_metrics, multilabel_metrics, scalar_metrics

NAMES = ["consolidation", "interstitial", "cardiomegaly", "pleural effusion"]


def toy(n: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random((n, 4)) < [0.3, 0.5, 0.2, 0.4]).astype(np.uint8)
    y[0], y[1] = 1, 0  # every finding has a positive and a negative
    proba = np.clip(0.35 * y + rng.random((n, 4)) * 0.65, 0, 1)  # informative, not perfect
    return y, proba


def test_matches_sklearn_per_label_macro_and_micro():
    y, proba = toy()
    m = multilabel_metrics(y, proba, NAMES)
    per_auc = roc_auc_score(y, proba, average=None)
    per_ap = average_precision_score(y, proba, average=None)
    for k, key in enumerate(["consolidation", "interstitial", "cardiomegaly", "pleural_effusion"]):
        assert m[f"roc_auc_{key}"] == pytest.approx(per_auc[k], abs=1e-12)
        assert m[f"average_precision_{key}"] == pytest.approx(per_ap[k], abs=1e-12)
        assert m[f"support_{key}"] == int(y[:, k].sum())
    assert m["roc_auc_macro"] == pytest.approx(roc_auc_score(y, proba, average="macro"), abs=1e-12)
    assert m["roc_auc_micro"] == pytest.approx(roc_auc_score(y, proba, average="micro"), abs=1e-12)
    assert m["average_precision_macro"] == pytest.approx(average_precision_score(y, proba, average="macro"), abs=1e-12)
    assert m["average_precision_micro"] == pytest.approx(average_precision_score(y, proba, average="micro"), abs=1e-12)
    assert m["undefined"] == {} and m["n_defined_findings"] == 4 and m["n"] == len(y)
    assert 0.5 < m["roc_auc_macro"] < 1.0  # informative scores, not a constant


def test_a_finding_without_positives_or_negatives_is_nan_with_a_reason():
    y, proba = toy()
    y[:, 1] = 0  # no interstitial image in this split
    y[:, 2] = 1  # every image has cardiomegaly
    m = multilabel_metrics(y, proba, NAMES)
    assert math.isnan(m["roc_auc_interstitial"]) and math.isnan(m["average_precision_interstitial"])
    assert math.isnan(m["roc_auc_cardiomegaly"])
    assert m["undefined"] == {"interstitial": "no positive image in this split",
                              "cardiomegaly": "no negative image in this split"}
    assert m["n_defined_findings"] == 2
    defined = [0, 3]  # the macro mean covers the defined findings only
    assert m["roc_auc_macro"] == pytest.approx(roc_auc_score(y[:, defined], proba[:, defined], average="macro"), abs=1e-12)
    assert m["roc_auc_micro"] == pytest.approx(roc_auc_score(y.ravel(), proba.ravel()), abs=1e-12)
    scalars = scalar_metrics(m)  # for MLflow / DVC: the reasons dict is not a scalar
    assert "undefined" not in scalars and math.isnan(scalars["roc_auc_interstitial"])


def test_all_findings_undefined_gives_nan_means():
    y = np.zeros((5, 2), np.uint8)
    m = multilabel_metrics(y, np.full((5, 2), 0.3), ["a", "b"])
    assert math.isnan(m["roc_auc_macro"]) and math.isnan(m["roc_auc_micro"]) and m["n_defined_findings"] == 0
    assert m["undefined"]["micro"] == "no positive image in this split"


def test_shapes_are_checked_and_single_label_metrics_unchanged():
    y, proba = toy()
    with pytest.raises(AssertionError, match="must both be"):
        multilabel_metrics(y, proba[:, :3], NAMES)
    with pytest.raises(AssertionError, match="finding names"):
        multilabel_metrics(y, proba, NAMES[:3])
    labels = np.array([0, 1, 1, 0, 1])
    p = np.array([[0.8, 0.2], [0.3, 0.7], [0.4, 0.6], [0.6, 0.4], [0.7, 0.3]])
    single = classification_metrics(labels, p, ["normal", "pneumonia"])
    assert single["accuracy"] == pytest.approx(0.8) and single["roc_auc"] == pytest.approx(roc_auc_score(labels, p[:, 1]))
