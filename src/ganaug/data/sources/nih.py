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

from pathlib import Path

import numpy as np
import pandas as pd

from ganaug.config import NIH_FINDINGS, DataConfig
from ganaug.data.preprocess import preprocessing_record
from ganaug.data.readers import accepted_by_content, read_files, settle_reads
from ganaug.data.source_images import (
    REDACTED_NAMES, SPLIT_FOLDER_NAMES, BadFile, DataSourceError, SourceImages, anonymous_ids, listing, redacts,
    require_classes,
)
from ganaug.data.sources.tree import FileWalk, count_values

REQUIRED_COLUMNS = ("Image Index", "Finding Labels", "Patient ID")
NO_FINDING = "No Finding"


def row_name(entries: pd.DataFrame, row: int, redact: bool) -> str:
    """How messages and meta.json name a CSV row's image: its Image Index, or `csv row n` (line n)."""
    return f"csv row {int(entries['csv_line'].iloc[row])}" if redact else entries["Image Index"].iloc[row]


def read_entries(csv: str, redact: bool = False) -> pd.DataFrame:
    """The CSV with its required columns and values checked; errors name the file, the column and the rows.
    A `csv_line` column keeps each row's line number in the file (the header is line 1)."""
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
    if len(entries) == 0:
        raise DataSourceError(f"data.nih.csv={csv!r} has a header but no rows; expected one row per image")
    entries["csv_line"] = np.arange(2, len(entries) + 2)
    for column in REQUIRED_COLUMNS:
        blank = [row for row, value in enumerate(entries[column]) if not value.strip()]
        if blank:
            raise DataSourceError(
                f"data.nih.csv={csv!r}: {len(blank)} row(s) with an empty {column!r}; expected a value in every row"
                + (" (the split is patient-aware: an image without a patient cannot be placed)" if column == "Patient ID" else "")
                + ":\n" + listing([f"csv row {row + 2}" for row in blank])
            )
    duplicated = [row for row, twice in enumerate(entries["Image Index"].duplicated()) if twice]
    if duplicated:
        raise DataSourceError(f"data.nih.csv={csv!r}: Image Index listed twice:\n"
                              + listing([row_name(entries, row, redact) for row in duplicated]))
    return entries


def parse_findings(entries: pd.DataFrame, csv: str, redact: bool = False) -> list[set[str]]:
    """Per row the set of findings (empty for "No Finding"); an unknown name is an error."""
    parsed, unknown = [], []
    for row, text in enumerate(entries["Finding Labels"]):
        names = {n.strip() for n in text.split("|") if n.strip()}
        if names == {NO_FINDING}:
            names = set()
        odd = names - set(NIH_FINDINGS)
        if odd or not text.strip():
            where = f"csv row {row + 2}" if redact else f"row {row + 2} ({entries['Image Index'].iloc[row]})"
            unknown.append(f"{where}: {text!r}")
        parsed.append(names)
    if unknown:
        raise DataSourceError(
            f"data.nih.csv={csv!r}: unknown Finding Labels (expected '|'-separated names from "
            f"{NIH_FINDINGS} or 'No Finding'):\n" + listing(unknown)
        )
    return parsed


def index_images(root: str, wanted: dict[str, str], redact: bool = False) -> tuple[dict[str, Path], dict[str, str], int]:
    """For the wanted names under root (recursive, links followed, each real folder once): name -> path,
    name -> why it cannot be read (a FIFO, a broken link…), and how many other files there are.
    `wanted` maps each Image Index to the name messages use (itself, or `csv row n` when redacted)."""
    base = Path(root).expanduser()
    if not base.is_dir():
        raise DataSourceError(f"data.nih.images={root!r}: not a directory")
    walk = FileWalk(base)
    walk.add_folder(base, "")
    walk.follow_links()
    found: dict[str, list[Path]] = {}
    problems: dict[str, str] = {}
    unlisted = 0
    for f in walk.found:
        if f.path.name not in wanted:
            unlisted += f.problem is None
        elif f.problem is not None:
            problems[f.path.name] = f.problem
        else:
            found.setdefault(f.path.name, []).append(f.path)
    twice = [f"{wanted[name]}: found {len(paths)} times"
             + ("" if redact else f" ({', '.join(walk.rel(p) for p in paths)})")
             for name, paths in found.items() if len(paths) > 1]
    if twice:
        raise DataSourceError(f"data.nih.images={root!r}: an Image Index is found in several places:\n" + listing(twice))
    return {name: paths[0] for name, paths in found.items()}, problems, unlisted


