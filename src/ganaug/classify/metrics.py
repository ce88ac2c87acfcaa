"""Classification metrics on held-out data: the numbers Model A and Model B are compared by.

Single-label (class indices): `classification_metrics`; multi-label (multi-hot, one sigmoid
per finding): `multilabel_metrics`."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
)

from ganaug.tracking.mlflow_utils import metric_key


def roc_auc(y_true: np.ndarray, proba: np.ndarray) -> float:
    """Binary: AUC of the positive class; multi-class: macro one-vs-rest AUC. NaN if one class only."""
    if len(np.unique(y_true)) < 2:
        return float("nan")
    if proba.shape[1] == 2:
        return float(roc_auc_score(y_true, proba[:, 1]))
    return float(roc_auc_score(y_true, proba, multi_class="ovr", average="macro", labels=np.arange(proba.shape[1])))


def classification_metrics(y_true: np.ndarray, proba: np.ndarray, class_names: list[str]) -> dict[str, Any]:
    """y_true (N,) class indices, proba (N, K) -> scalar metrics, per-class metrics, confusion matrix."""
    assert proba.ndim == 2 and proba.shape[0] == len(y_true), f"proba {proba.shape} vs {len(y_true)} labels"
    labels = np.arange(len(class_names))
    y_pred = proba.argmax(axis=1)
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    out: dict[str, Any] = {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1.mean()),
        "roc_auc": roc_auc(y_true, proba),
        "n": int(len(y_true)),
    }
    for i, name in enumerate(map(metric_key, class_names)):  # "normal, benign" -> normal_benign
        out[f"precision_{name}"] = float(precision[i])
        out[f"recall_{name}"] = float(recall[i])
        out[f"f1_{name}"] = float(f1[i])
        out[f"support_{name}"] = int(support[i])
    out["confusion_matrix"] = confusion_matrix(y_true, y_pred, labels=labels).tolist()
    return out


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """Only the float-valued entries (for MLflow and DVC metrics)."""
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _undefined_reason(column: np.ndarray) -> str | None:
    """Why AUROC / AP of one finding is undefined on this split (None when defined)."""
    positives = int(column.sum())
    if positives == 0:
        return "no positive image in this split"
    if positives == len(column):
        return "no negative image in this split"
    return None


def multilabel_metrics(y_true: np.ndarray, proba: np.ndarray, finding_names: list[str]) -> dict[str, Any]:
    """Multi-hot y_true (N, K) and sigmoid probabilities (N, K) -> per-finding AUROC and average
    precision (`roc_auc_<finding>`, `average_precision_<finding>`), their macro means over the
    findings where they are defined, and micro values over all (image, finding) pairs.

    A finding without a positive or without a negative image in the split has NaN AUROC and AP
    and is left out of the macro means; `undefined` records {finding: reason} and
    `n_defined_findings` how many entered the means (an exception would hide the others)."""
    y_true, proba = np.asarray(y_true), np.asarray(proba, dtype=np.float64)
    assert y_true.ndim == 2 and proba.shape == y_true.shape, f"y_true {y_true.shape} and proba {proba.shape} must both be (N, K)"
    assert y_true.shape[1] == len(finding_names), f"{y_true.shape[1]} label columns but {len(finding_names)} finding names"
    out: dict[str, Any] = {"n": int(len(y_true))}
    auroc, ap, undefined = {}, {}, {}
    for k, name in enumerate(map(metric_key, finding_names)):
        column = y_true[:, k]
        reason = _undefined_reason(column)
        if reason is None:
            auroc[name] = float(roc_auc_score(column, proba[:, k]))
            ap[name] = float(average_precision_score(column, proba[:, k]))
        else:
            auroc[name] = ap[name] = float("nan")
            undefined[name] = reason
        out[f"roc_auc_{name}"] = auroc[name]
        out[f"average_precision_{name}"] = ap[name]
        out[f"support_{name}"] = int(column.sum())
    defined = [name for name in auroc if name not in undefined]
    out["roc_auc_macro"] = float(np.mean([auroc[n] for n in defined])) if defined else float("nan")
    out["average_precision_macro"] = float(np.mean([ap[n] for n in defined])) if defined else float("nan")
    flat = y_true.ravel()
    micro_reason = _undefined_reason(flat)
    out["roc_auc_micro"] = float(roc_auc_score(flat, proba.ravel())) if micro_reason is None else float("nan")
    out["average_precision_micro"] = float(average_precision_score(flat, proba.ravel())) if micro_reason is None else float("nan")
    if micro_reason is not None:
        undefined["micro"] = micro_reason
    out["n_defined_findings"] = len(defined)
    out["undefined"] = undefined
    return out
