"""What every source hands to `prepare`: preprocessed images, labels, patients, and bad files.

A source reads and preprocesses; `ganaug.data.build` splits, checks for leakage and packs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ganaug.config import DataConfig

SPLIT_FOLDER_NAMES = {  # folder name (lower case) -> split; Kaggle train/val/test, brain MRI Training/Testing
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val",
    "test": "test", "testing": "test",
}
MAX_LISTED = 100  # error messages list at most this many items, then say how many more


class DataSourceError(ValueError):
    """A data source is missing, unreadable or has the wrong layout; the message names it."""


@dataclass(frozen=True)
class BadFile:
    file: str  # path relative to the source root, or its redacted name (never a DICOM tag value)
    reason: str


@dataclass
class SourceImages:
    """Images of one source before splitting (or with the source's own split)."""

    images: np.ndarray  # (N, 1, S, S) uint8, preprocessed
    labels: np.ndarray  # (N,) int64 class indices, or (N, K) uint8 multi-hot
    class_names: list[str]
    item_ids: list[str]  # per image: path relative to the root (redacted: "train/NORMAL/#17", "csv row 9"), or "train[12]"; reports only
    source: dict[str, Any]  # recorded in meta.json
    preprocessing: dict[str, Any]  # recorded in meta.json
    groups: np.ndarray | None = None  # (N,) int64 anonymous patient ids, or None
    given_split: np.ndarray | None = None  # (N,) "train" / "val" / "test" from the source, or None: split here
    skipped_files: list[BadFile] = field(default_factory=list)  # bad files left out (data.on_bad_file=skip)

    def __post_init__(self) -> None:
        n = len(self.images)
        assert self.images.ndim == 4 and self.images.shape[1] == 1 and self.images.dtype == np.uint8, (
            f"images must be (N, 1, S, S) uint8, got {self.images.shape} {self.images.dtype}"
        )
        assert len(self.labels) == n and len(self.item_ids) == n, (
            f"{n} images, {len(self.labels)} labels, {len(self.item_ids)} item ids"
        )
        assert self.groups is None or self.groups.shape == (n,), f"groups shape {self.groups.shape}, {n} images"
        assert self.given_split is None or self.given_split.shape == (n,), "given_split must be (N,)"


def anonymous_ids(patients: list[str]) -> np.ndarray:
    """Patient strings -> int64 ids 0, 1, … in order of first appearance; the strings go no further."""
    index: dict[str, int] = {}
    return np.array([index.setdefault(p, len(index)) for p in patients], dtype=np.int64)


def listing(lines: list[str], limit: int = MAX_LISTED) -> str:
    """Indented lines for an error message, at most `limit`, then a count of the rest."""
    shown = "\n".join(f"  {line}" for line in lines[:limit])
    if len(lines) > limit:
        shown += f"\n  … and {len(lines) - limit} more"
    return shown


REDACTED_NAMES = (
    "file names redacted (data.redact_paths): <class folder>/#k is the k-th (from 0) of the sorted paths found "
    "under that class folder, hidden names left out; 'csv row n' is line n of data.nih.csv"
)


def redacts(cfg: DataConfig) -> bool:
    """data.redact_paths resolved: `auto` redacts where file names identify patients (a patient rule applies)."""
    if cfg.redact_paths != "auto":
        return cfg.redact_paths
    if cfg.source == "folders":
        return cfg.folders.label_rule != "folder" or cfg.folders.patient_pattern is not None
    return cfg.source in ("nih", "dicom")


def handle_bad_files(bad: list[BadFile], on_bad_file: str, where: str, redacted: bool = False) -> list[BadFile]:
    """Fail with the list of bad files (data.on_bad_file=fail), or return them to be recorded as skipped."""
    if bad and on_bad_file == "fail":
        raise DataSourceError(
            f"{len(bad)} bad file(s) in {where}:\n"
            + listing([f"{b.file}: {b.reason}" for b in bad])
            + "\nfix or remove them, or set data.on_bad_file=skip to leave them out (the count is recorded in meta.json)"
            + (f"\n({REDACTED_NAMES}; data.redact_paths=false shows the names)" if redacted else "")
        )
    return bad


def require_classes(labels: np.ndarray, class_names: list[str], where: str) -> None:
    """At least 2 classes (findings, for multi-hot labels), each single-label class with images; the
    message names `where` (the source's key or file). Every class in every split is checked after splitting."""
    if len(class_names) < 2:
        raise DataSourceError(
            f"{where}: {len(class_names)} class(es) {class_names}; expected at least 2 classes with images in "
            "every split (a classifier and a class-balancing GAN need a second class)"
        )
    if labels.ndim == 1:
        counts = np.bincount(labels, minlength=len(class_names))
        empty = [name for name, n in zip(class_names, counts) if n == 0]
        if empty:
            raise DataSourceError(
                f"{where}: class(es) {empty} have no images (bad files left out) (of {len(class_names)} classes "
                f"{class_names}); expected images of every class in every split"
            )


def skipped_record(skipped: list[BadFile]) -> dict[str, Any]:
    return {"count": len(skipped), "files": [{"file": b.file, "reason": b.reason} for b in skipped]}
