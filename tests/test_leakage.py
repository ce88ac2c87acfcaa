"""Patient-aware splits and the leakage check: exact and near duplicates, patient overlap, fail / drop,
the report written even when the check fails, what a drop costs each class, duplicates inside a split."""

from __future__ import annotations

import csv
import dataclasses
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from ganaug.config import params_from_dict
from ganaug.data.build import build_dataset
from ganaug.data.leakage import (
    DEFAULT_NEAR_DUPLICATE_THRESHOLD, MESSAGE_EXAMPLES, LeakageError, WithinSplitDuplicates, centred, dedup_rows,
    drop_flagged, duplicate_groups, find_leakage, find_within_split_duplicates, leakage_message, thumbnails,
)
from ganaug.data.leakage_report import CONTACT_SHEET_PAIRS
from ganaug.data.packed import SPLITS, Split
from ganaug.data.splits import group_split

from conftest import smooth_images
from test_sources import write_image


def test_group_split_never_puts_a_patient_in_two_splits():
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 150, 1000)
    labels = rng.choice(3, 1000, p=[0.6, 0.3, 0.1])
    assignment = group_split(labels, groups, {"train": 0.7, "val": 0.15, "test": 0.15}, seed=1)
    for group in np.unique(groups):
        assert len(set(assignment[groups == group])) == 1
    shares = [np.mean(assignment == s) for s in SPLITS]
    assert abs(shares[0] - 0.7) < 0.03 and abs(shares[1] - 0.15) < 0.03
    for s in SPLITS:  # stratified: each class's share is about the same in every split
        assert abs(np.mean(labels[assignment == s] == 2) - 0.1) < 0.04
    np.testing.assert_array_equal(assignment, group_split(labels, groups, {"train": 0.7, "val": 0.15, "test": 0.15}, seed=1))


def test_group_split_multilabel_rare_finding_reaches_every_split():
    rng = np.random.default_rng(1)
    labels = (rng.random((300, 4)) < [0.3, 0.2, 0.1, 0.0]).astype(np.uint8)
    groups = np.arange(300) // 2
    labels[[10, 11, 50, 90, 140]] = [0, 0, 0, 1]  # a finding in 4 patients only
    assignment = group_split(labels, groups, {"train": 0.6, "val": 0.2, "test": 0.2}, seed=0)
    assert {assignment[i] for i in (10, 50, 90, 140)} == set(SPLITS)
    for group in np.unique(groups):
        assert len(set(assignment[groups == group])) == 1


def jpeg_copy(pixels: np.ndarray, quality: int = 60, brighter: int = 12) -> np.ndarray:
    """A re-encoded, brightened copy: not identical, but the same picture."""
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels.astype(int) + brighter, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=quality)
    return np.asarray(Image.open(buffer))


def splits_with_leaks() -> tuple[dict[str, Split], dict[str, list[str]]]:
    images = smooth_images(30, 32, seed=5)
    val = images[10:20].copy()
    test = images[20:30].copy()
    val[0] = images[3]  # exact duplicate of train 3
    test[1, 0] = jpeg_copy(images[4, 0])  # near duplicate of train 4
    test[2, 0] = jpeg_copy(val[5, 0])  # near duplicate of val 5
    groups = {"train": np.arange(10), "val": np.arange(10, 20), "test": np.arange(20, 30)}
    groups["test"][7] = 6  # patient 6 in train and test
    splits = {
        "train": Split(images[:10], np.zeros(10, np.int64), groups["train"]),
        "val": Split(val, np.zeros(10, np.int64), groups["val"]),
        "test": Split(test, np.zeros(10, np.int64), groups["test"]),
    }
    items = {s: [f"{s}/{i}.png" for i in range(10)] for s in SPLITS}
    return splits, items


def mean_of(splits: dict[str, Split]) -> torch.Tensor:
    return thumbnails(np.concatenate([s.images for s in splits.values()])).mean(dim=0)


