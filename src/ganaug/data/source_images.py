"""What every source hands to `prepare`: preprocessed images, labels, patients, and bad files.

A source reads and preprocesses; `ganaug.data.build` splits, checks for leakage and packs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

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
    file: str  # path relative to the source root (never a DICOM tag value)
    reason: str


@dataclass
class SourceImages:
    """Images of one source before splitting (or with the source's own split)."""

    images: np.ndarray  # (N, 1, S, S) uint8, preprocessed
    labels: np.ndarray  # (N,) int64 class indices, or (N, K) uint8 multi-hot
    class_names: list[str]
    item_ids: list[str]  # per image: file path relative to the root, or "train[12]"; for reports only
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


def handle_bad_files(bad: list[BadFile], on_bad_file: str, where: str) -> list[BadFile]:
    """Fail with the list of bad files (data.on_bad_file=fail), or return them to be recorded as skipped."""
    if bad and on_bad_file == "fail":
        raise DataSourceError(
            f"{len(bad)} bad file(s) in {where}:\n"
            + listing([f"{b.file}: {b.reason}" for b in bad])
            + "\nfix or remove them, or set data.on_bad_file=skip to leave them out (the count is recorded in meta.json)"
        )
    return bad


def skipped_record(skipped: list[BadFile]) -> dict[str, Any]:
    return {"count": len(skipped), "files": [{"file": b.file, "reason": b.reason} for b in skipped]}
