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

Duplicates *inside* one split (same two rules) are not leakage, but they count twice in training
and in every metric, and they shrink the memorisation audit's reference distances: they are
found too (`find_within_split_duplicates`), reported, and removed on request
(`data.dedup_within_split`: the first image of each duplicate set stays, see `dedup_rows`).
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
from ganaug.data.splits import DisjointSets

THUMBNAIL_SIDE = 32
DEFAULT_NEAR_DUPLICATE_THRESHOLD = 0.97  # data.near_duplicate_threshold's default (measured: see above)
MESSAGE_EXAMPLES = 10  # a failed check's message shows this many pairs; the report file has them all
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


def near_duplicate_pairs(features: torch.Tensor, threshold: float) -> list[tuple[int, int, float]]:
    """All pairs (i, j, correlation), i < j, within one set whose correlation is >= threshold."""
    pairs = []
    block = _block_rows(len(features))
    for start in range(0, len(features), block):
        sims = features[start : start + block] @ features.T  # (B, N)
        rows, cols = torch.nonzero(sims >= threshold, as_tuple=True)
        values = sims[rows, cols]
        rows = rows + start
        keep = cols > rows
        pairs += list(zip(rows[keep].tolist(), cols[keep].tolist(), values[keep].tolist()))
    return pairs


def duplicate_groups(images: np.ndarray, threshold: float | None = DEFAULT_NEAR_DUPLICATE_THRESHOLD) -> np.ndarray:
    """(N,) group id per image of one set: images joined by exact or near duplicate pairs share an id.

    The rules above, with the set's own mean thumbnail; `threshold=None` joins exact duplicates only.
    """
    sets = DisjointSets(len(images))
    first: dict[str, int] = {}
    for row, digest in enumerate(image_hashes(images)):
        sets.union(first.setdefault(digest, row), row)
    if threshold is not None and len(images) > 1:
        thumbs = thumbnails(images)
        for a, b, _ in near_duplicate_pairs(centred(thumbs, thumbs.mean(dim=0)), threshold):
            sets.union(a, b)
    return sets.labels()


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
    exact: list[dict[str, Any]] = field(default_factory=list)  # {"splits", "items", "rows"}
    near: list[dict[str, Any]] = field(default_factory=list)  # {"splits", "items", "rows", "correlation"}
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
        """The report as meta.json carries it (items name the images; rows are internal)."""
        return {
            "rules": {**RULES, "near_duplicate_threshold": self.threshold},
            "counts": self.counts(),
            "action": action,
            "dropped": dropped,
            "exact_duplicates": [_without_rows(e) for e in self.exact],
            "near_duplicates": [_without_rows(e) for e in self.near],
            "patient_overlap": self.patients,
        }


def _without_rows(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in entry.items() if k != "rows"}


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
                report.exact.append({"splits": [seen[0], later], "items": [items[seen[0]][seen[1]], items[later][row]],
                                     "rows": [seen[1], row]})
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
                "rows": [erow, int(row)],
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


def leakage_message(report: LeakageReport, resplit_hint: str | None = None, report_dir: str | None = None,
                    drop_losses: dict[str, dict[str, dict[str, int]]] | None = None) -> str:
    """Counts per split pair, the first few findings, where the full report is, and the ways out;
    `drop_losses` (`class_losses` of dropping the flagged rows) says what drop would cost each class."""
    counts = report.counts()
    alternative = f", or split the source here ({resplit_hint})" if resplit_hint else ""
    where = (f"\nfull report: {report_dir}/ (pairs.csv: every pair; patients.csv: every shared patient's "
             f"images; pairs.png: pairs side by side, near ones first; summary.json)" if report_dir else "")
    cost = "; ".join(f"{split} {name} {c['leaked']} of {c['before']}" for split, per_class in (drop_losses or {}).items()
                     for name, c in per_class.items() if c["leaked"])
    return (
        f"leakage between splits: {sum(counts['exact_duplicates'].values())} exact duplicate(s) "
        f"{counts['exact_duplicates']}, {sum(counts['near_duplicates'].values())} near duplicate(s) "
        f"{counts['near_duplicates']}, {counts['patients_in_two_splits']} patient(s) in two splits; e.g.\n"
        + listing(report.lines(), limit=MESSAGE_EXAMPLES)
        + where
        + "\nset data.on_leakage=drop to remove them from the later split (train is never reduced; "
        + (f"it would remove {cost} images; " if cost else "")
        + f"the report goes into meta.json){alternative}"
    )