def test_leakage_check_finds_exact_and_near_duplicates_and_patients():
    splits, items = splits_with_leaks()
    report = find_leakage(splits, items, 0.97, mean_of(splits))
    assert report.exact == [{"splits": ["train", "val"], "items": ["train/3.png", "val/0.png"], "rows": [3, 0]}]
    near = {(e["items"][0], e["items"][1]) for e in report.near}
    assert near == {("train/4.png", "test/1.png"), ("val/5.png", "test/2.png")}
    assert all(e["correlation"] >= 0.97 for e in report.near)
    assert report.patients == [{"patient": 6, "images": {"train": ["train/6.png"], "test": ["test/7.png"]}}]
    assert report.counts() == {
        "exact_duplicates": {"train-val": 1, "train-test": 0, "val-test": 0},
        "near_duplicates": {"train-val": 0, "train-test": 1, "val-test": 1},
        "patients_in_two_splits": 1,
    }
    only_exact = find_leakage(splits, items, None, mean_of(splits))
    assert only_exact.near == [] and len(only_exact.exact) == 1


def test_different_images_are_not_near_duplicates():
    features = centred(thumbnails(smooth_images(200, 32, seed=11)), thumbnails(smooth_images(200, 32, seed=11)).mean(0))
    similarity = features @ features.T
    assert similarity.fill_diagonal_(0).max() < 0.9


def test_drop_removes_leaks_from_the_later_split_only():
    splits, items = splits_with_leaks()
    report = find_leakage(splits, items, 0.97, mean_of(splits))
    kept, kept_items, dropped = drop_flagged(splits, items, report)
    assert dropped == {"train": 0, "val": 1, "test": 3}
    assert "val/0.png" not in kept_items["val"] and {"test/1.png", "test/2.png", "test/7.png"}.isdisjoint(kept_items["test"])
    np.testing.assert_array_equal(kept["train"].images, splits["train"].images)
    assert len(kept["test"].groups) == 7 and 6 not in kept["test"].groups


def test_leakage_message_lists_items_and_is_capped():
    splits, items = splits_with_leaks()
    message = leakage_message(find_leakage(splits, items, 0.97, mean_of(splits)))
    assert "exact duplicate: train: train/3.png = val: val/0.png" in message
    assert "patient 6 in 2 splits: train: 1 image(s), e.g. train/6.png; test: 1 image(s), e.g. test/7.png" in message
    many = MESSAGE_EXAMPLES + 7
    images = smooth_images(many, 28, seed=2)
    same = {s: Split(images, np.zeros(many, np.int64)) for s in ("train", "val")}
    same["test"] = Split(smooth_images(2, 28, seed=3), np.zeros(2, np.int64))
    report = find_leakage(same, {s: [f"{s}{i}" for i in range(many)] for s in SPLITS}, None, None)
    assert "… and 7 more" in leakage_message(report)
    assert "full report: out/leakage/ (pairs.csv" in leakage_message(report, report_dir="out/leakage")


def duplicate_tree(root, size=36):
    """train / test class folders where test/a/copy.png is train/a/0.png and test/b/jpeg.jpg a re-encoded train/b/1.png."""
    images = smooth_images(26, size, seed=6)[:, 0]
    for i in range(8):
        write_image(root / "train" / "a" / f"{i}.png", images[i])
        write_image(root / "train" / "b" / f"{i}.png", images[8 + i])
    for i in range(4):
        write_image(root / "test" / "a" / f"t{i}.png", images[16 + i])
        write_image(root / "test" / "b" / f"t{i}.png", images[20 + i])
    write_image(root / "test" / "a" / "copy.png", images[0])
    write_image(root / "test" / "b" / "jpeg.jpg", jpeg_copy(images[9]))
    return root


def data_config(root, **data):
    return params_from_dict({"data": {"source": "folders", "image_size": 32, "workers": 1, "val_fraction": 0.25,
                                      "folders": {"root": str(root)}, **data}}).data


