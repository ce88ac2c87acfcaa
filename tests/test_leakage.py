"""Patient-aware splits and the leakage check: exact and near duplicates, patient overlap, fail / drop."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
import torch
from PIL import Image

from ganaug.config import params_from_dict
from ganaug.data.build import build_dataset
from ganaug.data.leakage import (
    LeakageError, centred, drop_flagged, find_leakage, leakage_message, thumbnails,
)
from ganaug.data.packed import SPLITS, Split
from ganaug.data.source_images import MAX_LISTED
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
    assert report.exact == [{"splits": ["train", "val"], "items": ["train/3.png", "val/0.png"]}]
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
    many = MAX_LISTED + 7
    images = smooth_images(many, 28, seed=2)
    same = {s: Split(images, np.zeros(many, np.int64)) for s in ("train", "val")}
    same["test"] = Split(smooth_images(2, 28, seed=3), np.zeros(2, np.int64))
    report = find_leakage(same, {s: [f"{s}{i}" for i in range(many)] for s in SPLITS}, None, None)
    assert "… and 7 more" in leakage_message(report)


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
