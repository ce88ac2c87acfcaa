"""Classification metrics on held-out data: the numbers Model A and Model B are compared by."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
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