def test_duplicates_across_split_folders_fail_by_default_and_drop_on_request(tmp_path):
    root = duplicate_tree(tmp_path / "tree")
    with pytest.raises(LeakageError) as excinfo:
        build_dataset(data_config(root))
    message = str(excinfo.value)
    assert "1 exact duplicate(s)" in message and "1 near duplicate(s)" in message
    assert "test: test/a/copy.png" in message and "test: test/b/jpeg.jpg" in message
    dataset = build_dataset(data_config(root, on_leakage="drop"))
    assert len(dataset.test) == 8 and len(dataset.train) + len(dataset.val) == 16
    leakage = dataset.extra["leakage"]
    assert leakage["dropped"] == {"train": 0, "val": 0, "test": 2} and leakage["action"] == "drop"
    assert leakage["rules"]["near_duplicate_threshold"] == 0.97


def test_a_split_made_here_keeps_duplicates_together(tmp_path):
    root = duplicate_tree(tmp_path / "tree")
    dataset = build_dataset(data_config(root, val_fraction=0.2, test_fraction=0.2, folders={"root": str(root), "splits": "ignore"}))
    assert dataset.extra["split"]["duplicate_images_kept_together"] == 2
    assert sum(dataset.extra["leakage"]["counts"]["exact_duplicates"].values()) == 0
    assert sum(dataset.extra["leakage"]["counts"]["near_duplicates"].values()) == 0
    assert sum(len(s) for s in dataset.splits.values()) == 26
    exact_only = build_dataset(dataclasses.replace(
        data_config(root, val_fraction=0.2, test_fraction=0.2, folders={"root": str(root), "splits": "ignore"}),
        near_duplicate_threshold=None))
    assert exact_only.extra["split"]["duplicate_images_kept_together"] == 1


def test_too_few_images_to_stratify_is_a_clear_error(tmp_path):
    from ganaug.data.source_images import DataSourceError

    for i, pixels in enumerate(smooth_images(5, 32, seed=12)[:, 0]):
        write_image(tmp_path / "t" / ("a" if i else "b") / f"{i}.png", pixels)  # class b: one image
    with pytest.raises(DataSourceError, match="cannot make a stratified train/val/test split of 5 images"):
        build_dataset(data_config(tmp_path / "t", val_fraction=0.2, test_fraction=0.2))


# ----- the report on disk, class losses, duplicates inside a split --------------------------------