def drop_flagged(splits: dict[str, Split], items: dict[str, list[str]], report: LeakageReport
                 ) -> tuple[dict[str, Split], dict[str, list[str]], dict[str, int]]:
    """Splits without the flagged images of later splits; returns the dropped count per split."""
    return remove_rows(splits, items, report.flagged)


def remove_rows(splits: dict[str, Split], items: dict[str, list[str]], rows: dict[str, set[int]]
                ) -> tuple[dict[str, Split], dict[str, list[str]], dict[str, int]]:
    """Splits without the given rows (per split); returns the removed count per split."""
    kept_splits, kept_items, removed = {}, {}, {}
    for name in SPLITS:
        keep = np.ones(len(splits[name]), bool)
        keep[sorted(rows.get(name, ()))] = False
        kept_splits[name] = splits[name].subset(keep)
        kept_items[name] = [item for item, k in zip(items[name], keep) if k]
        removed[name] = int((~keep).sum())
    return kept_splits, kept_items, removed


# ---------------------------------------------------------------------------------------
# Duplicates inside one split

DEDUP_KINDS = {"none": (), "exact": ("exact",), "near": ("exact", "near")}  # data.dedup_within_split -> pair kinds removed
DUPLICATE_SHARE_WARNING = 0.05  # warn when more than this share of train has a copy in train


@dataclass
class WithinSplitDuplicates:
    """Exact and near duplicate pairs inside each split; rows index the split as assigned."""

    # split -> [{"kind": "exact" | "near", "items": [a, b], "rows": [a, b] (a < b), "correlation", "same_label"}]
    pairs: dict[str, list[dict[str, Any]]]

    def counts(self, sizes: dict[str, int]) -> dict[str, dict[str, Any]]:
        """Per split: pairs by kind, images with a copy (and their share), pairs whose labels differ."""
        out = {}
        for name in SPLITS:
            pairs = self.pairs[name]
            with_copy = {row for p in pairs for row in p["rows"]}
            out[name] = {
                "exact_pairs": sum(p["kind"] == "exact" for p in pairs),
                "near_pairs": sum(p["kind"] == "near" for p in pairs),
                "images_with_a_copy": len(with_copy),
                "share_with_a_copy": round(len(with_copy) / max(sizes[name], 1), 4),
                "label_conflicts": sum(not p["same_label"] for p in pairs),
            }
        return out

    def without(self, removed: dict[str, set[int]]) -> WithinSplitDuplicates:
        """The pairs left once `removed` rows (per split) are gone."""
        return WithinSplitDuplicates({name: [p for p in pairs if not set(p["rows"]) & removed.get(name, set())]
                                      for name, pairs in self.pairs.items()})

    def record(self, sizes: dict[str, int], action: str, removed: dict[str, int]) -> dict[str, Any]:
        """As meta.json carries it: counts per split, the action and what it removed, every pair."""
        return {
            "counts": self.counts(sizes),
            "action": action,
            "removed": removed,
            "pairs": {name: [_without_rows(p) for p in pairs] for name, pairs in self.pairs.items()},
        }


def find_within_split_duplicates(splits: dict[str, Split], items: dict[str, list[str]], threshold: float | None,
                                 mean_thumbnail: torch.Tensor | None) -> WithinSplitDuplicates:
    """Exact duplicates (each copy paired with the first image of its pixels) and near duplicates
    (every pair at or over `threshold` that is not exact) inside each split."""
    pairs: dict[str, list[dict[str, Any]]] = {}
    for name in SPLITS:
        split, found = splits[name], []
        hashes = image_hashes(split.images)
        first: dict[str, int] = {}
        for row, digest in enumerate(hashes):
            if digest in first:
                found.append(_within_pair(split, items[name], "exact", first[digest], row, 1.0))
            else:
                first[digest] = row
        if threshold is not None and len(split) > 1:
            features = centred(thumbnails(split.images), mean_thumbnail)
            found += [_within_pair(split, items[name], "near", a, b, value)
                      for a, b, value in near_duplicate_pairs(features, threshold) if hashes[a] != hashes[b]]
        pairs[name] = found
    return WithinSplitDuplicates(pairs)


