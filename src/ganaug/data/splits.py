"""Stratified, patient-aware train / val / test splits.

Without patient groups: scikit-learn's stratified `train_test_split`, twice (on the class index,
or on the multi-hot label combination with rare combinations pooled).
With groups (patients, or images merged because they are duplicates): iterative stratification
(Sechidis et al., 2011) over whole groups, so no group is ever in two splits. Each split asks
for its fraction of every label; groups are placed rarest label first, each in the split that
still asks most for that label, largest groups first (small ones fill what is left; on the NIH
1000 subset this lands within 3% of 70/15/15 although one patient has 66 images); a split that
has none of a label yet is served first, so a label with at least three groups reaches train,
val and test.
"""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import train_test_split

from ganaug.data.source_images import DataSourceError


def stratified_split_indices(
    labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int
) -> dict[str, np.ndarray]:
    """Sorted image indices of train / val / test, stratified, for sets without patient groups."""
    if val_fraction == 0 or test_fraction == 0:
        raise DataSourceError(
            f"data.val_fraction={val_fraction:g}, data.test_fraction={test_fraction:g}: "
            "both must be > 0 for a source without a split of its own"
        )
    strata = label_strata(labels)
    index = np.arange(len(labels))
    held_out = val_fraction + test_fraction
    train_idx, rest_idx = train_test_split(index, test_size=held_out, stratify=strata, random_state=seed)
    val_idx, test_idx = train_test_split(
        rest_idx, train_size=val_fraction / held_out, stratify=strata[rest_idx], random_state=seed
    )
    return {"train": np.sort(train_idx), "val": np.sort(val_idx), "test": np.sort(test_idx)}


def label_strata(labels: np.ndarray) -> np.ndarray:
    """One stratum per class, or per multi-hot combination (combinations under 6 images pooled)."""
    if labels.ndim == 1:
        return labels.astype(str)
    strata = np.array(["".join(map(str, row)) for row in labels])
    return _pool_rare_strata(strata, min_count=6)


def _pool_rare_strata(strata: np.ndarray, min_count: int) -> np.ndarray:
    values, counts = np.unique(strata, return_counts=True)
    rare = set(values[counts < min_count])
    pooled = np.array(["rare" if s in rare else s for s in strata])
    if 0 < (pooled == "rare").sum() < min_count:  # too few even pooled: join the largest stratum
        values, counts = np.unique(pooled[pooled != "rare"], return_counts=True)
        pooled[pooled == "rare"] = values[np.argmax(counts)]
    return pooled


def label_matrix(labels: np.ndarray) -> np.ndarray:
    """(N, L) 0/1 matrix to stratify on: one-hot classes, or multi-hot plus a "no label" column."""
    if labels.ndim == 1:
        return np.eye(int(labels.max()) + 1, dtype=np.int64)[labels]
    none = (labels.sum(axis=1) == 0).astype(np.int64)[:, None]
    return np.concatenate([labels.astype(np.int64), none], axis=1)


def group_split(labels: np.ndarray, groups: np.ndarray, fractions: dict[str, float], seed: int) -> np.ndarray:
    """(N,) split name per image; every group (patient) lies in exactly one split.

    `fractions` maps split name -> share of the images, summing to 1 (e.g. train 0.7, val 0.15,
    test 0.15, or train 0.85, val 0.15 to carve val out of a train folder).
    """
    names = list(fractions)
    share = np.array([fractions[n] for n in names], dtype=np.float64)
    assert np.isclose(share.sum(), 1.0), f"split fractions must sum to 1, got {fractions}"
    y = label_matrix(labels)
    group_ids, image_group = np.unique(groups, return_inverse=True)
    n_groups, n_labels = len(group_ids), y.shape[1]
    per_group = np.zeros((n_groups, n_labels), np.int64)
    np.add.at(per_group, image_group, y)
    group_size = np.bincount(image_group, minlength=n_groups)

    want = share[:, None] * y.sum(axis=0)[None, :]  # (splits, labels) images still wanted
    want_total = share * len(labels)
    have = np.zeros((len(names), n_labels), np.int64)
    # largest groups first (small ones then fill the remaining wants), ties in a seeded random order
    shuffled = np.random.default_rng(seed).permutation(n_groups)
    order = shuffled[np.argsort(-group_size[shuffled], kind="stable")]
    assigned = np.full(n_groups, -1)
    remaining = per_group.sum(axis=0)
    while (assigned < 0).any():
        label = int(np.argmin(np.where(remaining > 0, remaining, np.iinfo(np.int64).max)))
        for g in order[(assigned[order] < 0) & (per_group[order, label] > 0)]:
            lacking = (have[:, label] == 0) & (share > 0)
            # serve a split lacking the label first, then the most wanted label, then the most wanted total
            split = max(range(len(names)), key=lambda s: (lacking[s], want[s, label], want_total[s], -s))
            assigned[g] = split
            want[split] -= per_group[g]
            want_total[split] -= group_size[g]
            have[split] += per_group[g]
        remaining = per_group[assigned < 0].sum(axis=0)
    return np.array(names, dtype=object)[assigned[image_group]].astype(str)


class DisjointSets:
    """Union-find over 0..n-1: images linked by patient or by duplication end in one set."""

    def __init__(self, n: int):
        self.parent = np.arange(n)

    def find(self, i: int) -> int:
        root = i
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[i] != root:  # path compression
            self.parent[i], i = root, self.parent[i]
        return int(root)

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def labels(self) -> np.ndarray:
        return np.array([self.find(i) for i in range(len(self.parent))], dtype=np.int64)
