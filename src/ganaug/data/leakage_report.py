"""The leakage and duplicate report on disk: every pair, every shared patient, a contact sheet.

`prepare` writes it to a fixed folder outside DVC's outputs (`reports/leakage/`) *before* the
leakage check can fail, so a failed check leaves its full list behind (the error message only
counts and shows the first few):
    pairs.csv     one row per pair, between splits (leakage) and inside one split (duplicates):
                  pair, scope, kind, split_a, item_a, label_a, split_b, item_b, label_b,
                  similarity (centred thumbnail correlation; 1 for exact), action_b
    patients.csv  one row per image of a patient found in two splits: patient, split, item, action
    pairs.png     up to CONTACT_SHEET_PAIRS pairs side by side (a | b), near ones first, each captioned
                  with its pair number in pairs.csv, kind, similarity and splits
    summary.json  counts per split pair and per split, the rules and threshold, what was done
action_b / action: "kept", "dropped" (data.on_leakage=drop) or "removed" (data.dedup_within_split).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from ganaug.data.leakage import RULES, LeakageReport, WithinSplitDuplicates
from ganaug.data.packed import SPLITS, Split
from ganaug.io import atomic_dir, write_json

CONTACT_SHEET_PAIRS = 48  # pairs drawn in pairs.png (pairs.csv lists all)
_COLUMNS = 4  # pairs per row of the contact sheet
_GAP = 4  # px between images and cells
_CAPTION = 14  # px of caption under each pair
PAIR_FIELDS = ["pair", "scope", "kind", "split_a", "item_a", "label_a", "split_b", "item_b", "label_b",
               "similarity", "action_b"]


def pair_rows(report: LeakageReport, duplicates: WithinSplitDuplicates, splits: dict[str, Split],
              class_names: list[str], removal: dict[str, dict[str, set[int]]]) -> list[dict[str, Any]]:
    """Every pair as a CSV row (between splits first), with the split rows it joins under "_rows"."""
    out = []
    between = [("exact", e) for e in report.exact] + [("near", e) for e in report.near]
    for kind, entry in between:
        (sa, sb), (ra, rb) = entry["splits"], entry["rows"]
        out.append(_pair_row(kind, "between_splits", sa, ra, sb, rb, entry.get("correlation", 1.0),
                             entry["items"], splits, class_names, removal))
    for name in SPLITS:
        for entry in duplicates.pairs[name]:
            ra, rb = entry["rows"]
            out.append(_pair_row(entry["kind"], "within_split", name, ra, name, rb, entry["correlation"],
                                 entry["items"], splits, class_names, removal))
    for number, row in enumerate(out, start=1):
        row["pair"] = number
    return out


def _pair_row(kind: str, scope: str, sa: str, ra: int, sb: str, rb: int, similarity: float, items: list[str],
              splits: dict[str, Split], class_names: list[str], removal: dict[str, dict[str, set[int]]]
              ) -> dict[str, Any]:
    return {
        "scope": scope, "kind": kind,
        "split_a": sa, "item_a": items[0], "label_a": label_text(splits[sa].labels[ra], class_names),
        "split_b": sb, "item_b": items[1], "label_b": label_text(splits[sb].labels[rb], class_names),
        "similarity": round(float(similarity), 4), "action_b": _action(sb, rb, removal),
        "_rows": (ra, rb),
    }


def _action(split: str, row: int, removal: dict[str, dict[str, set[int]]]) -> str:
    if row in removal["leaked"].get(split, ()):
        return "dropped"
    if row in removal["duplicates"].get(split, ()):
        return "removed"
    return "kept"


def label_text(label: np.ndarray, class_names: list[str]) -> str:
    """A class index as its name; a multi-hot row as "a+b" (or "none")."""
    if np.ndim(label) == 0:
        return class_names[int(label)]
    return "+".join(n for n, on in zip(class_names, label) if on) or "none"


def contact_sheet(pairs: list[tuple[np.ndarray, np.ndarray, str]]) -> Image.Image:
    """Pairs of (1, S, S) uint8 images side by side with a caption each, _COLUMNS pairs per row."""
    side = pairs[0][0].shape[-1]
    shown = min(max(side, 64), 128)  # 28 px images are drawn at 64, 256 px ones at 128
    cell_w, cell_h = 2 * shown + 3 * _GAP, shown + _CAPTION + 2 * _GAP
    n_rows = -(-len(pairs) // _COLUMNS)
    sheet = Image.new("L", (min(len(pairs), _COLUMNS) * cell_w, n_rows * cell_h), 255)
    draw = ImageDraw.Draw(sheet)
    for i, (a, b, caption) in enumerate(pairs):
        left, top = (i % _COLUMNS) * cell_w, (i // _COLUMNS) * cell_h
        for j, image in enumerate((a, b)):
            tile = Image.fromarray(image[0]).resize((shown, shown), Image.Resampling.BILINEAR)
            sheet.paste(tile, (left + _GAP + j * (shown + _GAP), top + _GAP))
        draw.text((left + _GAP, top + _GAP + shown + 1), caption, fill=0)
    return sheet


def patient_rows(report: LeakageReport, on_leakage: str) -> list[dict[str, Any]]:
    """One row per image of each patient in two splits; images outside its earliest split are dropped with drop."""
    out = []
    for entry in report.patients:
        for position, (split, items) in enumerate(entry["images"].items()):
            action = "dropped" if position > 0 and on_leakage == "drop" else "kept"
            out += [{"patient": entry["patient"], "split": split, "item": item, "action": action} for item in items]
    return out


def write_leakage_report(out_dir: str | Path, report: LeakageReport, duplicates: WithinSplitDuplicates,
                         splits: dict[str, Split], class_names: list[str], cfg: Any,
                         removal: dict[str, dict[str, set[int]]], class_losses: dict[str, Any]) -> Path:
    """Write pairs.csv, patients.csv, pairs.png (when there are pairs) and summary.json, atomically
    replacing `out_dir`; `cfg` is the DataConfig (its leakage keys are recorded). Returns `out_dir`."""
    pairs = pair_rows(report, duplicates, splits, class_names, removal)
    patients = patient_rows(report, cfg.on_leakage)
    failed = report.found and cfg.on_leakage == "fail"
    summary = {
        "outcome": "prepare failed (data.on_leakage=fail): nothing was written to the dataset" if failed
        else "dataset written",
        "rules": {**RULES, "near_duplicate_threshold": cfg.near_duplicate_threshold},
        "between_splits": report.counts(),
        "within_split": duplicates.counts({name: len(split) for name, split in splits.items()}),
        "actions": {
            "on_leakage": cfg.on_leakage,
            "dedup_within_split": cfg.dedup_within_split,
            "dropped": {name: len(removal["leaked"].get(name, ())) for name in SPLITS},
            "removed_duplicates": {name: len(removal["duplicates"].get(name, ())) for name in SPLITS},
        },
        "class_losses": class_losses,
        "max_leakage_drop": cfg.max_leakage_drop,
        "files": {"pairs.csv": len(pairs), "patients.csv": len(patients),
                  "pairs.png": min(len(pairs), CONTACT_SHEET_PAIRS)},
    }
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        _write_csv(tmp / "pairs.csv", PAIR_FIELDS, pairs)
        _write_csv(tmp / "patients.csv", ["patient", "split", "item", "action"], patients)
        if pairs:
            # near pairs first: identical ones need no looking at, near ones are a judgement
            shown = sorted(pairs, key=lambda p: p["kind"] != "near")[:CONTACT_SHEET_PAIRS]
            drawn = [(splits[p["split_a"]].images[p["_rows"][0]], splits[p["split_b"]].images[p["_rows"][1]],
                      f"#{p['pair']} {p['kind']} {p['similarity']:.3f} {p['split_a']}~{p['split_b']}") for p in shown]
            contact_sheet(drawn).save(tmp / "pairs.png")
        write_json(tmp / "summary.json", summary)
    return out_dir


def _write_csv(path: Path, fields: list[str], rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
