"""Leakage between splits: exact duplicates, near duplicates and patients in two splits.

Rules (recorded in meta.json with the report):
- exact duplicate: identical pixels after preprocessing (sha1 of the uint8 image);
- near duplicate: the centred correlation of two 32x32 thumbnails is at least
  `data.near_duplicate_threshold` (default 0.97). A thumbnail is the area-averaged image,
  z-normalised per image, minus the data set's mean thumbnail (which removes the anatomy every
  chest X-ray shares), then normalised to unit length. `benchmarks/near_duplicate_threshold.py`
  measured on the shared data: the closest two images that are not identical score 0.933
  (Kaggle, 5840 images), 0.960 (NIH 1000: follow-ups of one patient), 0.950 (PneumoniaMNIST)
  and 0.966 (the default phantoms); copies re-encoded (JPEG q60), blurred (sigma 0.8 px),
  noised (sigma 8) or gamma-shifted (0.8) score 0.973-0.997 in 95% of cases (5th
  percentiles), except sigma-8 noise on 28 px images (0.943). So 0.97 flags such copies and
  no distinct image seen; crops and shifts are not caught;
- patient overlap: one patient group id in two splits.

Every leaked image is reported from its *later* split (train < val < test), paired with an image
of an earlier split; `drop` removes exactly those (the train split is never reduced), and for a
patient in several splits keeps the patient's images in the earliest split only.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ganaug.data.packed import SPLITS, Split
from ganaug.data.source_images import DataSourceError, listing

THUMBNAIL_SIDE = 32
BLOCK_ELEMENTS = 2**25  # similarities held at once (128 MB of float32), whatever the set size

RULES = {
    "exact_duplicate": "identical pixels after preprocessing (sha1)",
    "near_duplicate": (
        f"centred correlation of {THUMBNAIL_SIDE}x{THUMBNAIL_SIDE} area-averaged thumbnails "
        "(z-normalised per image, minus the data set's mean thumbnail) >= data.near_duplicate_threshold"
    ),
    "patient_overlap": "one patient id in two splits",
}


class LeakageError(DataSourceError):
    """Images or patients shared between splits, with data.on_leakage=fail."""


def image_hashes(images: np.ndarray) -> list[str]:
    return [hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest() for image in images]


def thumbnails(images: np.ndarray) -> torch.Tensor:
    """(N, 1, H, W) uint8 -> (N, 32*32) float32, zero mean and unit length per image."""
    out = []
    for start in range(0, len(images), 4096):
        batch = torch.from_numpy(images[start : start + 4096]).float()
        thumbs = F.adaptive_avg_pool2d(batch, THUMBNAIL_SIDE).flatten(1)
        out.append(_unit(thumbs - thumbs.mean(dim=1, keepdim=True)))
    return torch.cat(out) if out else torch.zeros(0, THUMBNAIL_SIDE**2)


def centred(thumbs: torch.Tensor, mean_thumbnail: torch.Tensor) -> torch.Tensor:
    """Thumbnails minus the set's mean thumbnail, renormalised: dot products are correlations."""
    residual = thumbs - mean_thumbnail
    return _unit(residual - residual.mean(dim=1, keepdim=True))


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-6)  # constant images stay all-zero


def near_duplicate_pairs(features: torch.Tensor, threshold: float) -> list[tuple[int, int]]:
    """All pairs i < j within one set whose correlation is >= threshold."""
    pairs = []
    block = _block_rows(len(features))
    for start in range(0, len(features), block):
        sims = features[start : start + block] @ features.T  # (B, N)
        rows, cols = torch.nonzero(sims >= threshold, as_tuple=True)
        rows = rows + start
        keep = cols > rows
        pairs += list(zip(rows[keep].tolist(), cols[keep].tolist()))
    return pairs


