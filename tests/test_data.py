"""Packed dataset round trip, the MedMNIST source and its errors, splits and class checks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ganaug.config import params_from_dict
from ganaug.data.packed import PackedDataset, Split, load_packed, save_packed
from ganaug.data.sources import DataSourceError, load_medmnist, load_phantom
from ganaug.stages.prepare import prepare

from conftest import shared_file


def tiny_data_config(**data):
    base = {"image_size": 32, "phantom": {"n_images": 120}}
    return params_from_dict({"data": {**base, **data}}).data


def test_packed_round_trip_keeps_pixels_labels_and_meta(tmp_path):
    dataset = load_phantom(tiny_data_config())
    meta = save_packed(dataset, tmp_path / "prepared")
    assert sorted(p.name for p in (tmp_path / "prepared").iterdir()) == ["dataset.npz", "meta.json"]
    loaded = load_packed(tmp_path / "prepared")
    for name in ("train", "val", "test"):
        np.testing.assert_array_equal(loaded.splits[name].images, dataset.splits[name].images)
        np.testing.assert_array_equal(loaded.splits[name].labels, dataset.splits[name].labels)
    assert loaded.class_names == ["normal", "pneumonia"]
    assert loaded.content_hashes() == meta["content_hash"]
    on_disk = json.loads((tmp_path / "prepared" / "meta.json").read_text())
    assert on_disk["dataset_hash"] == meta["dataset_hash"]
    assert on_disk["counts"]["train"]["total"] == len(dataset.train)
    assert on_disk["source"]["name"] == "phantom"


def test_content_hash_changes_with_one_pixel():
    dataset = load_phantom(tiny_data_config())
    before = dataset.content_hashes()["train"]
    dataset.train.images[0, 0, 0, 0] ^= 1
    assert dataset.content_hashes()["train"] != before


def test_phantom_split_is_stratified_and_disjoint():
    dataset = prepare(tiny_data_config(seed=3))
    sizes = {k: len(v) for k, v in dataset.splits.items()}
    assert sum(sizes.values()) == 120
    ratios = [split.labels.mean() for split in dataset.splits.values()]
    assert max(ratios) - min(ratios) < 0.1  # the pneumonia share is about the same in each split
    assert dataset.extra["leakage"]["counts"]["exact_duplicates"] == {"train-val": 0, "train-test": 0, "val-test": 0}


def test_three_class_and_multilabel_modes():
    three = load_phantom(tiny_data_config(phantom={"n_images": 120, "label_mode": "three_class"}))
    assert three.class_names == ["normal", "bacterial", "viral"] and three.train.labels.max() == 2
    multi = load_phantom(tiny_data_config(phantom={"n_images": 120, "label_mode": "multilabel", "effusion_rate": 0.3}))
    assert multi.multilabel and multi.train.labels.shape[1] == 4
    assert multi.class_names == ["consolidation", "interstitial", "cardiomegaly", "effusion"]


def test_empty_class_is_an_error_naming_the_class(tmp_path):
    images = np.zeros((6, 1, 28, 28), np.uint8)
    path = tmp_path / "one_class.npz"
    np.savez(path, **{f"{s}_images": images[:, 0] for s in ("train", "val", "test")},
             **{f"{s}_labels": np.array([[0], [0], [0], [1], [1], [1]]) for s in ("train", "val")},
             test_labels=np.zeros((6, 1), np.int64))
    cfg = tiny_data_config(source="medmnist", image_size=28, medmnist={"path": str(path)})
    with pytest.raises(DataSourceError, match="class 'pneumonia' has no images in the test split"):
        prepare(cfg)


def write_medmnist(path, n=10, size=28, **overrides):
    rng = np.random.default_rng(0)
    arrays = {}
    for split in ("train", "val", "test"):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2).reshape(-1, 1)
    arrays.update(overrides)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez(path, **arrays)
    return path


def test_medmnist_local_file_keeps_official_split_and_resizes(tmp_path):
    path = write_medmnist(tmp_path / "pneumoniamnist.npz")
    dataset = load_medmnist(tiny_data_config(source="medmnist", image_size=32, medmnist={"path": str(path)}))
    assert dataset.train.images.shape == (10, 1, 32, 32)
    assert dataset.class_names == ["normal", "pneumonia"]  # from medmnist.INFO
    assert dataset.preprocessing["resize"].startswith("squash")


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"val_labels": None}, "lacks MedMNIST arrays ['val_labels']"),
        ({"train_images": np.zeros((10, 28), np.uint8)}, "train_images has shape (10, 28)"),
        ({"test_images": np.zeros((10, 28, 28), np.float32)}, "dtype float32"),
        ({"train_labels": np.zeros((10, 1, 1), np.int64)}, "train_labels has shape (10, 1, 1)"),  # (10,) is accepted
    ],
)
def test_medmnist_wrong_keys_or_shapes_name_the_file(tmp_path, overrides, fragment):
    path = write_medmnist(tmp_path / "bad.npz", **overrides)
    with pytest.raises(DataSourceError) as excinfo:
        load_medmnist(tiny_data_config(source="medmnist", image_size=28, medmnist={"path": str(path)}))
    assert fragment in str(excinfo.value) and "bad.npz" in str(excinfo.value)


def test_medmnist_missing_path_and_unreadable_file(tmp_path):
    with pytest.raises(DataSourceError, match=r"data.medmnist.path=.*nope.npz.*file not found"):
        load_medmnist(tiny_data_config(source="medmnist", medmnist={"path": str(tmp_path / "nope.npz")}))
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file")
    with pytest.raises(DataSourceError, match="not a readable .npz"):
        load_medmnist(tiny_data_config(source="medmnist", medmnist={"path": str(garbage)}))


def test_failed_prepare_leaves_no_output(tmp_path):
    out = tmp_path / "prepared"
    with pytest.raises(DataSourceError):
        save_packed(prepare(tiny_data_config(source="medmnist", medmnist={"path": str(tmp_path / "x.npz")})), out)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_split_rejects_mismatched_labels():
    with pytest.raises(AssertionError, match="3 images but 2 labels"):
        Split(np.zeros((3, 1, 28, 28), np.uint8), np.zeros(2, np.int64))


@pytest.mark.shared_data
def test_real_pneumoniamnist_prepares_with_official_counts():
    path = shared_file("pneumoniamnist.npz")
    # its 8 train/val exact duplicates fail the default leakage check (tests/test_sources.py)
    dataset = prepare(tiny_data_config(source="medmnist", image_size=28, on_leakage="drop", medmnist={"path": str(path)}))
    assert isinstance(dataset, PackedDataset)
    assert dataset.train.class_counts(2) == [1214, 3494]
    assert sum(dataset.val.class_counts(2)) == 135 + 389 - 8
    assert dataset.test.class_counts(2) == [234, 390]
    assert dataset.image_shape == (1, 28, 28)


def test_single_label_stages_refuse_multilabel_data_by_name(tmp_path):
    from ganaug.config import GANConfig
    from ganaug.stages.checks import StageInputError, require_gan_labels, require_single_label

    dataset = load_phantom(tiny_data_config(phantom={"n_images": 120, "label_mode": "multilabel"}))
    meta = save_packed(dataset, tmp_path / "prepared")
    with pytest.raises(StageInputError, match="tune mixing needs single-label data.*data.phantom.label_mode=binary"):
        require_single_label(meta, "tune mixing")
    # train_gan: a conditional GAN on the multi-hot vectors, but no "minority class"
    with pytest.raises(StageInputError, match="gan.mode=minority needs single-label data.*use gan.mode=conditional"):
        require_gan_labels(meta, GANConfig(mode="minority"))
    require_gan_labels(meta, GANConfig(arch="cgan", mode="conditional"))
