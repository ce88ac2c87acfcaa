"""The augmentation arms (ganaug.experiments.arms) and their stage: mixing counts per class, the
subset property of the ratios, no test image in any arm's training set, balanced and classic
really change the training call, synthetic_only matches the real counts, and the errors."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ganaug.config import ArmsConfig, GANConfig, SynthesizeConfig, arm_names, params_from_dict
from ganaug.experiments.arms import (ARM_METRICS_FILE, PREDICTIONS_FILE, arm_training_set, mixing_counts, parse_arm,
                                     synthetic_only_counts, train_options)

ALL_ARMS = ArmsConfig(mixed=["synthetic", "classic_synthetic"], ratios=[0.25, 0.5, 1.0], synthetic=["synthetic_only"])


def image_hashes(images: np.ndarray) -> set[str]:
    return {hashlib.sha256(image.tobytes()).hexdigest() for image in images}


def distinct_images(n: int, offset: int, size: int = 8) -> np.ndarray:
    """(n, 1, size, size) uint8, each image distinct (its index written into the first pixels)."""
    images = np.zeros((n, 1, size, size), np.uint8)
    index = np.arange(offset, offset + n)
    images[:, 0, 0, 0], images[:, 0, 0, 1], images[:, 0, 0, 2] = index % 256, index // 256 % 256, index // 65536
    return images


def pool(per_class: dict[int, int], offset: int = 100_000) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic pool as synthesize writes it: class by class, distinct images."""
    labels = np.concatenate([np.full(n, c, np.int64) for c, n in sorted(per_class.items())])
    return distinct_images(len(labels), offset), labels


@pytest.mark.parametrize(("ratio", "expected"), [(0.25, 25), (0.5, 50), (1.0, 100), (2.0, 200)])
def test_mixing_counts_per_class_follow_the_largest_real_class(ratio, expected):
    real_counts = [30, 100]  # normal is the minority
    assert mixing_counts(real_counts, {0: 200}, ratio) == {0: expected}  # minority GAN: the minority class only
    assert mixing_counts(real_counts, {0: 200, 1: 200}, ratio) == {0: expected, 1: expected}  # conditional: every class


def test_arm_training_sets_have_the_mixing_counts_and_smaller_ratios_are_prefixes_of_larger():
    real_labels = np.repeat([0, 1], [30, 100])
    real_images = distinct_images(len(real_labels), 0)
    pool_images, pool_labels = pool({0: 100, 1: 100})
    previous = None
    for ratio in ALL_ARMS.ratios:
        for family in ALL_ARMS.mixed:
            arm = parse_arm(f"{family}-{ratio}", ALL_ARMS)
            images, labels, info = arm_training_set(arm, real_images, real_labels, pool_images, pool_labels)
            n = int(round(ratio * 100))
            assert np.bincount(labels).tolist() == [30 + n, 100 + n]
            assert info["train_counts"] == {"real": {0: 30, 1: 100}, "synthetic": {0: n, 1: n}}
            np.testing.assert_array_equal(images[:len(real_images)], real_images)  # the whole real train split first
        synthetic, synthetic_labels = images[len(real_images):], labels[len(real_images):]
        if previous is not None:  # each class's synthetic images at the smaller ratio: a prefix of the larger's
            for c in (0, 1):
                smaller = previous[0][previous[1] == c]
                np.testing.assert_array_equal(synthetic[synthetic_labels == c][:len(smaller)], smaller)
        previous = synthetic, synthetic_labels


def test_synthesize_pool_of_a_smaller_pool_ratio_is_a_per_class_prefix_of_a_larger(monkeypatch):
    """The pool itself is prefix-stable: raising synthesize.pool_ratio appends to each class and
    never changes the images a smaller pool held (each class has its own seeded noise stream)."""
    from ganaug.gan.generator import TrainedGenerator
    from ganaug.gan.train import build_generator
    from ganaug.stages.synthesize import synthesize

    cfg = dataclasses.replace(GANConfig(), latent_dim=8, base_channels=4, mode="conditional")
    torch.manual_seed(0)
    network = build_generator(cfg, 16, 3).eval()
    generator = TrainedGenerator(network, dataclasses.asdict(cfg), ["a", "b", "c"], [0, 1, 2], True, {})
    train_counts = [40, 90, 100]
    small, small_labels, small_counts = synthesize(generator, train_counts, SynthesizeConfig(pool_ratio=0.5, batch_size=70))
    large, large_labels, large_counts = synthesize(generator, train_counts, SynthesizeConfig(pool_ratio=1.5, batch_size=70))
    assert small_counts == {0: 50, 1: 50, 2: 50} and large_counts == {0: 150, 1: 150, 2: 150}
    for c in range(3):
        np.testing.assert_array_equal(large[large_labels == c][:50], small[small_labels == c])
    assert len(image_hashes(large)) > 400  # the streams differ between classes and positions
    other_seed, _, _ = synthesize(generator, train_counts, SynthesizeConfig(pool_ratio=0.5, batch_size=70, seed=1))
    assert not np.array_equal(other_seed, small)