def _within_pair(split: Split, items: list[str], kind: str, a: int, b: int, correlation: float) -> dict[str, Any]:
    return {"kind": kind, "items": [items[a], items[b]], "rows": [a, b], "correlation": round(float(correlation), 4),
            "same_label": bool(np.array_equal(split.labels[a], split.labels[b]))}


def dedup_rows(duplicates: WithinSplitDuplicates, mode: str, gone: dict[str, set[int]]) -> dict[str, set[int]]:
    """Rows to remove per split for data.dedup_within_split=`mode`: in row order, an image goes when
    one of its earlier copies stays (so one image of each set of copies stays). `gone`: rows
    already removed (leakage), which keep nothing of theirs."""
    removed = {}
    for name in SPLITS:
        earlier_copies: dict[int, list[int]] = {}
        for pair in duplicates.pairs[name]:
            if pair["kind"] in DEDUP_KINDS[mode]:
                a, b = pair["rows"]
                earlier_copies.setdefault(b, []).append(a)
        out, absent = set(), set(gone.get(name, ()))
        for row in sorted(earlier_copies):
            if row not in absent and any(a not in absent for a in earlier_copies[row]):
                out.add(row)
                absent.add(row)
        removed[name] = out
    return removed


def duplicate_warnings(counts_after: dict[str, dict[str, Any]], mode: str) -> list[str]:
    """Warnings for duplicates left inside a split: any in val / test (they count twice in every
    metric), more than DUPLICATE_SHARE_WARNING of train."""
    out = []
    for name in SPLITS:
        c = counts_after[name]
        if c["images_with_a_copy"] == 0 or (name == "train" and c["share_with_a_copy"] <= DUPLICATE_SHARE_WARNING):
            continue
        option = "data.dedup_within_split=" + ("near" if c["near_pairs"] else "exact")
        why = ("they weigh twice in training (the memorisation audit's threshold leaves them out)" if name == "train"
               else "they count twice in every metric on it")
        out.append(
            f"{name}: {c['images_with_a_copy']} images ({c['share_with_a_copy']:.1%}) have an exact or near copy in "
            f"{name} ({c['exact_pairs']} exact, {c['near_pairs']} near pair(s), {c['label_conflicts']} with different "
            f"labels; data.dedup_within_split={mode}): {why}; {option} keeps one image of each"
        )
    return out


# ---------------------------------------------------------------------------------------
# What removal did to each class


def class_losses(splits: dict[str, Split], removed: dict[str, dict[str, set[int]]], class_names: list[str]
                 ) -> dict[str, dict[str, dict[str, int]]]:
    """{split: {class: {"before", "after", <cause>: n}}} for splits that lost images; `removed` maps
    a cause ("leaked", "duplicates") to the rows it removes per split (disjoint across causes)."""
    out = {}
    for name in SPLITS:
        if not any(rows.get(name) for rows in removed.values()):
            continue
        n_classes = len(class_names)
        before = splits[name].class_counts(n_classes)
        by_cause = {cause: splits[name].subset(np.array(sorted(rows.get(name, ())), dtype=np.int64)).class_counts(n_classes)
                    for cause, rows in removed.items()}
        out[name] = {
            class_name: {"before": before[c], "after": before[c] - sum(v[c] for v in by_cause.values()),
                         **{cause: v[c] for cause, v in by_cause.items()}}
            for c, class_name in enumerate(class_names)
        }
    return out


CAUSE_OPTIONS = {"leaked": "data.on_leakage=drop", "duplicates": "data.dedup_within_split"}


def class_loss_warnings(losses: dict[str, dict[str, dict[str, int]]], max_share: float,
                        resplit_hint: str | None) -> list[str]:
    """One warning per (split, class) that lost more than `max_share` of its images."""
    out = []
    for name, per_class in losses.items():
        for class_name, c in per_class.items():
            lost = c["before"] - c["after"]
            if c["before"] == 0 or lost / c["before"] <= max_share:
                continue
            causes = ", ".join(f"{c[cause]} by {option}" for cause, option in CAUSE_OPTIONS.items() if c.get(cause))
            fix = (f"; {resplit_hint} re-splits all images here instead: stratified, patient- and "
                   "duplicate-aware, leak-free" if resplit_hint else "")
            out.append(
                f"class {class_name!r} kept {c['after']} of its {c['before']} {name} images ({lost / c['before']:.0%} "
                f"removed: {causes}), more than data.max_leakage_drop={max_share:g}: the {name} split no longer has "
                f"the source's class balance{fix}"
            )
    return out
