"""Stage `prepare`: read the configured source, split, check, and write the packed dataset."""

from __future__ import annotations

from ganaug.config import DataConfig, Params
from ganaug.data.packed import PackedDataset, save_packed
from ganaug.data.sources import SOURCES, check_classes, cross_split_duplicates
from ganaug.stages import paths


def prepare(cfg: DataConfig) -> PackedDataset:
    """Source -> split packed dataset, with every class present in every split."""
    dataset = SOURCES[cfg.source](cfg)
    check_classes(dataset)
    duplicates = cross_split_duplicates(dataset)
    return PackedDataset(
        dataset.splits, dataset.class_names, dataset.source, dataset.preprocessing,
        {**dataset.extra, "leakage": {"exact_duplicates_across_splits": duplicates}},
    )


def main(params: Params) -> None:
    dataset = prepare(params.data)
    meta = save_packed(dataset, paths.PREPARED)
    for split, counts in meta["counts"].items():
        print(f"{split:5s} {counts['total']:6d} images  {counts['per_class']}")
    dups = meta["leakage"]["exact_duplicates_across_splits"]
    if any(dups.values()):
        print(f"warning: exact duplicate images shared between splits: {dups}")
    print(f"wrote {paths.PREPARED} (dataset hash {meta['dataset_hash'][:12]})")
