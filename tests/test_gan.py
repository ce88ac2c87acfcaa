"""DCGAN networks, the training loop (one step changes weights, exact resume, divergence
guard), seeded sampling, and the generator as a registered MLflow pyfunc model."""

from __future__ import annotations

import dataclasses

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from ganaug.config import GANConfig
from ganaug.gan.dcgan import Discriminator, Generator, resolution_plan
from ganaug.gan.generator import TrainedGenerator
from ganaug.gan.train import GANDivergenceError, training_loop
from ganaug.tracking import pyfunc_generator

CPU = torch.device("cpu")


def tiny_cfg(**overrides) -> GANConfig:
    base = dict(latent_dim=8, base_channels=4, epochs=1, batch_size=8, eval_every=1, n_eval=8, seed=0, device="cpu")
    return dataclasses.replace(GANConfig(), **{**base, **overrides})


def tiny_images(n=16, size=28, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 1, size, size), dtype=np.uint8)


@pytest.mark.parametrize("resolution", [28, 32, 48, 64, 128, 224, 256])
@pytest.mark.parametrize("n_classes", [0, 3])
def test_forward_shapes(resolution, n_classes):
    g, d = Generator(resolution, 8, 4, n_classes), Discriminator(resolution, 4, n_classes)
    labels = torch.tensor([0, 2]) if n_classes else None
    images = g(torch.randn(2, 8), labels)
    assert images.shape == (2, 1, resolution, resolution)
    assert images.min() >= -1 and images.max() <= 1
    assert d(images, labels).shape == (2,)


@pytest.mark.parametrize("resolution", [30, 100, 288])
def test_unsupported_resolution_is_named(resolution):
    with pytest.raises(ValueError, match=f"DCGAN resolution {resolution}"):
        resolution_plan(resolution)


@pytest.mark.parametrize("mode", ["minority", "conditional"])
def test_one_training_step_changes_both_networks(tmp_path, mode):
    images = tiny_images(8)
    labels, n_classes = (np.array([0, 1] * 4), 2) if mode == "conditional" else (None, 0)
    cfg = tiny_cfg(mode=mode)
    torch.manual_seed(cfg.seed)  # the loop seeds before building: the same initial weights
    g0, d0 = Generator(28, 8, 4, n_classes), Discriminator(28, 4, n_classes)
    result = training_loop(images, labels, n_classes, cfg, tmp_path / "ckpt.pt", CPU)
    assert len(result.losses) == 1  # 8 images / batch 8 = one step
    for before, after in ((g0, result.generator), (d0, result.discriminator)):
        pairs = list(zip(before.named_parameters(), after.parameters()))
        unchanged = [name for (name, p0), p1 in pairs if torch.equal(p0, p1)]
        assert not unchanged, f"parameters not updated by one step: {unchanged}"


def test_resumed_run_continues_exactly(tmp_path):
    images, labels = tiny_images(24), np.arange(24) % 3
    cfg = tiny_cfg(mode="conditional", epochs=3)
    full = training_loop(images, labels, 3, cfg, tmp_path / "full.pt", CPU)
    killed = training_loop(images, labels, 3, cfg, tmp_path / "resume.pt", CPU, stop_after_epoch=1)
    assert killed.losses == full.losses[: len(killed.losses)]
    resumed = training_loop(images, labels, 3, cfg, tmp_path / "resume.pt", CPU)
    assert resumed.resumed_from_epoch == 1
    assert resumed.losses == full.losses  # bit-identical loss trajectory
    for a, b in zip(full.generator.state_dict().values(), resumed.generator.state_dict().values()):
        assert torch.equal(a, b)


def test_checkpoint_from_another_config_is_refused(tmp_path):
    training_loop(tiny_images(8), None, 0, tiny_cfg(), tmp_path / "c.pt", CPU)
    with pytest.raises(ValueError, match="another gan config"):
        training_loop(tiny_images(8), None, 0, tiny_cfg(lr_g=1e-3), tmp_path / "c.pt", CPU)


def test_divergence_guard_names_step_and_checkpoint(tmp_path, monkeypatch):
    from ganaug.gan import losses

    calls = {"n": 0}
    original = losses.NonSaturatingLoss.generator

    def poisoned(self, fake_logits):
        calls["n"] += 1
        loss = original(self, fake_logits)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(losses.NonSaturatingLoss, "generator", poisoned)
    with pytest.raises(GANDivergenceError, match=r"loss_g = nan at epoch 2, step 3; last good checkpoint: .*c.pt \(epoch 1\)"):
        training_loop(tiny_images(16), None, 0, tiny_cfg(epochs=3), tmp_path / "c.pt", CPU)
    assert torch.load(tmp_path / "c.pt", weights_only=False)["epoch"] == 1  # the good state is kept


