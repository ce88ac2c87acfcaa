"""Data sources behind one interface: `SOURCES[name](data_config) -> SourceImages`.

Every source reads its images, makes them grayscale uint8 (N, 1, S, S) with the shared
`data.preprocess` options, labels them, and says which split each image is in if the source
has a split of its own. `ganaug.data.build.build_dataset` does the rest (split, leakage check,
pack).

| source | reads | labels | patients | own split |
|---|---|---|---|---|
| phantom | embedded generator | binary, 3-class or multi-hot | – | – |
| medmnist | a MedMNIST `.npz` (local or downloaded) | class index or multi-hot, class subsets | – | official |
| folders | class-per-folder tree (Kaggle, brain MRI) | folder name or Kaggle file-name rules | from names | split folders |
| nih | `Data_Entry_2017.csv` + images | 14 findings multi-hot, or binary | `Patient ID` | CSV `folder` |
| dicom | class-per-folder tree of DICOM files | folder name | `PatientID` (anonymised) | split folders |
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from ganaug.config import DataConfig
from ganaug.data.packed import PackedDataset
from ganaug.data.source_images import DataSourceError, SourceImages
from ganaug.data.sources.dicom import read_dicom
from ganaug.data.sources.folders import read_folders
from ganaug.data.sources.medmnist_npz import read_medmnist
from ganaug.data.sources.nih import read_nih
from ganaug.data.sources.phantom import read_phantom

SOURCES: dict[str, Callable[[DataConfig], SourceImages]] = {
    "phantom": read_phantom,
    "medmnist": read_medmnist,
    "folders": read_folders,
    "nih": read_nih,
    "dicom": read_dicom,
}

__all__ = ["SOURCES", "DataSourceError", "SourceImages", "load_phantom", "load_medmnist"]


def load_phantom(cfg: DataConfig) -> PackedDataset:
    """The phantom set, split and checked (what `prepare` writes for data.source=phantom)."""
    from ganaug.data.build import build_dataset

    return build_dataset(dataclasses.replace(cfg, source="phantom"))


def load_medmnist(cfg: DataConfig) -> PackedDataset:
    """A MedMNIST set with its official split, checked (what `prepare` writes for data.source=medmnist)."""
    from ganaug.data.build import build_dataset

    return build_dataset(dataclasses.replace(cfg, source="medmnist"))
