"""Label vectors to condition a multi-label generator on: which combinations of findings the
synthetic images get.

Multi-label sets (NIH ChestX-ray14, ChestMNIST, the phantom's `label_mode: multilabel`) label
each image with a multi-hot vector (K,) over K findings; all zeros is "no finding". A
conditional GAN trained on them draws an image for any vector, but the vectors a synthetic set
should use are not obvious: findings co-occur (effusion with cardiomegaly), so drawing each
finding independently gives combinations that never occur in the data. Two strategies, both
pure functions of (train labels, request, seed):

- `draw_combinations`: n vectors drawn i.i.d. from the train split's empirical distribution of
  label combinations (a uniform draw of train rows with replacement: each combination comes
  with its train frequency), so the synthetic set has the real set's co-occurrence structure.
- `fill_findings`: for each finding below its target count, vectors drawn from the train
  combinations that contain it, until real + synthetic images of every finding reach the
  target (as in the NIH augmentation study, where each under-represented finding is topped
  up). Rarest findings are filled first, and images drawn for one finding count towards the
  others they carry, so common findings get few or no extra images.

Only the train split's labels go in here: the test split never shapes a synthetic set.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def check_multi_hot(labels: np.ndarray, name: str = "train_labels", min_rows: int = 1) -> np.ndarray:
    """(N, K) multi-hot labels with 0/1 entries, N >= min_rows, K >= 1, as uint8; anything else raises naming `name`."""
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.shape[0] < min_rows or labels.shape[1] < 1:
        raise ValueError(f"{name} must be multi-hot labels (N, K) with N >= {min_rows}, K >= 1, got shape {labels.shape}")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError(f"{name} must hold only 0 and 1 (multi-hot), got values {np.unique(labels)[:10].tolist()}")
    return labels.astype(np.uint8)


def combination_counts(labels: np.ndarray, finding_names: Sequence[str]) -> dict[str, int]:
    """{"effusion+cardiomegaly": n, "no finding": m, …} for (N, K) multi-hot labels, most frequent
    first (ties by name): the readable ledger of which combinations a set holds."""
    labels = check_multi_hot(labels, "labels")
    if labels.shape[1] != len(finding_names):
        raise ValueError(f"labels have {labels.shape[1]} findings but {len(finding_names)} names were given")
    combos, counts = np.unique(labels, axis=0, return_counts=True)
    named = [("+".join(finding_names[k] for k in np.flatnonzero(row)) or "no finding", int(n)) for row, n in zip(combos, counts)]
    return dict(sorted(named, key=lambda item: (-item[1], item[0])))


def draw_combinations(train_labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """n label vectors (n, K) uint8 drawn i.i.d. from the empirical distribution of the rows of
    `train_labels` (N, K): combination c is drawn with probability (train rows equal to c) / N.
    For one seed, a draw of n is the first n rows of any larger draw (a pool's prefixes are its subsets)."""
    train_labels = check_multi_hot(train_labels)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    # row i comes from the i-th uniform double alone (floor(u * N), bias < N / 2**53): prefixes are exact
    rows = np.minimum((np.random.default_rng(seed).random(n) * len(train_labels)).astype(np.int64), len(train_labels) - 1)
    return train_labels[rows]


def finding_targets(train_labels: np.ndarray, target: int | Sequence[int]) -> np.ndarray:
    """Per-finding target counts (K,) int64 from one count for every finding or one per finding."""
    k = check_multi_hot(train_labels).shape[1]
    targets = np.full(k, target, dtype=np.int64) if np.ndim(target) == 0 else np.asarray(target, dtype=np.int64)
    if targets.shape != (k,):
        raise ValueError(f"targets must be one count or {k} counts (one per finding), got {np.shape(target)}")
    if (targets < 0).any():
        raise ValueError(f"targets must be >= 0, got {targets.tolist()}")
    return targets


def fill_findings(train_labels: np.ndarray, target: int | Sequence[int], seed: int,
                  present: np.ndarray | None = None) -> np.ndarray:
    """Label vectors (M, K) uint8 for synthetic images such that, for every finding k, the
    vectors already `present` (default: the train split itself, i.e. filling the real set up)
    with k plus the new vectors with k number at least target[k].

    Findings are filled rarest first (fewest real images); each drawn vector is a train row that
    contains the finding being filled (uniform over those rows, so combinations keep their
    frequencies among the rows with that finding), and it counts towards every finding it carries.
    A finding with a target above 0 but no train image raises: no combination to draw it from."""
    train_labels = check_multi_hot(train_labels)
    targets = finding_targets(train_labels, target)
    present = train_labels if present is None else check_multi_hot(present, "present", min_rows=0)
    if present.shape[1] != train_labels.shape[1]:
        raise ValueError(f"present has {present.shape[1]} findings, train_labels {train_labels.shape[1]}")
    have = present.sum(axis=0, dtype=np.int64)  # (K,) present + drawn so far
    rng = np.random.default_rng(seed)
    drawn: list[np.ndarray] = []
    for k in np.argsort(have, kind="stable"):  # rarest first; ties in finding order
        deficit = int(targets[k] - have[k])
        if deficit <= 0:
            continue
        carriers = np.flatnonzero(train_labels[:, k] == 1)
        if len(carriers) == 0:
            raise ValueError(f"finding {int(k)} has no train image: no label combination contains it to fill up from")
        picked = train_labels[carriers[rng.integers(0, len(carriers), size=deficit)]]  # (deficit, K)
        have += picked.sum(axis=0, dtype=np.int64)
        drawn.append(picked)
    if not drawn:
        return np.zeros((0, train_labels.shape[1]), np.uint8)
    return np.concatenate(drawn)