def test_synthetic_only_has_the_real_counts_per_class():
    real_labels = np.repeat([0, 1, 2], [30, 70, 100])
    pool_images, pool_labels = pool({0: 100, 1: 100, 2: 100})
    assert synthetic_only_counts([30, 70, 100], {0: 100, 1: 100, 2: 100}) == {0: 30, 1: 70, 2: 100}
    arm = parse_arm("synthetic_only", ALL_ARMS)
    images, labels, info = arm_training_set(arm, distinct_images(200, 0), real_labels, pool_images, pool_labels)
    assert np.bincount(labels).tolist() == [30, 70, 100]
    assert image_hashes(images) <= image_hashes(pool_images)  # no real image
    assert info["train_counts"]["synthetic"] == {0: 30, 1: 70, 2: 100}


def test_a_pool_too_small_names_synthesize_pool_ratio():
    with pytest.raises(ValueError, match=r"synthesize.pool_ratio to at least 1.0"):
        mixing_counts([30, 100], {0: 60}, 1.0)
    with pytest.raises(ValueError, match=r"synthesize.pool_ratio"):
        synthetic_only_counts([30, 100], {0: 100, 1: 50})
    with pytest.raises(ValueError, match=r"gan.mode=conditional"):
        synthetic_only_counts([30, 100], {0: 100})
    arm = parse_arm("synthetic-1.0", ALL_ARMS)
    with pytest.raises(ValueError, match=r"synthesize.pool_ratio"):
        arm_training_set(arm, distinct_images(130, 0), np.repeat([0, 1], [30, 100]), *pool({0: 99}))


def test_an_unknown_arm_names_the_option_and_the_valid_ids():
    with pytest.raises(ValueError, match=r"--arm 'synthetic-0.3'.*real, balanced, classic, synthetic-0.25"):
        parse_arm("synthetic-0.3", ALL_ARMS)
    with pytest.raises(ValueError, match=r"--arm 'synthetic_only'"):
        parse_arm("synthetic_only", ArmsConfig())  # not in this config's arms.synthetic


def test_the_cli_refuses_an_unknown_arm_before_importing_the_stage(tmp_path, capsys):
    from ganaug import cli

    ran = []
    code = cli.main(["train-classifier", "--arm", "augmented"], run=lambda *a: ran.append(a))
    assert code == 1 and not ran
    assert "--arm 'augmented' is not an arm of these params" in capsys.readouterr().err


def test_arm_descriptors_balanced_and_classic():
    cfg = dataclasses.replace(ALL_ARMS, balance="class_weight")
    assert train_options(parse_arm("real", cfg), cfg) == {"balance": "none", "augment_config": None}
    assert train_options(parse_arm("balanced", cfg), cfg) == {"balance": "class_weight", "augment_config": None}
    assert train_options(parse_arm("classic", cfg), cfg) == {"balance": "none", "augment_config": cfg.classic}
    assert train_options(parse_arm("classic_synthetic-0.5", cfg), cfg)["augment_config"] == cfg.classic
    assert train_options(parse_arm("synthetic-0.5", cfg), cfg)["augment_config"] is None
    assert [parse_arm(a, ALL_ARMS).dvc_stage for a in ("real", "synthetic-0.5", "synthetic_only")] == [
        "arm_real@real", "arm_mixed@synthetic-0.5", "arm_synthetic@synthetic_only"]


@pytest.fixture(scope="module")
def arm_project(tmp_path_factory):
    """A tiny prepared phantom and a conditional synthetic pool (untrained generator) in a project folder."""
    from ganaug.data.packed import save_packed
    from ganaug.data.sources import load_phantom
    from ganaug.data.synthetic import MANIFEST_FILE, SYNTHETIC_FILE

    root = tmp_path_factory.mktemp("arms")
    params = params_from_dict({
        "data": {"image_size": 32, "phantom": {"n_images": 120}},
        "gan": {"mode": "conditional"},
        "synthesize": {"pool_ratio": 1.0},
        "classifier": {"seeds": [0, 1], "epochs": 1},
        "arms": {"mixed": ["synthetic", "classic_synthetic"], "ratios": [0.5, 1.0], "synthetic": ["synthetic_only"]},
        "evaluate": {"references": ["real", "balanced", "classic"]},
    })
    meta = save_packed(load_phantom(params.data), root / "data" / "prepared")
    counts = [meta["counts"]["train"]["per_class"][name] for name in meta["class_names"]]
    per_class = {c: max(counts) for c in range(len(counts))}
    pool_labels = np.concatenate([np.full(n, c, np.int64) for c, n in per_class.items()])
    pool_images = np.random.default_rng(0).integers(0, 256, (len(pool_labels), 1, 32, 32), dtype=np.uint8)
    (root / "data" / "synthetic").mkdir()
    np.savez(root / "data" / "synthetic" / SYNTHETIC_FILE, images=pool_images, labels=pool_labels)
    manifest = {"dataset_hash": meta["dataset_hash"], "generator_sha256": "0" * 64, "generator_mlflow_run_id": None,
                "counts": {meta["class_names"][c]: n for c, n in per_class.items()}}
    (root / "data" / "synthetic" / MANIFEST_FILE).write_text(json.dumps(manifest))
    return root, params


