"""Stage `prepare`: read the configured source, preprocess, split, check leakage, write the packed dataset."""

from __future__ import annotations

from ganaug.config import DataConfig, Params
from ganaug.data.build import build_dataset
from ganaug.data.packed import PackedDataset, save_packed
from ganaug.stages import paths


def prepare(cfg: DataConfig) -> PackedDataset:
    """Source -> split packed dataset, every class in every split, leakage failed or dropped."""
    return build_dataset(cfg)


def main(params: Params) -> None:
    dataset = prepare(params.data)
    meta = save_packed(dataset, paths.PREPARED)
    for split, counts in meta["counts"].items():
        patients = f"  {counts['patients']} patients" if "patients" in counts else ""
        print(f"{split:5s} {counts['total']:6d} images{patients}  {counts['per_class']}")
    leakage = meta["leakage"]
    if any(leakage["dropped"].values()):
        print(f"leakage dropped (data.on_leakage=drop): {leakage['dropped']} — {leakage['counts']}")
    if meta["skipped_files"]["count"]:
        print(f"skipped {meta['skipped_files']['count']} bad file(s) (data.on_bad_file=skip; listed in meta.json)")
    for warning in meta["warnings"]:
        print(f"warning: {warning}")
    print(f"wrote {paths.PREPARED} (dataset hash {meta['dataset_hash'][:12]})")
