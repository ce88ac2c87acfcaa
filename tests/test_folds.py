"""k-fold cross-validation (classifier.folds, ganaug.experiments.folds): the validation folds
partition the val split (stratified, patients together), the stage builds a fresh model per seed
and fold, no fold's validation image is in the GAN's training set (hash check) or the test
split, the test split is untouched, and the statistics average a seed's folds."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from ganaug.experiments.folds import fold_training_set, replicate_key, seed_of, validation_folds
from ganaug.stats.compare import SeedMetric, compare_arms, pool_replicates
from ganaug.stats.metrics import compared_metrics

from conftest import prepared_project


def image_hashes(images: np.ndarray) -> set[str]:
    return {hashlib.sha256(image.tobytes()).hexdigest() for image in images}


def test_validation_folds_partition_the_val_split_stratified_and_by_patient():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], [30, 45, 15])
    folds = validation_folds(labels, None, 3, seed=0)
    assert set(folds) == {0, 1, 2}
    for c in range(3):
        per_fold = np.bincount(folds[labels == c], minlength=3)
        assert per_fold.max() - per_fold.min() <= 1  # stratified
    np.testing.assert_array_equal(folds, validation_folds(labels, None, 3, seed=0))  # the same folds for every arm
    groups = rng.integers(0, 30, len(labels))
    grouped = validation_folds(labels, groups, 3, seed=0)
    for g in np.unique(groups):
        assert len(set(grouped[groups == g])) == 1  # a patient's images in one fold
    with pytest.raises(ValueError, match="classifier.folds=5"):
        validation_folds(labels[:4], None, 5, seed=0)


def test_fold_training_set_adds_the_other_folds_val_images_only():
    images, labels = np.zeros((10, 1, 2, 2), np.uint8), np.zeros(10, np.int64)
    val_images = np.arange(6, dtype=np.uint8).reshape(6, 1, 1, 1).repeat(2, 2).repeat(2, 3) + 100
    fold_of_val = np.array([0, 1, 2, 0, 1, 2])
    fit, fit_labels, held = fold_training_set(images, labels, val_images, np.ones(6, np.int64), fold_of_val, 1, True)
    assert len(fit) == 14 and held.tolist() == [False, True, False, False, True, False]
    assert not image_hashes(fit) & image_hashes(val_images[held])
    only, _, _ = fold_training_set(images, labels, val_images, np.ones(6, np.int64), fold_of_val, 1, False)
    assert len(only) == 10  # synthetic_only: no real images added


def test_a_seeds_folds_are_averaged_before_the_seed_variance():
    keys = [replicate_key(s, f) for s in (0, 1) for f in range(3)]
    assert keys[4] == "seed1_fold1" and seed_of(keys[4]) == "seed1" and seed_of("seed1") == "seed1"
    observed = np.array([0.6, 0.7, 0.8, 0.9, 0.9, 0.9])
    resampled = np.arange(6 * 4, dtype=float).reshape(6, 4)
    pooled, seeds = pool_replicates(SeedMetric(observed, resampled), keys, seed_of)
    assert seeds == ["seed0", "seed1"]
    np.testing.assert_allclose(pooled.observed, [0.7, 0.9])
    np.testing.assert_allclose(pooled.resampled, [resampled[:3].mean(0), resampled[3:].mean(0)])

    rng = np.random.default_rng(1)
    labels = np.repeat([0, 1], 100)

    def model(skill):
        logits = rng.normal(size=(200, 2)) + skill * np.eye(2)[labels]
        return np.exp(logits) / np.exp(logits).sum(1, keepdims=True)

    arms = {"real": {k: model(1.0) for k in keys}, "classic": {k: model(1.5) for k in keys}}
    result = compare_arms(labels, arms, ["real"], compared_metrics(0, ["a", "b"]), n_bootstrap=100, seed_of=seed_of)
    record = result["arms"]["real"]
    assert record["n_seeds"] == 2 and record["n_models"] == 6 and list(record["metrics"]["accuracy"]["per_seed"]) == ["seed0", "seed1"]
    per_model = [float(np.mean(arms["real"][k].argmax(1) == labels)) for k in keys]
    fold_means = [np.mean(per_model[:3]), np.mean(per_model[3:])]
    assert record["metrics"]["accuracy"]["se_seed"] == pytest.approx(np.std(fold_means, ddof=1) / np.sqrt(2))


TINY = {"data": {"image_size": 32, "phantom": {"n_images": 120}}, "reference": {"epochs": 1},
        "classifier": {"epochs": 1, "seeds": [0, 1], "folds": 3, "batch_size": 32, "device": "cpu"},
        "gan": {"mode": "conditional"},
        "arms": {"real": ["real"], "mixed": [], "synthetic": []}, "evaluate": {"references": ["real"], "n_bootstrap": 100}}


@pytest.mark.slow
def test_kfold_stage_builds_a_model_per_fold_and_keeps_validation_images_from_the_gan(tmp_path, monkeypatch):
    import ganaug.classify.train as classify_train
    from ganaug.cli import main as cli_main
    from ganaug.config import load_params
    from ganaug.data.packed import load_packed
    from ganaug.stages.train_gan import select_training_data

    built = []
    create = classify_train.create_classifier

    def counting_create(*args, **kwargs):
        model = create(*args, **kwargs)
        built.append(model)
        return model

    with prepared_project(tmp_path, TINY) as root:
        monkeypatch.setattr(classify_train, "create_classifier", counting_create)
        assert cli_main(["train-classifier", "--arm", "real"]) == 0
        assert cli_main(["evaluate"]) == 0
        dataset = load_packed(root / "data/prepared")
        gan_images = select_training_data(dataset, load_params(root / "params.yaml").gan).images
        record = json.loads((root / "models/arms/real/metrics.json").read_text())
        result = json.loads((root / "reports/evaluation.json").read_text())
        with np.load(root / "models/arms/real/test_predictions.npz") as npz:
            keys = sorted(k for k in npz.files if k != "labels")
            np.testing.assert_array_equal(npz["labels"], dataset.test.labels)  # predicted on the untouched test split

    assert len(built) == 6 and len({id(m) for m in built}) == 6  # 2 seeds x 3 folds, each a fresh model
    assert keys == sorted(replicate_key(s, f) for s in (0, 1) for f in range(3)) and record["folds"] == 3
    fold_of_val = validation_folds(dataset.val.labels, dataset.val.groups, 3, seed=0)
    gan, test = image_hashes(gan_images), image_hashes(dataset.test.images)
    for seed in (0, 1):
        for fold in range(3):
            entry = record["seeds"][f"{seed}_fold{fold}"]
            val = dataset.val.images[fold_of_val == fold]
            assert entry["val_sha256"] == hashlib.sha256(np.ascontiguousarray(val).tobytes()).hexdigest()
            assert entry["n_fit_images"] == len(dataset.train.images) + int(np.sum(fold_of_val != fold))
            assert not image_hashes(val) & gan  # no validation image reached the generator's training set
            assert not image_hashes(val) & test
    assert not test & (image_hashes(dataset.train.images) | image_hashes(dataset.val.images))  # test never trains
    assert result["arms"]["real"]["n_seeds"] == 2 and result["arms"]["real"]["n_models"] == 6