def test_every_arm_stage_trains_on_its_set_without_test_images_and_with_its_options(arm_project, monkeypatch):
    """The stage for every arm, with a spy in place of the classifier's training: what each arm's
    training call receives (images, balance, augmentation), no test image in any arm's training
    set (image bytes hashed), and the files and MLflow runs the spec names."""
    import mlflow

    from ganaug.classify.models import create_classifier
    from ganaug.data.packed import load_packed
    from ganaug.stages import train_classifier

    root, params = arm_project
    monkeypatch.chdir(root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    calls = {}

    def spy(train_images, train_labels, val_images, val_labels, n_classes, *args, **kwargs):
        calls.setdefault(kwargs["desc"].split(" seed ")[0], []).append(
            {"images": train_images, "labels": train_labels, "val": val_images, **kwargs})
        torch.manual_seed(0)
        return SimpleNamespace(model=create_classifier("simple_cnn", n_classes, 1).eval(), best_epoch=1, stopped_epoch=1)

    monkeypatch.setattr(train_classifier, "train_classifier", spy)
    dataset = load_packed(root / "data" / "prepared")
    test_hashes = image_hashes(dataset.test.images)
    assert len(test_hashes) == len(dataset.test.images)
    for arm_id in arm_names(params.arms):
        train_classifier.main(params, arm_id)
        (call, *_), arm = calls[arm_id], parse_arm(arm_id, params.arms)
        assert len(calls[arm_id]) == 2  # one per seed
        assert not image_hashes(call["images"]) & test_hashes, arm_id  # classic: the stored, un-augmented set
        np.testing.assert_array_equal(call["val"], dataset.val.images)  # every arm selects on the real val split
        assert call["balance"] == ("oversample" if arm_id == "balanced" else "none"), arm_id
        assert (call["augment"] is not None) == arm_id.startswith("classic"), arm_id
        record = json.loads((root / "models/arms" / arm_id / ARM_METRICS_FILE).read_text())
        assert record["arm"] == arm_id and record["family"] == arm.family and record["ratio"] == arm.ratio
        assert set(record["seeds"]) == {"0", "1"} and record["seeds"]["0"]["stopped_epoch"] == 1
        n_real = sum(record["train_counts"]["real"].values())
        assert n_real + sum(record["train_counts"]["synthetic"].values()) == len(call["images"])
        with np.load(root / "models/arms" / arm_id / PREDICTIONS_FILE) as npz:
            assert npz["seed1"].shape == (len(dataset.test.labels), dataset.n_classes)
    real = calls["real"][0]
    np.testing.assert_array_equal(real["images"], dataset.train.images)
    for arm_id in ("balanced", "classic", "synthetic-0.5"):
        np.testing.assert_array_equal(calls[arm_id][0]["images"][:len(dataset.train.images)], dataset.train.images)
    largest = np.bincount(dataset.train.labels).max()
    assert len(calls["synthetic-1.0"][0]["images"]) == len(dataset.train.images) + dataset.n_classes * largest
    assert np.bincount(calls["synthetic_only"][0]["labels"]).tolist() == np.bincount(dataset.train.labels).tolist()

    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["ganaug"])
    parents = runs[runs["tags.ganaug.run_level"] == "arm"]
    assert sorted(parents["tags.arm"]) == sorted(arm_names(params.arms))
    mixed = parents[parents["tags.arm"] == "classic_synthetic-0.5"].iloc[0]
    assert (mixed["tags.family"], mixed["tags.ratio"], mixed["tags.dvc.stage"]) == (
        "classic_synthetic", "0.5", "arm_mixed@classic_synthetic-0.5")
    seeds = runs[runs["tags.ganaug.run_level"] == "seed"]
    assert len(seeds) == 2 * len(parents) and set(seeds["tags.mlflow.parentRunId"]) == set(parents["run_id"])
    assert set(seeds["tags.seed"]) == {"0", "1"}
    mlflow.set_tracking_uri(None)
