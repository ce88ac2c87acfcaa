"""Multi-label data through the real stages on tiny settings: the phantom's multi-hot findings
(data.phantom.label_mode=multilabel) through prepare and train_gan (a conditional GAN on the
finding vectors), then sampling label vectors drawn from the train split's combinations."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pytest
from ruamel.yaml import YAML

from ganaug.cli import main as cli_main
from ganaug.data.packed import load_packed
from ganaug.gan.conditioning import draw_combinations, fill_findings
from ganaug.gan.generator import TrainedGenerator
from ganaug.quality.multilabel import SKIPPED_REASON

pytestmark = pytest.mark.slow  # the real stages, MLflow registration included

TINY = {
    "data": {"image_size": 32, "phantom": {"n_images": 120, "label_mode": "multilabel"}},
    "gan": {"arch": "cgan", "mode": "conditional", "epochs": 1, "latent_dim": 8, "base_channels": 4, "batch_size": 16,
            "eval_every": 1, "n_eval": 16, "ema_kimg": 0.0, "augment": "none", "device": "cpu", "min_diversity": 0.0},
}


def write_params(path, overrides: dict) -> None:
    with open(path, "w") as f:
        YAML().dump({**TINY, "gan": {**TINY["gan"], **overrides}}, f)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """The tiny multi-label phantom, prepared, and a cGAN trained on it by the train_gan stage."""
    root = tmp_path_factory.mktemp("multilabel")
    (root / "dvc.yaml").write_text("stages: {}\n")  # marks the project root for MLflow's store
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        mp.setattr("ganaug.quality.suite.PAIRS", 20)  # SSIM pairs per score: fewer, same code
        write_params(root / "params.yaml", {})
        assert cli_main(["prepare"]) == 0
        assert cli_main(["train-gan"]) == 0  # no models/reference: the multi-label GAN evaluation does not read it
    return root


def test_train_gan_trains_a_conditional_gan_on_finding_vectors(project):
    meta = json.loads((project / "data/prepared/meta.json").read_text())
    assert meta["label_kind"] == "multi_hot" and len(meta["class_names"]) == 4
    generator = TrainedGenerator.load(project / "models/gan/generator.pt")
    assert generator.label_kind == "multi_hot" and generator.conditional
    assert generator.class_names == meta["class_names"] and generator.trained_classes == [0, 1, 2, 3]
    assert generator.info["quality_skipped"] == SKIPPED_REASON
    quality = json.loads((project / "models/gan/quality.json").read_text())
    # measured per finding, without the reference classifier
    assert 0 <= quality["diversity"] == min(v for k, v in quality.items() if k.startswith("diversity_pixel_"))
    assert {f"ssim_real_fake_{n}" for n in ("consolidation", "interstitial", "cardiomegaly", "effusion")} <= set(quality)
    assert 0 <= quality["memorisation_pixel_copy_rate"] <= 1
    assert "fd_domain" not in quality and "label_fidelity" not in quality  # skipped, with the reason recorded:
    run = mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}").get_run(generator.info["mlflow_run_id"])
    assert run.data.tags["quality.skipped"] == SKIPPED_REASON


def test_the_generator_samples_drawn_and_filled_label_combinations(project):
    train = load_packed(project / "data/prepared").train
    generator = TrainedGenerator.load(project / "models/gan/generator.pt")
    drawn = draw_combinations(train.labels, 24, seed=0)
    images, labels = generator.sample(drawn, seed=1)
    assert images.shape == (24, *train.images.shape[1:]) and images.dtype == np.uint8
    np.testing.assert_array_equal(labels, drawn)
    np.testing.assert_array_equal(generator.sample(drawn, seed=1)[0], images)
    filled = fill_findings(train.labels, int(train.labels.sum(axis=0).max()), seed=0)
    images, labels = generator.sample(filled, seed=2)
    assert len(images) == len(filled) and (train.labels.sum(axis=0) + labels.sum(axis=0) >= train.labels.sum(axis=0).max()).all()


def test_minority_mode_on_multi_label_data_is_refused_naming_gan_mode(project, monkeypatch, capsys):
    monkeypatch.chdir(project)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project / 'mlflow.db'}")
    write_params(project / "params.yaml", {"arch": "dcgan", "mode": "minority"})
    try:
        assert cli_main(["train-gan"]) == 1
    finally:
        write_params(project / "params.yaml", {})
    err = capsys.readouterr().err
    assert "gan.mode=minority needs single-label data" in err and "use gan.mode=conditional" in err
