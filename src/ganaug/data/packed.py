"""The packed dataset: one `.npz` of arrays plus one `meta.json`, never a file per image.

Arrays (all splits in one file):
    {split}_images  (N, C, H, W) uint8, C = 1 for X-ray / MRI
    {split}_labels  (N,) int64 class indices, or (N, K) uint8 multi-hot
    {split}_groups  (N,) int64 anonymous patient ids (only when the source has patients)
for split in train / val / test. `meta.json` carries class names, source, preprocessing,
per-split counts and content hashes, so the data's identity travels with it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ganaug.io import atomic_dir, write_json

SPLITS = ("train", "val", "test")
ARRAYS_FILE = "dataset.npz"
META_FILE = "meta.json"


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # (N, C, H, W) uint8
    labels: np.ndarray  # (N,) int64, or (N, K) uint8 multi-hot
    groups: np.ndarray | None = None  # (N,) int64 anonymous patient ids; None when the source has none

    def __post_init__(self) -> None:
        assert self.images.ndim == 4 and self.images.dtype == np.uint8, (
            f"images must be (N, C, H, W) uint8, got {self.images.shape} {self.images.dtype}"
        )
        assert len(self.labels) == len(self.images), (
            f"{len(self.images)} images but {len(self.labels)} labels"
        )
        assert self.groups is None or self.groups.shape == (len(self.images),), (
            f"{len(self.images)} images but groups of shape {self.groups.shape}"
        )

    def __len__(self) -> int:
        return len(self.images)

    @property
    def multilabel(self) -> bool:
        return self.labels.ndim == 2

    def class_counts(self, n_classes: int) -> list[int]:
        if self.multilabel:
            return [int(c) for c in self.labels.sum(axis=0)]
        return [int(c) for c in np.bincount(self.labels, minlength=n_classes)]

    def subset(self, keep: np.ndarray) -> Split:
        """The images selected by a boolean mask or index array, with their labels and groups."""
        groups = None if self.groups is None else self.groups[keep]
        return Split(self.images[keep], self.labels[keep], groups)

    def of_class(self, class_index: int) -> np.ndarray:
        """Images of one class, (M, C, H, W) uint8."""
        mask = self.labels[:, class_index] == 1 if self.multilabel else self.labels == class_index
        return self.images[mask]


@dataclass(frozen=True)
class PackedDataset:
    splits: dict[str, Split]
    class_names: list[str]
    source: dict[str, Any]  # where the images came from (source name, path, flag, seed…)
    preprocessing: dict[str, Any]  # what was done to them (size, resize policy…)
    extra: dict[str, Any] = field(default_factory=dict)  # leakage report and such

    @property
    def train(self) -> Split:
        return self.splits["train"]

    @property
    def val(self) -> Split:
        return self.splits["val"]

    @property
    def test(self) -> Split:
        return self.splits["test"]

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.images.shape[1:])  # (C, H, W)

    @property
    def multilabel(self) -> bool:
        return self.train.multilabel

    def content_hashes(self) -> dict[str, str]:
        return {name: split_hash(split) for name, split in self.splits.items()}

    def meta(self) -> dict[str, Any]:
        hashes = self.content_hashes()
        return {
            "format": "ganaug-packed-v1",
            "class_names": self.class_names,
            "label_kind": "multi_hot" if self.multilabel else "class_index",
            "image_shape": list(self.image_shape),
            "counts": {
                name: {
                    "total": len(split),
                    "per_class": dict(zip(self.class_names, split.class_counts(self.n_classes))),
                    **({} if split.groups is None else {"patients": len(np.unique(split.groups))}),
                }
                for name, split in self.splits.items()
            },
            "content_hash": hashes,
            "dataset_hash": combined_hash(hashes),
            "source": self.source,
            "preprocessing": self.preprocessing,
            **self.extra,
        }


def split_hash(split: Split) -> str:
    """sha256 over shapes, pixels, labels (and patient groups if any): the identity of a split's content."""
    digest = hashlib.sha256()
    arrays = (split.images, split.labels) if split.groups is None else (split.images, split.labels, split.groups)
    for array in arrays:
        digest.update(str((array.shape, str(array.dtype))).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def combined_hash(hashes: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(hashes, sort_keys=True).encode()).hexdigest()


def save_packed(dataset: PackedDataset, out_dir: str | Path) -> dict[str, Any]:
    """Write `dataset.npz` + `meta.json` into `out_dir` atomically; returns the meta."""
    meta = dataset.meta()
    arrays = {}
    for name, split in dataset.splits.items():
        arrays[f"{name}_images"] = split.images
        arrays[f"{name}_labels"] = split.labels
        if split.groups is not None:
            arrays[f"{name}_groups"] = split.groups
    with atomic_dir(out_dir) as tmp:
        np.savez(tmp / ARRAYS_FILE, **arrays)  # uncompressed: loads fast, DVC dedups by hash
        write_json(tmp / META_FILE, meta)
    return meta


def load_packed(path: str | Path, splits: tuple[str, ...] = SPLITS) -> PackedDataset:
    """Read a packed dataset directory; errors name the file and what was expected. `splits`
    reads only those (a study passes ("train", "val"): the test split's arrays are never read)."""
    path = Path(path)
    arrays_path, meta_path = path / ARRAYS_FILE, path / META_FILE
    for required in (arrays_path, meta_path):
        if not required.is_file():
            raise FileNotFoundError(
                f"packed dataset file {str(required)!r} not found (run `ganaug prepare` / `dvc repro prepare`)"
            )
    meta = json.loads(meta_path.read_text())
    with np.load(arrays_path) as npz:
        missing = [f"{s}_{k}" for s in splits for k in ("images", "labels") if f"{s}_{k}" not in npz.files]
        if missing:
            raise ValueError(f"{str(arrays_path)!r} lacks arrays {missing}")
        loaded = {
            s: Split(npz[f"{s}_images"], npz[f"{s}_labels"], npz[f"{s}_groups"] if f"{s}_groups" in npz.files else None)
            for s in splits
        }
    extra = {k: v for k, v in meta.items() if k not in _META_KEYS}
    return PackedDataset(loaded, meta["class_names"], meta["source"], meta["preprocessing"], extra)


_META_KEYS = {
    "format", "class_names", "label_kind", "image_shape", "counts", "content_hash",
    "dataset_hash", "source", "preprocessing",
}


def read_meta(path: str | Path) -> dict[str, Any]:
    """Only the meta.json of a packed dataset (cheap: no pixels)."""
    meta_path = Path(path) / META_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(f"packed dataset meta {str(meta_path)!r} not found (run `ganaug prepare`)")
    return json.loads(meta_path.read_text())