def trained_generator(tmp_path, conditional: bool) -> TrainedGenerator:
    labels, n_classes = (np.arange(16) % 3, 3) if conditional else (None, 0)
    cfg = tiny_cfg(mode="conditional" if conditional else "minority")
    result = training_loop(tiny_images(16), labels, n_classes, cfg, tmp_path / "g.pt", CPU)
    classes = [0, 1, 2] if conditional else [1]
    return TrainedGenerator(result.generator, dataclasses.asdict(cfg), ["normal", "bacterial", "viral"], classes, conditional, {})


def test_sampling_is_a_pure_function_of_seed_and_counts(tmp_path):
    generator = trained_generator(tmp_path, conditional=True)
    generator.save(tmp_path / "generator.pt")
    loaded = TrainedGenerator.load(tmp_path / "generator.pt")
    a_images, a_labels = generator.sample({0: 5, 2: 3}, seed=7)
    b_images, b_labels = loaded.sample({0: 5, 2: 3}, seed=7)
    np.testing.assert_array_equal(a_images, b_images)
    np.testing.assert_array_equal(a_labels, [0] * 5 + [2] * 3)
    assert a_images.dtype == np.uint8 and a_images.shape == (8, 1, 28, 28)
    assert not np.array_equal(generator.sample({0: 5, 2: 3}, seed=8)[0], a_images)


def test_unconditional_generator_refuses_other_classes(tmp_path):
    generator = trained_generator(tmp_path, conditional=False)
    with pytest.raises(ValueError, match=r"cannot produce classes \['viral'\]; it was trained for \['bacterial'\]"):
        generator.sample({2: 1}, seed=0)


@pytest.mark.parametrize("conditional", [True, False])
def test_registered_generator_loads_back_as_pyfunc(tmp_path, conditional):
    generator = trained_generator(tmp_path, conditional)
    generator.save(tmp_path / "generator.pt")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = mlflow.create_experiment("t", artifact_location=(tmp_path / "artifacts").as_uri())
    with mlflow.start_run(experiment_id=exp):
        info = pyfunc_generator.log_generator(tmp_path / "generator.pt", 1, 28, generator.trained_classes[0])
    model = mlflow.pyfunc.load_model(f"models:/{pyfunc_generator.REGISTERED_NAME}/{info.registered_model_version}")
    for class_label in generator.trained_classes:
        images = model.predict(pd.DataFrame({"class_label": [class_label], "count": [3]}), params={"seed": 5})
        assert images.shape == (3, 1, 28, 28) and images.dtype == np.uint8
        np.testing.assert_array_equal(images, generator.sample({class_label: 3}, seed=5)[0])
    mlflow.set_tracking_uri(None)


def test_champion_alias_moves_only_to_a_better_comparable_version(tmp_path, monkeypatch):
    from ganaug.tracking import registry

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    generator = trained_generator(tmp_path, conditional=False)
    generator.save(tmp_path / "generator.pt")
    from ganaug.tracking import mlflow_utils

    mlflow_utils.setup()
    client = mlflow.MlflowClient()

    def register(fd: float, extractor: str) -> str:
        with mlflow.start_run():
            info = pyfunc_generator.log_generator(tmp_path / "generator.pt", 1, 28, 1)
        version = str(info.registered_model_version)
        client.set_model_version_tag(pyfunc_generator.REGISTERED_NAME, version, "metric.fd_domain", str(fd))
        client.set_model_version_tag(pyfunc_generator.REGISTERED_NAME, version, "feature_extractor", extractor)
        return version

    def champion() -> str:
        return str(client.get_model_version_by_alias(pyfunc_generator.REGISTERED_NAME, "champion").version)

    v1 = register(10.0, "ref@a")
    assert registry.promote().promote and champion() == v1  # first one: no champion yet
    register(12.0, "ref@a")
    assert not registry.promote().promote and champion() == v1  # worse
    v3 = register(8.0, "ref@a")
    assert registry.promote().promote and champion() == v3  # better
    v4 = register(1.0, "ref@b")
    decision = registry.promote()
    assert not decision.promote and "not comparable" in decision.reason and champion() == v3
    assert registry.promote(version=v4, force=True).promote and champion() == v4
    mlflow.set_tracking_uri(None)