def kept_split(entries: pd.DataFrame, paths: dict[str, Path], root: str, redact: bool = False) -> list[str]:
    """The split of each row for splits=keep: the CSV `folder` column, else the image's split folder."""
    base = Path(root).expanduser()
    splits, unknown = [], []
    for row, (name, folder) in enumerate(zip(entries["Image Index"], entries.get("folder", [None] * len(entries)))):
        where = folder if folder else paths[name].relative_to(base).as_posix()
        first = where.split("/")[0]
        split = SPLIT_FOLDER_NAMES.get(first.lower())
        if split is None:
            unknown.append(row_name(entries, row, redact) if redact else f"{name}: {where!r}")
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
    redact = redacts(cfg)
    entries = read_entries(ncfg.csv, redact)
    findings = parse_findings(entries, ncfg.csv, redact)
    names = ncfg.findings or NIH_FINDINGS
    in_subset = np.array([f <= set(names) for f in findings])
    if not in_subset.any():
        raise DataSourceError(f"data.nih.findings={ncfg.findings}: no row of data.nih.csv={ncfg.csv!r} has only these findings")
    entries = entries[in_subset].reset_index(drop=True)
    findings = [f for f, keep in zip(findings, in_subset) if keep]
    row_names = {n: row_name(entries, row, redact) for row, n in enumerate(entries["Image Index"])}
    paths, problems, unlisted = index_images(ncfg.images, row_names, redact)
    base = Path(ncfg.images).expanduser()
    bad = [BadFile(row_names[n], problems.get(n, "listed in data.nih.csv but not found under data.nih.images"))
           for n in entries["Image Index"] if n not in paths]
    present = np.array([n in paths for n in entries["Image Index"]])
    entries = entries[present].reset_index(drop=True)
    findings = [f for f, keep in zip(findings, present) if keep]
    results = read_files([paths[n] for n in entries["Image Index"]], "pil", cfg, desc="reading NIH")
    item_ids = [row_names[n] if redact else paths[n].relative_to(base).as_posix() for n in entries["Image Index"]]
    ok, skipped = settle_reads(results, item_ids, bad, cfg.on_bad_file, f"data.nih.images={ncfg.images!r}",
                               redacted=redact)
    accepted = accepted_by_content(results, item_ids, cfg.accept_by_content)
    item_ids = [i for i, keep in zip(item_ids, ok) if keep]
    entries = entries[ok].reset_index(drop=True)
    findings = [f for f, keep in zip(findings, ok) if keep]
    results = [r for r, keep in zip(results, ok) if keep]
    multi_hot = np.array([[name in f for name in names] for f in findings], np.uint8).reshape(-1, len(names))
    if ncfg.label_mode == "multilabel":
        labels, class_names = multi_hot, list(names)
    else:
        labels, class_names = (multi_hot.sum(axis=1) > 0).astype(np.int64), ["no finding", "finding"]
    require_classes(labels, class_names, f"data.nih.csv={ncfg.csv!r} (data.nih.label_mode={ncfg.label_mode})")
    given = kept_split(entries, paths, ncfg.images, redact) if ncfg.splits == "keep" else None
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
        "accepted_by_content": accepted,
        "redact_paths": redact,
        **({"file_names": REDACTED_NAMES} if redact else {}),
    }
    preprocessing = {
        **preprocessing_record(cfg.preprocess, cfg.image_size, [r.native_hw for r in results]),
        "native_modes": count_values([r.native_mode for r in results]),
    }
    return SourceImages(
        images=np.stack([r.pixels for r in results])[:, None],
        labels=labels,
        class_names=class_names,
        item_ids=item_ids,
        source=source,
        preprocessing=preprocessing,
        groups=anonymous_ids(entries["Patient ID"].tolist()),
        given_split=np.array(given) if given is not None else None,
        skipped_files=skipped,
    )
