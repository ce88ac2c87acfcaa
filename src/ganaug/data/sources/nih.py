"""Source `nih`: NIH ChestX-ray14, `Data_Entry_2017.csv` plus an image folder.

Labels from `Finding Labels` ("|"-separated; "No Finding" = none of the 14):
- `multilabel`: multi-hot over the 14 findings (or the `data.nih.findings` subset);
- `binary`: no finding (0) vs any finding (1), so the single-label pipeline can run on NIH.
With a findings subset, images that have a finding outside it are left out (counted), so an
all-zero row always means "no finding".
Patients from `Patient ID`. Splits: `patient` re-splits patient-aware; `keep` takes the CSV's
`folder` column (first path part: train / valid / test …), else the image's split folder.
Each `Image Index` is looked up by file name anywhere under `data.nih.images`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from ganaug.config import NIH_FINDINGS, DataConfig
from ganaug.data.preprocess import preprocessing_record
from ganaug.data.readers import read_files, settle_reads
from ganaug.data.source_images import (
    SPLIT_FOLDER_NAMES, BadFile, DataSourceError, SourceImages, anonymous_ids, listing,
)
from ganaug.data.sources.tree import count_values

REQUIRED_COLUMNS = ("Image Index", "Finding Labels", "Patient ID")
NO_FINDING = "No Finding"


def read_entries(csv: str) -> pd.DataFrame:
    """The CSV with its required columns checked; errors name the file and the columns."""
    path = Path(csv).expanduser()
    if not path.is_file():
        raise DataSourceError(f"data.nih.csv={csv!r}: file not found (expected NIH's Data_Entry_2017.csv)")
    try:
        entries = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as exc:
        raise DataSourceError(f"data.nih.csv={csv!r} is not a readable CSV: {exc}") from exc
    missing = [c for c in REQUIRED_COLUMNS if c not in entries.columns]
    if missing:
        raise DataSourceError(f"data.nih.csv={csv!r} lacks columns {missing} (found {list(entries.columns)})")
    duplicated = entries["Image Index"][entries["Image Index"].duplicated()].tolist()
    if duplicated:
        raise DataSourceError(f"data.nih.csv={csv!r}: Image Index listed twice:\n" + listing(duplicated))
    return entries


def parse_findings(entries: pd.DataFrame, csv: str) -> list[set[str]]:
    """Per row the set of findings (empty for "No Finding"); an unknown name is an error."""
    parsed, unknown = [], []
    for row, text in enumerate(entries["Finding Labels"]):
        names = {n.strip() for n in text.split("|") if n.strip()}
        if names == {NO_FINDING}:
            names = set()
        odd = names - set(NIH_FINDINGS)
        if odd or not text.strip():
            unknown.append(f"row {row + 2} ({entries['Image Index'].iloc[row]}): {text!r}")
        parsed.append(names)
    if unknown:
        raise DataSourceError(
            f"data.nih.csv={csv!r}: unknown Finding Labels (expected '|'-separated names from "
            f"{NIH_FINDINGS} or 'No Finding'):\n" + listing(unknown)
        )
    return parsed


def index_images(root: str, wanted: set[str]) -> tuple[dict[str, Path], int]:
    """File name -> path for the wanted names under root (recursive); and how many other files there are."""
    base = Path(root).expanduser()
    if not base.is_dir():
        raise DataSourceError(f"data.nih.images={root!r}: not a directory")
    found: dict[str, list[Path]] = {}
    unlisted = 0
    for dirpath, dirnames, filenames in os.walk(base, followlinks=True):
        dirnames.sort()
        for name in sorted(filenames):
            if name in wanted:
                found.setdefault(name, []).append(Path(dirpath) / name)
            elif not name.startswith("."):
                unlisted += 1
    twice = [f"{name}: {', '.join(str(p.relative_to(base)) for p in paths)}" for name, paths in found.items() if len(paths) > 1]
    if twice:
        raise DataSourceError(f"data.nih.images={root!r}: an Image Index is found in several places:\n" + listing(twice))
    return {name: paths[0] for name, paths in found.items()}, unlisted


def kept_split(entries: pd.DataFrame, paths: dict[str, Path], root: str) -> list[str]:
    """The split of each row for splits=keep: the CSV `folder` column, else the image's split folder."""
    base = Path(root).expanduser()
    splits, unknown = [], []
    for name, folder in zip(entries["Image Index"], entries.get("folder", [None] * len(entries))):
        where = folder if folder else paths[name].relative_to(base).as_posix()
        first = where.split("/")[0]
        split = SPLIT_FOLDER_NAMES.get(first.lower())
        if split is None:
            unknown.append(f"{name}: {where!r}")
        splits.append(split)
    if unknown:
        raise DataSourceError(
            "data.nih.splits=keep needs each image's split from the CSV 'folder' column or a split folder "
            f"(train/val/valid/test) under data.nih.images; not found for:\n" + listing(unknown)
        )
    return splits


