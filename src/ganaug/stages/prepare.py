"""Stage `prepare`: read the configured source, preprocess, split, check leakage, write the packed dataset.

The leakage and duplicate report goes to `reports/leakage/` (outside DVC's outputs), also when the
check fails."""

from __future__ import annotations

from pathlib import Path

from ganaug.config import DataConfig, Params
from ganaug.data.build import build_dataset
from ganaug.data.packed import PackedDataset, save_packed
from ganaug.stages import paths


def prepare(cfg: DataConfig, report_dir: str | Path | None = None) -> PackedDataset:
    """Source -> split packed dataset, every class in every split, leakage failed or dropped;
    with `report_dir`, the full leakage / duplicate report is written there."""
    return build_dataset(cfg, report_dir)


def main(params: Params) -> None:
    dataset = prepare(params.data, paths.LEAKAGE_REPORT)
    meta = save_packed(dataset, paths.PREPARED)
    for split, counts in meta["counts"].items():
        patients = f"  {counts['patients']} patients" if "patients" in counts else ""
        print(f"{split:5s} {counts['total']:6d} images{patients}  {counts['per_class']}")
    leakage, duplicates = meta["leakage"], meta["duplicates_within_split"]
    if any(leakage["dropped"].values()):
        print(f"leakage dropped (data.on_leakage=drop): {leakage['dropped']} — {leakage['counts']}")
    found = {s: c["exact_pairs"] + c["near_pairs"] for s, c in duplicates["counts"].items()}
    if any(found.values()):
        print(f"duplicate pairs inside a split: {found}; removed (data.dedup_within_split="
              f"{duplicates['action']}): {duplicates['removed']}")
    if meta["skipped_files"]["count"]:
        print(f"skipped {meta['skipped_files']['count']} bad file(s) (data.on_bad_file=skip; listed in meta.json)")
    print(f"leakage and duplicate report: {paths.LEAKAGE_REPORT}/ (pairs.csv, patients.csv, pairs.png, summary.json)")
    for warning in meta["warnings"]:
        print(f"warning: {warning}")
    print(f"wrote {paths.PREPARED} (dataset hash {meta['dataset_hash'][:12]})")
