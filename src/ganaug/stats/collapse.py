"""Classifier seeds that collapsed to (almost) one class.

Rule: a seed is *collapsed* when one class c receives at least `min_share` (default 0.98) of its
test predictions while c makes up less than `max_label_share` (default 0.90) of the test labels.
With those defaults the other classes keep together at most (1 - 0.98) / (1 - 0.90) = 20 % of
their images: the model has all but stopped telling classes apart (typically a run stopped at
epoch 1, or a majority-class solution under imbalance). On a test set where one class already
holds >= 90 % of the labels, predicting it nearly always is not distinguishable from a good
model by this rule, and no seed is flagged."""

from __future__ import annotations

from typing import Any

import numpy as np


def predicted_shares(proba: np.ndarray) -> np.ndarray:
    """proba (N, K) -> (K,) fraction of the test images predicted as each class."""
    return np.bincount(proba.argmax(1), minlength=proba.shape[1]) / len(proba)


def collapse_record(labels: np.ndarray, proba: np.ndarray, min_share: float = 0.98,
                    max_label_share: float = 0.90) -> dict[str, Any]:
    """Whether one model collapsed, with the numbers behind the decision."""
    assert proba.ndim == 2 and len(proba) == len(labels), f"proba {proba.shape} vs {len(labels)} labels"
    shares = predicted_shares(proba)
    top = int(shares.argmax())
    label_share = float(np.mean(labels == top))
    return {"collapsed": bool(shares[top] >= min_share and label_share < max_label_share),
            "top_class": top, "predicted_share": float(shares[top]), "label_share": label_share}


def collapsed_seeds(labels: np.ndarray, seeds: dict[str, np.ndarray], min_share: float = 0.98,
                    max_label_share: float = 0.90) -> list[str]:
    """The seed keys (in the given order) whose models collapsed; seeds {key: proba (N, K)}."""
    return [key for key, proba in seeds.items() if collapse_record(labels, proba, min_share, max_label_share)["collapsed"]]
