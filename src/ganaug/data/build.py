"""Source -> split -> leakage check -> packed dataset: the pure function behind `ganaug prepare`.

Splitting:
- a source without a split of its own is split here into train / val / test
  (data.val_fraction, data.test_fraction), stratified;
- a source with its own split keeps it; if it lacks val and/or test (Kaggle has train/test,
  brain MRI Training/Testing) they are carved from its train part, data.val_fraction
  (data.test_fraction) of those images;
- whatever is split here is split patient-aware when the source has patients, and images that
  are exact or near duplicates of each other are linked like the images of one patient, so a
  split made here has no leakage by construction. A kept split is only checked.
Then the leakage check (`ganaug.data.leakage`) fails or drops per data.on_leakage, duplicates
inside a split are removed per data.dedup_within_split, and a class that lost more than
data.max_leakage_drop of a split is a warning. With a `report_dir`, every pair found (between
and within splits) is written there first, so a failed check leaves its full report behind.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from ganaug.config import ConfigError, DataConfig
from ganaug.data.leakage import (
    LeakageError, centred, class_loss_warnings, class_losses, dedup_rows, duplicate_warnings, find_leakage,
    find_within_split_duplicates, image_hashes, leakage_message, near_duplicate_pairs, remove_rows, thumbnails,
)
from ganaug.data.leakage_report import write_leakage_report
from ganaug.data.packed import SPLITS, PackedDataset, Split
from ganaug.data.source_images import DataSourceError, SourceImages, skipped_record
from ganaug.data.sources import SOURCES
from ganaug.data.splits import DisjointSets, group_split, label_strata, stratified_split_indices


def duplicate_links(images: np.ndarray, features: torch.Tensor | None, threshold: float | None,
                    groups: np.ndarray | None) -> tuple[np.ndarray, int]:
    """Group ids joining patients, exact duplicates and near duplicates; and how many images were linked."""
    sets = DisjointSets(len(images))
    linked = 0
    first: dict[Any, int] = {}
    keys = list(zip(["hash"] * len(images), image_hashes(images)))
    if groups is not None:
        keys += list(zip(["patient"] * len(images), groups.tolist()))
    for i, key in enumerate(keys):
        row = i % len(images)
        if key in first:
            linked += key[0] == "hash"
            sets.union(first[key], row)
        else:
            first[key] = row
    if threshold is not None and features is not None:
        for a, b, _ in near_duplicate_pairs(features, threshold):
            linked += sets.find(a) != sets.find(b)
            sets.union(a, b)
    return sets.labels(), linked


RESPLIT_HINTS = {  # the params that make `prepare` split a source itself instead of keeping its split
    "folders": "data.folders.splits=ignore", "dicom": "data.dicom.splits=ignore", "nih": "data.nih.splits=patient",
}


def split_pool(labels: np.ndarray, groups: np.ndarray | None, fractions: dict[str, float], seed: int) -> np.ndarray:
    """(N,) split names for a pool of images: scikit-learn stratified without groups, else patient-aware."""
    try:
        return _split_pool(labels, groups, fractions, seed)
    except DataSourceError:
        raise
    except ValueError as exc:  # scikit-learn: a class too small to stratify
        raise DataSourceError(
            f"cannot make a stratified {'/'.join(fractions)} split of {len(labels)} images with fractions "
            f"{fractions}: {exc}; every class needs a few images per split (more images, or other fractions)"
        ) from exc


def _split_pool(labels: np.ndarray, groups: np.ndarray | None, fractions: dict[str, float], seed: int) -> np.ndarray:
    if groups is not None:
        return group_split(labels, groups, fractions, seed)
    if list(fractions) == list(SPLITS):
        index = stratified_split_indices(labels, fractions["val"], fractions["test"], seed)
    else:  # carving one split out of a train folder
        (keep, _), (carved, carved_share) = fractions.items()
        kept, out = train_test_split(np.arange(len(labels)), test_size=carved_share, stratify=label_strata(labels),
                                     random_state=seed)
        index = {keep: kept, carved: out}
    names = np.empty(len(labels), dtype=object)
    for name, rows in index.items():
        names[rows] = name
    return names.astype(str)


def assign_splits(raw: SourceImages, cfg: DataConfig, features: torch.Tensor | None
                  ) -> tuple[np.ndarray, dict[str, Any]]:
    """(N,) split name per image and a record of how the split was made."""
    v, t = cfg.val_fraction, cfg.test_fraction
    if raw.given_split is None:
        pool = np.arange(len(raw.images))
        fractions = {"train": 1 - v - t, "val": v, "test": t}
        assignment = np.empty(len(pool), dtype=object)
        record: dict[str, Any] = {"method": "split here", "fractions": fractions}
    else:
        present = [s for s in SPLITS if (raw.given_split == s).any()]
        missing = [s for s in SPLITS if s not in present]
        record = {"method": "kept from the source", "kept": present}
        if not missing:
            return raw.given_split.astype(str), record
        if "train" not in present:
            raise DataSourceError(
                f"source {raw.source['name']!r} has splits {present} but no train split to carve {missing} from"
            )
        shares = {"val": v, "test": t}
        if any(shares[s] == 0 for s in missing):
            raise DataSourceError(
                f"source {raw.source['name']!r} has no {missing} split and data."
                + " / data.".join(f"{s}_fraction" for s in missing if shares[s] == 0)
                + " is 0: expected > 0 to carve it from the train split"
            )
        pool = np.flatnonzero(raw.given_split == "train")
        fractions = {"train": 1 - sum(shares[s] for s in missing), **{s: shares[s] for s in missing}}
        assignment = raw.given_split.astype(object)
        record["carved_from_train"] = {s: shares[s] for s in missing}
    groups = None if raw.groups is None else raw.groups[pool]
    linked_groups, linked = duplicate_links(
        raw.images[pool], None if features is None else features[pool], cfg.near_duplicate_threshold, groups
    )
    use_groups = raw.groups is not None or linked > 0
    assignment[pool] = split_pool(raw.labels[pool], linked_groups if use_groups else None, fractions, cfg.seed)
    record.update({
        "stratified": (
            "iterative stratification of whole groups, per " + ("finding" if raw.labels.ndim == 2 else "class")
            if use_groups else ("multi-hot label combinations" if raw.labels.ndim == 2 else "class")
        ),
        "patient_aware": raw.groups is not None,
        "duplicate_images_kept_together": linked,
        "seed": cfg.seed,
    })
    return assignment.astype(str), record


def check_classes(dataset: PackedDataset) -> list[str]:
    """Every class must have images in every split (an error, not a warning). For multi-label sets a
    finding must be in train; a finding missing from val or test (too few patients to be in all
    three) is returned as a warning, because the split stays patient-aware."""
    warnings = []
    for name, split in dataset.splits.items():
        if len(split) == 0:
            raise DataSourceError(f"split {name!r} is empty (source {dataset.source.get('name')!r})")
        for class_name, count in zip(dataset.class_names, split.class_counts(dataset.n_classes)):
            if count > 0:
                continue
            if dataset.multilabel and name != "train":
                warnings.append(f"finding {class_name!r} has no images in the {name} split")
                continue
            raise DataSourceError(
                f"class {class_name!r} has no images in the {name} split of source "
                f"{dataset.source.get('name')!r}; every class needs images in train, val and test"
            )
    return warnings


def build_dataset(cfg: DataConfig, report_dir: str | Path | None = None) -> PackedDataset:
    """Read data.source, split (patient-aware, duplicates kept together), check leakage, remove what
    data.on_leakage / data.dedup_within_split ask, and pack. With `report_dir`, the leakage and
    duplicate report is written there, also when the check fails."""
    if cfg.dedup_within_split == "near" and cfg.near_duplicate_threshold is None:
        raise ConfigError("data.dedup_within_split=near needs data.near_duplicate_threshold (a correlation), "
                          "but it is null; expected a threshold such as 0.97, or dedup_within_split=exact")
    raw = SOURCES[cfg.source](cfg)
    features = mean_thumbnail = None
    if cfg.near_duplicate_threshold is not None:
        thumbs = thumbnails(raw.images)
        mean_thumbnail = thumbs.mean(dim=0)  # the set's shared anatomy, removed before comparing
        features = centred(thumbs, mean_thumbnail)
    assignment, split_record = assign_splits(raw, cfg, features)
    splits, items = {}, {}
    for name in SPLITS:
        rows = np.flatnonzero(assignment == name)
        splits[name] = Split(raw.images[rows], raw.labels[rows], None if raw.groups is None else raw.groups[rows])
        items[name] = [raw.item_ids[i] for i in rows]
    check_classes(PackedDataset(splits, raw.class_names, raw.source, raw.preprocessing))
    report = find_leakage(splits, items, cfg.near_duplicate_threshold, mean_thumbnail)
    duplicates = find_within_split_duplicates(splits, items, cfg.near_duplicate_threshold, mean_thumbnail)
    leaked = report.flagged if cfg.on_leakage == "drop" else {name: set() for name in SPLITS}
    removal = {"leaked": leaked, "duplicates": dedup_rows(duplicates, cfg.dedup_within_split, leaked)}
    losses = class_losses(splits, removal, raw.class_names)
    hint = RESPLIT_HINTS.get(cfg.source)
    if report_dir is not None:
        write_leakage_report(report_dir, report, duplicates, splits, raw.class_names, cfg, removal, losses)
    if report.found and cfg.on_leakage == "fail":
        raise LeakageError(leakage_message(report, hint, None if report_dir is None else str(report_dir),
                                           class_losses(splits, {"leaked": report.flagged}, raw.class_names)))
    removed = {name: leaked[name] | removal["duplicates"][name] for name in SPLITS}
    kept, _, _ = remove_rows(splits, items, removed)
    loss_warnings = class_loss_warnings(losses, cfg.max_leakage_drop, hint)
    dataset = PackedDataset(kept, raw.class_names, raw.source, raw.preprocessing)
    try:
        warnings = check_classes(dataset)
    except DataSourceError as exc:  # a class emptied by the removal: say which removal
        if not loss_warnings:
            raise
        raise DataSourceError(f"{exc}; after removing images: " + " ".join(loss_warnings)) from exc
    left = duplicates.without(removed).counts({name: len(split) for name, split in kept.items()})
    warnings += loss_warnings + duplicate_warnings(left, cfg.dedup_within_split)
    extra = {
        "split": split_record,
        "leakage": {**report.record(cfg.on_leakage, {name: len(leaked[name]) for name in SPLITS}),
                    "class_losses": losses, "max_leakage_drop": cfg.max_leakage_drop},
        "duplicates_within_split": duplicates.record(
            {name: len(split) for name, split in splits.items()}, cfg.dedup_within_split,
            {name: len(removal["duplicates"][name]) for name in SPLITS}),
        "skipped_files": skipped_record(raw.skipped_files),
        "warnings": warnings,
    }
    return PackedDataset(kept, raw.class_names, raw.source, raw.preprocessing, extra)
