"""DeLong's test for a difference of AUROCs measured on the same test images (DeLong, DeLong and
Clarke-Pearson 1988), as a contrast of correlated AUCs.

Structural components. For a binary problem with m positive and n negative images and scores x
(positives) and y (negatives), psi(x, y) = 1 if x > y, 1/2 if x = y, else 0, and

    AUC = mean_ij psi(x_i, y_j),  V10_i = mean_j psi(x_i, y_j),  V01_j = mean_i psi(x_i, y_j).

For several models r, s scored on the same images, S10[r, s] is the sample covariance (ddof 1) of
V10 over the positives, S01 over the negatives, and Cov(AUC_r, AUC_s) = S10/m + S01/n. A contrast
L' AUC has variance L' S L and z = L' AUC / sqrt(L' S L), two-sided normal p-value.

The same estimator written per image. Give each image an influence phi_i: (V10_i - AUC)/m for a
positive, (V01_i - AUC)/n for a negative. The mean of V10 over the positives is the AUC (and so
is the mean of V01 over the negatives), so within each class phi has mean 0 and

    S10/m + S01/n = sum over classes k of n_k/(n_k - 1) * sum_{i in k} (phi_i - mean_k phi)^2,

the variance of a total under sampling stratified by class. Written this way it extends to what
the arms' comparison needs without another formula: a contrast of AUCs over several models and
several one-vs-rest problems is the same linear combination of the phi's, image by image, and its
variance is the stratified sum above with the classes of the test split as strata (the test split
is stratified, which is also how the comparison's bootstrap resamples it). For a binary problem
this is DeLong's estimator exactly (tests/test_delong.py checks it against S10/m + S01/n computed
by loops, and a hand-worked example); for the macro one-vs-rest AUROC of K classes it is DeLong's
estimator for the K correlated AUCs with images of a class as the sampling unit; for multi-label
data (an image carries several findings, no class strata) the images are one stratum (iid
sampling), which for a single finding differs from DeLong's estimator only by the factors
N/(N-1) against m/(m-1) and n/(n-1).

Seeds. The comparison's AUROC difference is (mean over the arm's seeds of AUROC) - (mean over the
reference's seeds of AUROC). DeLong's test here is the contrast with weights 1/S_arm on the arm's
seeds and -1/S_ref on the reference's (and 1/K over the one-vs-rest classes or findings): it tests
exactly that number, with every seed's model scored on the same images, their covariances taken
into account. Not per-seed p-values combined: the seeds' tests share the test images, so they are
dependent and Fisher's or Stouffer's combination (which assume independence) would be too
liberal, while a dependence-proof rule (twice the mean p) throws power away. Not the
seed-averaged probabilities either: the AUC of an ensemble is a different number from the mean
AUC the tables report. Like McNemar's test, DeLong's conditions on the trained models: its
variance is test-image sampling only, so it is a check on the images, not the verdict (which
reads the interval that also carries seed-to-seed variance, stats.compare).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.stats import norm, rankdata


def auc_influence(positive: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUCs and per-image DeLong influences of several score vectors on one binary problem.

    positive (N,) bool; scores (M, N), one row per model. Returns auc (M,) (ties count 1/2) and
    phi (M, N): (V10_i - auc)/m on positives, (V01_i - auc)/n on negatives (module docstring)."""
    positive = np.asarray(positive, dtype=bool)
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    assert scores.shape[1] == len(positive), f"scores {scores.shape} vs {len(positive)} labels"
    m, n = int(positive.sum()), int((~positive).sum())
    if m == 0 or n == 0:
        raise ValueError(f"AUROC needs positive and negative images; got {m} positive, {n} negative")
    ranks = rankdata(scores, axis=1)  # (M, N) midranks over all images
    pos_ranks = rankdata(scores[:, positive], axis=1)  # (M, m) among the positives
    neg_ranks = rankdata(scores[:, ~positive], axis=1)  # (M, n) among the negatives
    v10 = (ranks[:, positive] - pos_ranks) / n  # negatives below a positive, ties 1/2
    v01 = 1.0 - (ranks[:, ~positive] - neg_ranks) / m  # positives above a negative, ties 1/2
    auc = v10.mean(1)
    phi = np.empty_like(scores)
    phi[:, positive] = (v10 - auc[:, None]) / m
    phi[:, ~positive] = (v01 - auc[:, None]) / n
    return auc, phi


