"""Optional k-fold cross-validation of the arms' classifiers (`classifier.folds: k`; 0 or 1 = off).

Design: the validation folds partition the real *val* split; fold f's model trains on the arm's
training set (real train split, its synthetic images) plus the val images of the other k - 1
folds, validates (epoch selection, early stopping) on fold f, and predicts the untouched test
split. Every (seed, fold) builds a fresh model (classify.train.train_classifier creates it).

Why only val images rotate through validation: the GAN (train_gan) learns from the real train
split (all of it, or its minority class), so any train image may have shaped the synthetic
images a fold trains on. A model selected on such an image is selected on something its training
set has seen through the generator, which flatters the synthetic arms. Val images never reach
the generator, so validation folds drawn from val keep the rule "no fold's validation images
reach the generator whose images that fold trains on" for one generator shared by every fold
(no GAN per fold). Folds over the train images too would need a GAN per fold, or a GAN split
carved out of train that no validation fold touches (prepare has no such split today). Every arm
uses the same folds (same seed, same val split), so the arms stay paired; synthetic_only adds no
real images (it stays synthetic only) and changes only its validation fold.

Folds are stratified by class (multi-label: by label combination, rare combinations pooled, as
prepare's splits) and keep a patient's images in one fold when the data has patient ids.

Statistics: replicates are keyed `seed<s>_fold<f>`; stats.compare averages a seed's folds before
it estimates the seed-to-seed variance (the seed stays the independent unit: the folds of one
seed share most of their training images, so their values are correlated, and counting k folds
as k independent replicates would understate the variance), and the test-image part comes from
the same paired bootstrap of the test images, applied to each fold's model.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

FOLD_SEED = 0  # one fold assignment for every arm and seed: the arms stay paired fold by fold
FOLD_SEPARATOR = "_fold"  # replicate key seed<s>_fold<f>: the part before it names the seed


def replicate_key(seed: int, fold: int | None) -> str:
    """`seed<s>` without folds, `seed<s>_fold<f>` with them (test_predictions.npz keys)."""
    return f"seed{seed}" if fold is None else f"seed{seed}{FOLD_SEPARATOR}{fold}"


def seed_of(key: str) -> str:
    """The seed a replicate key belongs to: `seed0_fold2` -> `seed0`, `seed0` -> `seed0`."""
    return key.split(FOLD_SEPARATOR)[0]


def validation_folds(val_labels: np.ndarray, val_groups: np.ndarray | None, k: int, seed: int) -> np.ndarray:
    """(M,) fold index in [0, k) of each val image: stratified by class (or label combination),
    patients kept together. Raises naming classifier.folds when the val split cannot give k folds."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    from ganaug.data.splits import label_strata

    if k < 2:
        raise ValueError(f"classifier.folds={k}: k-fold needs at least 2 folds (0 or 1 turn it off)")
    strata = label_strata(val_labels)
    units = len(np.unique(val_groups)) if val_groups is not None else len(val_labels)
    if units < k:
        raise ValueError(f"classifier.folds={k}: the val split has {units} "
                         f"{'patients' if val_groups is not None else 'images'}, fewer than the folds")
    index = np.zeros(len(val_labels))
    fold = np.empty(len(val_labels), np.int64)
    if val_groups is None:
        smallest = int(np.unique(strata, return_counts=True)[1].min())
        splitter = StratifiedKFold(k, shuffle=True, random_state=seed)
        if smallest < k:  # a class rarer than the folds cannot be in every fold: not stratified then
            from sklearn.model_selection import KFold

            splitter = KFold(k, shuffle=True, random_state=seed)
        splits = splitter.split(index, strata)
    else:
        splits = StratifiedGroupKFold(k, shuffle=True, random_state=seed).split(index, strata, val_groups)
    for f, (_, held) in enumerate(splits):
        fold[held] = f
    return fold


def fold_training_set(images: np.ndarray, labels: np.ndarray, val_images: np.ndarray, val_labels: np.ndarray,
                      fold_of_val: np.ndarray, fold: int, add_real_val: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(training images, training labels, mask of the val images held out as fold `fold`'s validation set):
    the arm's training set (images, labels) plus, when `add_real_val`, the val images of the other folds."""
    held = fold_of_val == fold  # (M,) bool
    if not add_real_val:
        return images, labels, held
    return (np.concatenate([images, val_images[~held]]), np.concatenate([labels, val_labels[~held].astype(labels.dtype)]),
            held)


@dataclass(frozen=True)
class Replicate:
    """One classifier training of an arm: a seed, a fold, and the sets it fits and validates on."""

    seed: int
    fold: int | None  # None without folds (the whole val split validates)
    fit_images: np.ndarray  # (N, C, H, W) uint8: the arm's training set [+ the other folds' val images]
    fit_labels: np.ndarray  # (N,) or (N, K)
    val_images: np.ndarray  # (M, C, H, W) uint8: the val split, or fold `fold` of it
    val_labels: np.ndarray  # (M,) or (M, K)

    @property
    def key(self) -> str:
        return replicate_key(self.seed, self.fold)


def replicates(seeds: list[int], folds: int, images: np.ndarray, labels: np.ndarray, val_images: np.ndarray,
               val_labels: np.ndarray, val_groups: np.ndarray | None, add_real_val: bool) -> Iterator[Replicate]:
    """An arm's trainings in the order they run (seed after seed, each seed's folds in turn), each
    training set built when its turn comes. folds <= 1: one per seed, validated on the whole val split."""
    fold_of_val = validation_folds(val_labels, val_groups, folds, FOLD_SEED) if folds > 1 else None
    for seed in seeds:
        if fold_of_val is None:
            yield Replicate(seed, None, images, labels, val_images, val_labels)
            continue
        for fold in range(folds):
            fit_images, fit_labels, held = fold_training_set(images, labels, val_images, val_labels, fold_of_val, fold,
                                                             add_real_val)
            yield Replicate(seed, fold, fit_images, fit_labels, val_images[held], val_labels[held])