def _block_rows(n_columns: int) -> int:
    return max(16, BLOCK_ELEMENTS // max(n_columns, 1))


def best_matches(query: torch.Tensor, reference: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """For each query row, the highest correlation with any reference row and that row's index."""
    if len(reference) == 0 or len(query) == 0:
        return np.full(len(query), -1.0), np.full(len(query), -1, dtype=np.int64)
    best, where = [], []
    block = _block_rows(len(reference))
    for start in range(0, len(query), block):
        values, index = (query[start : start + block] @ reference.T).max(dim=1)
        best.append(values)
        where.append(index)
    return torch.cat(best).numpy(), torch.cat(where).numpy()


@dataclass
class LeakageReport:
    exact: list[dict[str, Any]] = field(default_factory=list)  # {"splits", "items"}
    near: list[dict[str, Any]] = field(default_factory=list)  # {"splits", "items", "correlation"}
    patients: list[dict[str, Any]] = field(default_factory=list)  # {"patient", "images": {split: [items]}}
    flagged: dict[str, set[int]] = field(default_factory=lambda: {s: set() for s in SPLITS})  # rows to drop
    threshold: float | None = None

    @property
    def found(self) -> bool:
        return bool(self.exact or self.near or self.patients)

    def counts(self) -> dict[str, Any]:
        def per_pair(entries: list[dict[str, Any]]) -> dict[str, int]:
            pairs = {f"{a}-{b}": 0 for i, a in enumerate(SPLITS) for b in SPLITS[i + 1 :]}
            for entry in entries:
                pairs["-".join(entry["splits"])] += 1
            return pairs

        return {
            "exact_duplicates": per_pair(self.exact),
            "near_duplicates": per_pair(self.near),
            "patients_in_two_splits": len(self.patients),
        }

    def lines(self) -> list[str]:
        out = [f"exact duplicate: {sa}: {a} = {sb}: {b}"
               for (sa, sb), (a, b) in ((e["splits"], e["items"]) for e in self.exact)]
        out += [f"near duplicate (correlation {e['correlation']:.3f}): {e['splits'][0]}: {e['items'][0]} ~ "
                f"{e['splits'][1]}: {e['items'][1]}" for e in self.near]
        for p in self.patients:
            where = "; ".join(f"{split}: {len(items)} image(s), e.g. {items[0]}" for split, items in p["images"].items())
            out.append(f"patient {p['patient']} in {len(p['images'])} splits: {where}")
        return out

    def record(self, action: str, dropped: dict[str, int]) -> dict[str, Any]:
        """The report as meta.json carries it."""
        return {
            "rules": {**RULES, "near_duplicate_threshold": self.threshold},
            "counts": self.counts(),
            "action": action,
            "dropped": dropped,
            "exact_duplicates": self.exact,
            "near_duplicates": self.near,
            "patient_overlap": self.patients,
        }


def find_leakage(
    splits: dict[str, Split], items: dict[str, list[str]], threshold: float | None, mean_thumbnail: torch.Tensor
) -> LeakageReport:
    """Compare each split with the earlier ones; `items` names each image for the report."""
    report = LeakageReport(threshold=threshold)
    first_seen: dict[str, tuple[str, int]] = {}  # image hash -> (split, row) of its first occurrence
    features: dict[str, torch.Tensor] = {}
    for later_index, later in enumerate(SPLITS):
        hashes = image_hashes(splits[later].images)
        if threshold is not None:
            features[later] = centred(thumbnails(splits[later].images), mean_thumbnail)
        exact_rows = set()
        for row, digest in enumerate(hashes):
            seen = first_seen.get(digest)
            if seen is not None and seen[0] != later:
                report.exact.append({"splits": [seen[0], later], "items": [items[seen[0]][seen[1]], items[later][row]]})
                report.flagged[later].add(row)
                exact_rows.add(row)
            elif seen is None:
                first_seen[digest] = (later, row)
        if threshold is None:
            continue
        best = np.full(len(hashes), -1.0)
        match: list[tuple[str, int] | None] = [None] * len(hashes)
        for earlier in SPLITS[:later_index]:
            values, where = best_matches(features[later], features[earlier])
            better = values > best
            best[better] = values[better]
            for row in np.flatnonzero(better):
                match[row] = (earlier, int(where[row]))
        for row in np.flatnonzero(best >= threshold):
            if row in exact_rows:
                continue
            earlier, erow = match[row]
            report.near.append({
                "splits": [earlier, later],
                "items": [items[earlier][erow], items[later][row]],
                "correlation": round(float(best[row]), 4),
            })
            report.flagged[later].add(int(row))
    _patient_overlap(splits, items, report)
    return report


def _patient_overlap(splits: dict[str, Split], items: dict[str, list[str]], report: LeakageReport) -> None:
    if any(split.groups is None for split in splits.values()):
        return
    where: dict[int, dict[str, list[int]]] = {}
    for name in SPLITS:
        for row, group in enumerate(splits[name].groups.tolist()):
            where.setdefault(group, {}).setdefault(name, []).append(row)
    for group, rows_by_split in sorted(where.items()):
        if len(rows_by_split) < 2:
            continue
        report.patients.append({
            "patient": group,
            "images": {name: [items[name][r] for r in rows] for name, rows in rows_by_split.items()},
        })
        for name in list(rows_by_split)[1:]:  # SPLITS order: keep the earliest split
            report.flagged[name].update(rows_by_split[name])


def leakage_message(report: LeakageReport, resplit_hint: str | None = None) -> str:
    counts = report.counts()
    alternative = f", or split the source here ({resplit_hint})" if resplit_hint else ""
    return (
        f"leakage between splits: {sum(counts['exact_duplicates'].values())} exact duplicate(s) "
        f"{counts['exact_duplicates']}, {sum(counts['near_duplicates'].values())} near duplicate(s) "
        f"{counts['near_duplicates']}, {counts['patients_in_two_splits']} patient(s) in two splits:\n"
        + listing(report.lines())
        + "\nset data.on_leakage=drop to remove them from the later split (train is never reduced; "
        f"the report goes into meta.json){alternative}"
    )


def drop_flagged(splits: dict[str, Split], items: dict[str, list[str]], report: LeakageReport
                 ) -> tuple[dict[str, Split], dict[str, list[str]], dict[str, int]]:
    """Splits without the flagged images of later splits; returns the dropped count per split."""
    kept_splits, kept_items, dropped = {}, {}, {}
    for name in SPLITS:
        keep = np.ones(len(splits[name]), bool)
        keep[sorted(report.flagged[name])] = False
        kept_splits[name] = splits[name].subset(keep)
        kept_items[name] = [item for item, k in zip(items[name], keep) if k]
        dropped[name] = int((~keep).sum())
    return kept_splits, kept_items, dropped