def read_nih(cfg: DataConfig) -> SourceImages:
    """NIH images with multi-hot or binary labels and Patient ID groups."""
    ncfg = cfg.nih
    entries = read_entries(ncfg.csv)
    findings = parse_findings(entries, ncfg.csv)
    names = ncfg.findings or NIH_FINDINGS
    in_subset = np.array([f <= set(names) for f in findings])
    entries = entries[in_subset].reset_index(drop=True)
    findings = [f for f, keep in zip(findings, in_subset) if keep]
    paths, unlisted = index_images(ncfg.images, set(entries["Image Index"]))
    bad = [BadFile(n, "listed in data.nih.csv but not found under data.nih.images")
           for n in entries["Image Index"] if n not in paths]
    present = np.array([n in paths for n in entries["Image Index"]])
    entries = entries[present].reset_index(drop=True)
    findings = [f for f, keep in zip(findings, present) if keep]
    results = read_files([paths[n] for n in entries["Image Index"]], "pil", cfg.image_size, cfg.preprocess,
                         cfg.workers, desc="reading NIH")
    base = Path(ncfg.images).expanduser()
    ok, skipped = settle_reads(results, [paths[n].relative_to(base).as_posix() for n in entries["Image Index"]], bad,
                               cfg.on_bad_file, f"data.nih.images={ncfg.images!r}")
    entries = entries[ok].reset_index(drop=True)
    findings = [f for f, keep in zip(findings, ok) if keep]
    results = [r for r, keep in zip(results, ok) if keep]
    multi_hot = np.array([[name in f for name in names] for f in findings], np.uint8).reshape(-1, len(names))
    if ncfg.label_mode == "multilabel":
        labels, class_names = multi_hot, list(names)
    else:
        labels, class_names = (multi_hot.sum(axis=1) > 0).astype(np.int64), ["no finding", "finding"]
    given = kept_split(entries, paths, ncfg.images) if ncfg.splits == "keep" else None
    source = {
        "name": "nih",
        "csv": ncfg.csv,
        "images": ncfg.images,
        "resolved_images": str(base.resolve()),
        "label_mode": ncfg.label_mode,
        "findings": list(names),
        "splits": ncfg.splits,
        "rows_with_findings_outside_subset": int((~in_subset).sum()),
        "files_not_in_csv": unlisted,
        "patients": "Patient ID",
    }
    preprocessing = {
        **preprocessing_record(cfg.preprocess, cfg.image_size, [r.native_hw for r in results]),
        "native_modes": count_values([r.native_mode for r in results]),
    }
    return SourceImages(
        images=np.stack([r.pixels for r in results])[:, None],
        labels=labels,
        class_names=class_names,
        item_ids=[paths[n].relative_to(base).as_posix() for n in entries["Image Index"]],
        source=source,
        preprocessing=preprocessing,
        groups=anonymous_ids(entries["Patient ID"].tolist()),
        given_split=np.array(given) if given is not None else None,
        skipped_files=skipped,
    )