def stratified_variance(phi: np.ndarray, strata: np.ndarray | None) -> float:
    """Variance of sum_i phi_i when images are sampled within strata: sum over strata of
    n_k/(n_k - 1) * sum (phi_i - mean_k)^2 (strata None: one stratum, iid images)."""
    groups = [phi] if strata is None else [phi[strata == k] for k in np.unique(strata)]
    total = 0.0
    for g in groups:
        if len(g) > 1:
            total += len(g) / (len(g) - 1) * float(np.sum((g - g.mean()) ** 2))
    return total


def _binary_problems(labels: np.ndarray, n_outputs: int) -> list[tuple[np.ndarray, int]]:
    """(positive mask, score column) per AUROC the macro mean averages: class 1 of a binary
    problem; each class one-vs-rest for K > 2; each finding of multi-hot labels (N, K) that has
    positive and negative images (the others are undefined and left out, as multilabel_metrics)."""
    if labels.ndim == 2:
        return [(labels[:, k] == 1, k) for k in range(labels.shape[1]) if 0 < labels[:, k].sum() < len(labels)]
    if n_outputs == 2:
        return [(labels == 1, 1)]
    return [(labels == c, c) for c in range(n_outputs) if 0 < np.sum(labels == c) < len(labels)]


def delong_test(labels: np.ndarray, arm: Sequence[np.ndarray], reference: Sequence[np.ndarray]) -> dict[str, Any]:
    """DeLong's test of (mean over arm seeds of AUROC) - (mean over reference seeds of AUROC) on
    the same test images. labels (N,) class indices or (N, K) multi-hot; arm, reference: each
    seed's probabilities (N, K). AUROC: class 1 for binary, macro one-vs-rest for K > 2 classes,
    macro over the defined findings for multi-hot (stats.metrics.batch_roc_auc, classify.metrics).
    Returns {"difference", "se", "z", "p_value"} (p two-sided; 1.0 when se = 0 and difference = 0)."""
    labels = np.asarray(labels)
    arm, reference = [np.asarray(p) for p in arm], [np.asarray(p) for p in reference]
    assert arm and reference, "each side needs at least one model"
    n_outputs = arm[0].shape[1]
    for p in (*arm, *reference):
        assert p.shape == (len(labels), n_outputs), f"proba {p.shape}, expected ({len(labels)}, {n_outputs})"
    problems = _binary_problems(labels, n_outputs)
    if not problems:
        return {"difference": math.nan, "se": math.nan, "z": math.nan, "p_value": math.nan}
    weights = np.array([1 / len(arm)] * len(arm) + [-1 / len(reference)] * len(reference))  # (M,) the seed contrast
    models = np.stack([*arm, *reference])  # (M, N, K)
    difference, phi = 0.0, np.zeros(len(labels))
    for positive, column in problems:
        auc, influence = auc_influence(positive, models[:, :, column])
        difference += float(weights @ auc) / len(problems)
        phi += weights @ influence / len(problems)  # (N,)
    strata = None if labels.ndim == 2 else labels
    se = math.sqrt(stratified_variance(phi, strata))
    if se == 0:
        return {"difference": difference, "se": 0.0, "z": math.nan, "p_value": 1.0 if difference == 0 else 0.0}
    z = difference / se
    return {"difference": difference, "se": se, "z": z, "p_value": float(2 * norm.sf(abs(z)))}