def leaky_tree(root):
    """Kept train/test folders (val carved from train) where test/b is mostly train/b again:
    train a 10, b 10 (+ b/9_jpeg.jpg, a re-encoded b/9: a near pair inside train);
    test a: 5 new + a copy of train a/0 + t0 twice (an exact pair inside test);
    test b: 2 new + exact copies of train b/0..7 + re-encoded copies of b/8, b/9.
    Between splits: 9 exact and 2 near duplicates (11 pairs, more than a message shows)."""
    images = smooth_images(28, 32, seed=21)[:, 0]
    for i in range(10):
        write_image(root / "train" / "a" / f"{i}.png", images[i])
        write_image(root / "train" / "b" / f"{i}.png", images[10 + i])
    write_image(root / "train" / "b" / "9_jpeg.jpg", jpeg_copy(images[19], brighter=0, quality=90))
    for i in range(5):
        write_image(root / "test" / "a" / f"t{i}.png", images[20 + i])
    write_image(root / "test" / "a" / "t0_again.png", images[20])
    write_image(root / "test" / "a" / "copy0.png", images[0])
    for i in range(2):
        write_image(root / "test" / "b" / f"t{i}.png", images[25 + i])
    for i in range(8):
        write_image(root / "test" / "b" / f"copy{i}.png", images[10 + i])
    for i in (8, 9):
        write_image(root / "test" / "b" / f"jpeg{i}.jpg", jpeg_copy(images[10 + i]))
    return root


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_failed_check_writes_the_full_report_and_names_it(tmp_path):
    root, out = leaky_tree(tmp_path / "tree"), tmp_path / "reports" / "leakage"
    with pytest.raises(LeakageError) as excinfo:
        build_dataset(data_config(root), report_dir=out)
    message = str(excinfo.value)
    assert "9 exact duplicate(s)" in message and "2 near duplicate(s)" in message
    assert f"full report: {out}/ (pairs.csv" in message and "… and 1 more" in message  # 11 pairs, 10 shown
    assert "it would remove test a 1 of 7; test b 10 of 12 images" in message
    assert sorted(p.name for p in out.iterdir()) == ["pairs.csv", "pairs.png", "patients.csv", "summary.json"]
    pairs = read_csv(out / "pairs.csv")
    between = [p for p in pairs if p["scope"] == "between_splits"]
    assert len(between) == 11 and {p["kind"] for p in between} == {"exact", "near"}
    assert {p["item_b"] for p in between} == {"test/a/copy0.png", *(f"test/b/copy{i}.png" for i in range(8)),
                                              "test/b/jpeg8.jpg", "test/b/jpeg9.jpg"}
    assert all(p["action_b"] == "kept" and p["label_a"] == p["label_b"] for p in between)
    assert all(float(p["similarity"]) >= 0.97 for p in between)
    within = [(p["split_a"], p["kind"], p["item_a"], p["item_b"]) for p in pairs if p["scope"] == "within_split"]
    assert ("test", "exact", "test/a/t0.png", "test/a/t0_again.png") in within
    assert [w[1:] for w in within if w[0] != "test"] == [("near", "train/b/9.png", "train/b/9_jpeg.jpg")]
    assert [p["pair"] for p in pairs] == [str(i) for i in range(1, len(pairs) + 1)]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["outcome"].startswith("prepare failed")
    assert sum(summary["between_splits"]["exact_duplicates"].values()) == 9
    assert summary["within_split"]["test"]["exact_pairs"] == 1 and summary["files"]["pairs.csv"] == len(pairs)
    sheet = Image.open(out / "pairs.png")  # 64 px tiles for 32 px images, 4 pairs per row
    assert sheet.size == (4 * (2 * 64 + 12), -(-min(len(pairs), CONTACT_SHEET_PAIRS) // 4) * (64 + 14 + 8))
    assert not list(out.parent.glob(".leakage.tmp-*"))


def test_drop_warns_and_records_a_class_that_lost_most_of_a_split(tmp_path):
    root = leaky_tree(tmp_path / "tree")
    dataset = build_dataset(data_config(root, on_leakage="drop"), report_dir=tmp_path / "report")
    losses = dataset.extra["leakage"]["class_losses"]
    assert losses["test"]["b"] == {"before": 12, "after": 2, "leaked": 10, "duplicates": 0}
    assert losses["test"]["a"] == {"before": 7, "after": 6, "leaked": 1, "duplicates": 0}  # 14%: under 0.2
    assert dataset.test.class_counts(2) == [6, 2]
    warned = [w for w in dataset.extra["warnings"] if "data.max_leakage_drop" in w]
    assert len(warned) == 1
    assert ("class 'b' kept 2 of its 12 test images (83% removed: 10 by data.on_leakage=drop), more than "
            "data.max_leakage_drop=0.2") in warned[0] and "data.folders.splits=ignore re-splits" in warned[0]
    assert dataset.extra["leakage"]["max_leakage_drop"] == 0.2
    pairs = read_csv(tmp_path / "report" / "pairs.csv")
    assert {p["action_b"] for p in pairs if p["scope"] == "between_splits"} == {"dropped"}
    lenient = build_dataset(data_config(root, on_leakage="drop", max_leakage_drop=0.9))
    assert not [w for w in lenient.extra["warnings"] if "data.max_leakage_drop" in w]
    assert lenient.extra["leakage"]["class_losses"] == dataset.extra["leakage"]["class_losses"]


@pytest.mark.parametrize("mode, removed_test, removed_train_val", [("none", 0, 0), ("exact", 1, 0), ("near", 1, 1)])
def test_duplicates_inside_a_split_are_reported_and_removed_on_request(tmp_path, mode, removed_test, removed_train_val):
    root = leaky_tree(tmp_path / "tree")
    dataset = build_dataset(data_config(root, on_leakage="drop", dedup_within_split=mode))
    record = dataset.extra["duplicates_within_split"]
    counts = record["counts"]
    assert counts["test"] == {"exact_pairs": 1, "near_pairs": 0, "images_with_a_copy": 2,
                              "share_with_a_copy": round(2 / 19, 4), "label_conflicts": 0}
    assert counts["train"]["near_pairs"] + counts["val"]["near_pairs"] == 1  # kept together when val was carved
    assert record["action"] == mode and record["removed"]["test"] == removed_test
    assert record["removed"]["train"] + record["removed"]["val"] == removed_train_val
    assert len(dataset.test) == 19 - 11 - removed_test
    assert sum(len(dataset.splits[s]) for s in ("train", "val")) == 21 - removed_train_val
    assert record["pairs"]["test"] == [{"kind": "exact", "items": ["test/a/t0.png", "test/a/t0_again.png"],
                                        "correlation": 1.0, "same_label": True}]
    test_warning = [w for w in dataset.extra["warnings"] if w.startswith("test: ")]
    assert bool(test_warning) == (mode == "none")  # a copy left in test counts twice in every metric
    if test_warning:
        assert "test: 2 images (25.0%) have an exact or near copy in test" in test_warning[0]
        assert "data.dedup_within_split=exact keeps one image of each" in test_warning[0]


def test_dedup_keeps_one_image_of_each_set_of_copies():
    def pairs(*rows, kind="near"):
        return [{"kind": kind, "rows": list(r)} for r in rows]

    chain = WithinSplitDuplicates({"train": pairs((0, 1), (1, 2)), "val": pairs((0, 1), (0, 2), kind="exact"),
                                   "test": pairs((0, 1))})
    removed = dedup_rows(chain, "near", {"test": {0}})
    assert removed == {"train": {1}, "val": {1, 2}, "test": set()}  # 2 is no copy of 0; test 0 was dropped
    assert dedup_rows(chain, "exact", {}) == {"train": set(), "val": {1, 2}, "test": set()}
    assert dedup_rows(chain, "none", {}) == {"train": set(), "val": set(), "test": set()}


def test_duplicate_groups_join_exact_and_near_copies_only():
    images = smooth_images(12, 32, seed=8)
    images[5] = images[2]
    images[9, 0] = jpeg_copy(images[7, 0])
    groups = duplicate_groups(images)
    assert groups[5] == groups[2] and groups[9] == groups[7] and len(np.unique(groups)) == 10
    assert len(np.unique(duplicate_groups(images, None))) == 11
    assert DEFAULT_NEAR_DUPLICATE_THRESHOLD == params_from_dict({}).data.near_duplicate_threshold
    splits = {s: Split(images, np.zeros(12, np.int64)) for s in SPLITS}
    found = find_within_split_duplicates(splits, {s: [str(i) for i in range(12)] for s in SPLITS}, 0.97,
                                         thumbnails(images).mean(dim=0))
    assert [(p["kind"], p["rows"]) for p in found.pairs["val"]] == [("exact", [2, 5]), ("near", [7, 9])]


def write_params(path, root, **data):
    data = {"source": "folders", "image_size": 32, "workers": 1, "val_fraction": 0.25, "folders": {"root": str(root)},
            **data}
    path.write_text(json.dumps({"data": data}))  # JSON is YAML
    return path


@pytest.mark.parametrize("data, code, names", [
    ({}, 1, ["reports/leakage/ (pairs.csv", "9 exact duplicate(s)", "data.on_leakage=drop"]),
    ({"dedup_within_split": "all"}, 2, ["data.dedup_within_split"]),
    ({"max_leakage_drop": 1.5}, 2, ["data.max_leakage_drop"]),
    ({"dedup_within_split": "near", "near_duplicate_threshold": None}, 1,
     ["data.dedup_within_split=near", "data.near_duplicate_threshold"]),
])
def test_prepare_command_failures_name_the_key_or_report(tmp_path, monkeypatch, capsys, data, code, names):
    from ganaug.cli import main

    root = leaky_tree(tmp_path / "tree")
    monkeypatch.chdir(tmp_path)
    assert main(["prepare", "--params", str(write_params(tmp_path / "params.yaml", root, **data))]) == code
    error = capsys.readouterr().err
    assert all(name in error for name in names), error
    assert not (tmp_path / "data").exists() and not list(tmp_path.rglob(".*.tmp-*"))
    assert (tmp_path / "reports" / "leakage" / "pairs.csv").exists() == (code == 1 and not data)
