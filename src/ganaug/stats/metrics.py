"""Classification metrics on a batch of test-set resamples, vectorised so that a 2000-resample
bootstrap of a few dozen models takes seconds.

Every metric takes labels (B, N) int class indices and proba (B, N, K) class probabilities and
returns (B,) values, one per resample (B = 1 for the observed test set). They equal scikit-learn's
(tests/test_stats.py) on one resample: the argmax is the prediction, as in classify.metrics."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
from scipy.stats import rankdata

from ganaug.tracking.mlflow_utils import metric_key

BatchMetric = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (labels (B, N), proba (B, N, K)) -> (B,)


def batch_accuracy(labels: np.ndarray, proba: np.ndarray) -> np.ndarray:
    return (proba.argmax(-1) == labels).mean(-1)


def batch_recall(labels: np.ndarray, proba: np.ndarray, class_index: int) -> np.ndarray:
    """Recall of one class (NaN for a resample without that class)."""
    is_class = labels == class_index
    hits = (is_class & (proba.argmax(-1) == class_index)).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return hits / is_class.sum(-1)


def batch_balanced_accuracy(labels: np.ndarray, proba: np.ndarray) -> np.ndarray:
    """Mean recall over the classes present (sklearn's balanced_accuracy_score)."""
    recalls = np.stack([batch_recall(labels, proba, c) for c in range(proba.shape[-1])])  # (K, B)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample without any class: NaN, not a warning
        return np.nanmean(recalls, axis=0)


def batch_macro_f1(labels: np.ndarray, proba: np.ndarray) -> np.ndarray:
    """Unweighted mean of the K per-class F1 scores, a class never predicted nor present scoring 0
    (sklearn's f1_score(average="macro", labels=range(K), zero_division=0), as classify.metrics)."""
    predicted = proba.argmax(-1)
    scores = []
    for c in range(proba.shape[-1]):
        true_c, pred_c = labels == c, predicted == c
        tp = (true_c & pred_c).sum(-1)
        wrong = (true_c ^ pred_c).sum(-1)  # false positives + false negatives
        with np.errstate(invalid="ignore", divide="ignore"):
            scores.append(np.where(2 * tp + wrong > 0, 2 * tp / np.maximum(2 * tp + wrong, 1), 0.0))
    return np.mean(scores, axis=0)


def batch_binary_auc(positive: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """ROC AUC by the rank-sum (Mann-Whitney) identity, ties averaged: positive (B, N) bool, scores (B, N)."""
    ranks = rankdata(scores, axis=-1)
    n_pos = positive.sum(-1)
    n_neg = positive.shape[-1] - n_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((ranks * positive).sum(-1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def batch_roc_auc(labels: np.ndarray, proba: np.ndarray) -> np.ndarray:
    """Binary: AUC of class 1; multi-class: macro one-vs-rest AUC (as classify.metrics.roc_auc)."""
    if proba.shape[-1] == 2:
        return batch_binary_auc(labels == 1, proba[..., 1])
    return np.mean([batch_binary_auc(labels == c, proba[..., c]) for c in range(proba.shape[-1])], axis=0)


def batch_multilabel_auc(labels: np.ndarray, proba: np.ndarray, findings: list[int] | None = None) -> np.ndarray:
    """Macro AUROC over findings: labels (B, N, K) multi-hot, proba (B, N, K) sigmoid outputs.
    findings: the columns averaged (those defined on the observed test split); a finding without
    a positive or a negative image in one resample is left out of that resample's mean."""
    columns = range(labels.shape[-1]) if findings is None else findings
    per_finding = np.stack([batch_binary_auc(labels[..., k] == 1, proba[..., k]) for k in columns])  # (K', B)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample where no finding is defined: NaN
        return np.nanmean(per_finding, axis=0)


def batch_multilabel_micro_auc(labels: np.ndarray, proba: np.ndarray) -> np.ndarray:
    """Micro AUROC: every (image, finding) pair one binary decision; (B, N, K) -> (B,)."""
    flat = labels.shape[:-2] + (-1,)
    return batch_binary_auc(labels.reshape(flat) == 1, proba.reshape(flat))


def multilabel_compared_metrics(test_labels: np.ndarray) -> dict[str, BatchMetric]:
    """The numbers multi-label arms are compared by, macro AUROC first (the primary one): the
    macro mean over the findings with positive and negative test images (as
    classify.metrics.multilabel_metrics), then the micro AUROC."""
    defined = [k for k in range(test_labels.shape[1]) if 0 < test_labels[:, k].sum() < len(test_labels)]
    return {"roc_auc": lambda y, p: batch_multilabel_auc(y, p, defined), "roc_auc_micro": batch_multilabel_micro_auc}


def compared_metrics(minority: int, class_names: list[str]) -> dict[str, BatchMetric]:
    """The numbers the arms are compared by, balanced accuracy first (the primary one), with the
    recall of the scarce class (`recall_<name>`, the class the synthetic images are meant to help)."""
    return {
        "balanced_accuracy": batch_balanced_accuracy,
        "accuracy": batch_accuracy,
        "macro_f1": batch_macro_f1,
        "roc_auc": batch_roc_auc,
        f"recall_{metric_key(class_names[minority])}": lambda y, p: batch_recall(y, p, minority),
    }
