"""Multi-label data end to end: the arms' training sets on multi-hot labels, the classifier's
sigmoid/BCE head, and the real stages on the tiny multi-label phantom (prepare, train_reference,
train_gan, synthesize, train_classifier for several arms, evaluate) down to per-finding AUROC /
average precision and the comparison on macro AUROC (DeLong beside it)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ruamel.yaml import YAML

from ganaug.classify.train import predict_proba, train_classifier
from ganaug.config import ArmsConfig
from ganaug.experiments.arms import ARM_METRICS_FILE, PREDICTIONS_FILE, arm_training_set, parse_arm

ARMS = ArmsConfig(real=["real", "balanced", "classic"], mixed=["synthetic"], ratios=[0.5, 1.0], synthetic=["synthetic_only"])


def multi_hot(rng: np.random.Generator, n: int, k: int = 3) -> np.ndarray:
    return (rng.random((n, k)) < 0.3).astype(np.uint8)


def test_multilabel_arms_take_prefixes_of_the_pool_relative_to_the_whole_real_set():
    rng = np.random.default_rng(0)
    real_images, real_labels = rng.integers(0, 255, (40, 1, 8, 8), dtype=np.uint8), multi_hot(rng, 40)
    pool_images, pool_labels = rng.integers(0, 255, (40, 1, 8, 8), dtype=np.uint8), multi_hot(rng, 40)
    half = arm_training_set(parse_arm("synthetic-0.5", ARMS), real_images, real_labels, pool_images, pool_labels)
    full = arm_training_set(parse_arm("synthetic-1.0", ARMS), real_images, real_labels, pool_images, pool_labels)
    only = arm_training_set(parse_arm("synthetic_only", ARMS), real_images, real_labels, pool_images, pool_labels)
    assert half[2]["n_images"] == {"real": 40, "synthetic": 20} and full[2]["n_images"] == {"real": 40, "synthetic": 40}
    np.testing.assert_array_equal(half[0][40:], pool_images[:20])  # the first 20 of the pool: a subset of 1.0's
    np.testing.assert_array_equal(full[1], np.concatenate([real_labels, pool_labels]))
    np.testing.assert_array_equal(only[0], pool_images[:40])
    assert half[2]["train_counts"]["synthetic"] == dict(enumerate(pool_labels[:20].sum(0).tolist()))
    with pytest.raises(ValueError, match="balanced arm balances classes.*multi-label"):
        arm_training_set(parse_arm("balanced", ARMS), real_images, real_labels, None, None)
    with pytest.raises(ValueError, match="pool_ratio"):
        arm_training_set(parse_arm("synthetic-1.0", ARMS), real_images, real_labels, pool_images[:30], pool_labels[:30])


def test_classifier_on_multi_hot_labels_has_a_sigmoid_bce_head():
    rng = np.random.default_rng(1)
    labels = multi_hot(rng, 48)
    images = rng.integers(0, 60, (48, 1, 16, 16), dtype=np.uint8)
    for k in range(3):  # finding k brightens its own quarter: learnable, independent of the others
        images[labels[:, k] == 1, :, 8 * (k // 2):8 * (k // 2) + 8, 8 * (k % 2):8 * (k % 2) + 8] += 150
    result = train_classifier(images[:32], labels[:32], images[32:], labels[32:], 3, "simple_cnn", 2, 16, 3e-3, 0.0,
                              2, 0, torch.device("cpu"), select="val_roc_auc")
    assert {"val_loss", "val_roc_auc"} <= set(result.history[0]) and "val_balanced_accuracy" not in result.history[0]
    proba = predict_proba(result.model, images[32:], torch.device("cpu"), multilabel=True)
    assert proba.shape == (16, 3) and ((proba >= 0) & (proba <= 1)).all()
    assert not np.allclose(proba.sum(1), 1.0)  # independent sigmoids, not a softmax
    with pytest.raises(ValueError, match="balance='oversample'.*multi-label"):
        train_classifier(images, labels, images, labels, 3, "simple_cnn", 1, 16, 1e-3, 0.0, 1, 0, torch.device("cpu"),
                         balance="oversample")


# ------------------------------------------------------------------------ through the stages

TINY = {
    "data": {"image_size": 32, "phantom": {"n_images": 160, "label_mode": "multilabel"}},
    "reference": {"epochs": 1, "batch_size": 32},
    "classifier": {"epochs": 2, "seeds": [0, 1], "batch_size": 32, "device": "cpu"},
    "gan": {"arch": "cgan", "mode": "conditional", "epochs": 1, "latent_dim": 8, "base_channels": 4, "batch_size": 16,
            "eval_every": 1, "n_eval": 16, "ema_kimg": 0.0, "augment": "none", "device": "cpu", "min_diversity": 0.0},
    "synthesize": {"pool_ratio": 1.0, "min_coverage": 0.0, "min_diversity": 0.0},
    "arms": {"real": ["real", "classic"], "mixed": ["synthetic"], "ratios": [0.5, 1.0], "synthetic": ["synthetic_only"]},
    "evaluate": {"references": ["real"], "n_bootstrap": 200},
}
ARM_IDS = ["real", "classic", "synthetic-0.5", "synthetic-1.0", "synthetic_only"]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    from ganaug.cli import main as cli_main

    root = tmp_path_factory.mktemp("multilabel_pipeline")
    (root / "dvc.yaml").write_text("stages: {}\n")  # marks the project root for MLflow's store
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        mp.setattr("ganaug.quality.suite.PAIRS", 20)  # SSIM pairs per score: fewer, same code
        with open(root / "params.yaml", "w") as f:
            YAML().dump(TINY, f)
        for stage in (["prepare"], ["train-reference"], ["train-gan"], ["synthesize"],
                      *(["train-classifier", "--arm", arm] for arm in ARM_IDS), ["evaluate"], ["report"]):
            assert cli_main(stage) == 0, stage
    return root


pipeline = pytest.mark.slow


@pipeline
def test_synthesize_draws_label_combinations_of_the_train_split(project):
    from ganaug.data.packed import load_packed
    from ganaug.data.synthetic import load_synthetic

    train = load_packed(project / "data/prepared").train
    images, labels, manifest = load_synthetic(project / "data/synthetic")
    assert labels.shape == (len(train.labels), train.labels.shape[1]) == (manifest["pool"]["n_images"], 4)
    assert len(images) == len(labels) and images.shape[1:] == train.images.shape[1:]
    train_rows = {row.tobytes() for row in train.labels.astype(np.uint8)}
    assert all(row.tobytes() in train_rows for row in labels.astype(np.uint8))  # only combinations the train split has
    assert manifest["pool"]["per_finding"] == dict(zip(manifest["real_train_counts"], labels.sum(0).tolist()))


@pipeline
def test_arms_train_sigmoid_classifiers_with_per_finding_metrics(project):
    n_train = json.loads((project / "data/prepared/meta.json").read_text())["counts"]["train"]["total"]
    test_labels = None
    for arm in ARM_IDS:
        folder = project / "models/arms" / arm
        record = json.loads((folder / ARM_METRICS_FILE).read_text())
        with np.load(folder / PREDICTIONS_FILE) as npz:
            test_labels = npz["labels"]
            proba = npz["seed0"]
        assert test_labels.ndim == 2 and proba.shape == test_labels.shape and ((proba >= 0) & (proba <= 1)).all()
        assert set(record["seeds"]) == {"0", "1"}
        assert {"roc_auc_macro", "average_precision_macro", "roc_auc_micro", "roc_auc_effusion",
                "average_precision_effusion"} <= set(record["seeds"]["0"])
        expected = {"real": (n_train, 0), "classic": (n_train, 0), "synthetic-0.5": (n_train, round(0.5 * n_train)),
                    "synthetic-1.0": (n_train, n_train), "synthetic_only": (0, n_train)}[arm]
        assert (record["n_train_images"]["real"], record["n_train_images"]["synthetic"]) == expected


@pipeline
def test_evaluate_compares_macro_auroc_and_reports_each_finding(project):
    result = json.loads((project / "reports/evaluation.json").read_text())
    assert result["label_kind"] == "multi_hot" and result["metrics"] == ["roc_auc", "roc_auc_micro"]
    comparisons = [c for c in result["comparisons"] if c["metric"] == "roc_auc"]
    assert {c["arm"] for c in comparisons} == set(ARM_IDS) - {"real"}
    for c in comparisons:
        assert c["verdict"] in ("helped", "hurt", "no clear difference") and 0 <= c["delong_p"] <= 1
        assert c["delong_auc_difference"] == pytest.approx(c["difference"])
    findings = {(r["arm"], r["finding"]) for r in result["per_finding"]}
    assert {(arm, f) for arm in ARM_IDS for f in ("consolidation", "effusion", "macro", "micro")} <= findings
    real_macro = next(r for r in result["per_finding"] if (r["arm"], r["finding"]) == ("real", "macro"))
    assert real_macro["roc_auc"] == pytest.approx(result["arms"]["real"]["metrics"]["roc_auc"]["mean"])
    markdown = (project / "reports/comparison.md").read_text()
    assert "## Per finding" in markdown and "DeLong p" in markdown
    summary = json.loads((project / "metrics/evaluation.json").read_text())
    assert "roc_auc_vs_real" in summary
    assert "Per finding" in (project / "reports/index.html").read_text()  # the report stage's page


@pipeline
def test_the_balanced_arm_is_refused_on_multilabel_data(project, monkeypatch, capsys):
    from ganaug.cli import main as cli_main

    monkeypatch.chdir(project)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project / 'mlflow.db'}")
    params = {**TINY, "arms": {**TINY["arms"], "real": ["real", "balanced"]}}
    with open(project / "params.yaml", "w") as f:
        YAML().dump(params, f)
    try:
        assert cli_main(["train-classifier", "--arm", "balanced"]) == 1
    finally:
        with open(project / "params.yaml", "w") as f:
            YAML().dump(TINY, f)
    assert "multi-label" in capsys.readouterr().err
