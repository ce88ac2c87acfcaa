"""The quality suite as train_gan and `ganaug quality` use it: names per feature space,
intervals that bracket their values, label fidelity, memorisation of copies."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ganaug.classify.models import SimpleCNN
from ganaug.classify.train import save_classifier
from ganaug.cli import main as cli_main
from ganaug.data.phantom import generate_phantoms
from ganaug.quality.compare import load_image_set
from ganaug.quality.suite import FeatureSet, feature_metrics, label_fidelity, memorisation, pixel_metrics

FRACTIONS = {"normal": 1.0, "bacterial": 1.0, "viral": 1.0}


def gaussian(n, d=8, shift=0.0, seed=0):
    return np.random.default_rng(seed).normal(shift, 1.0, (n, d))


@pytest.mark.parametrize(("space", "fd_name", "kd_name"), [("domain", "fd_domain", "kd_domain"), ("inception", "fid_inception", "kid_inception")])
def test_feature_metric_names_say_the_space(space, fd_name, kd_name):
    out = feature_metrics(FeatureSet(space, "x", gaussian(300), gaussian(300, seed=1)), with_ci=True, n_bootstrap=50)
    assert {fd_name, kd_name, f"precision_{space}", f"recall_{space}", f"density_{space}", f"coverage_{space}"} <= set(out)
    for name in (f"precision_{space}", f"density_{space}"):
        assert out[f"{name}_ci_low"] <= out[name] <= out[f"{name}_ci_high"]


def test_feature_metrics_separate_same_from_shifted_distributions():
    same = feature_metrics(FeatureSet("domain", "x", gaussian(400), gaussian(400, seed=1)))
    shifted = feature_metrics(FeatureSet("domain", "x", gaussian(400), gaussian(400, shift=3.0, seed=1)))
    assert same["fd_domain"] < 1.0 < 20.0 < shifted["fd_domain"]
    assert same["precision_domain"] > 0.7 > 0.1 > shifted["precision_domain"]
    assert shifted["kd_domain"] > same["kd_domain"]


def test_pixel_metrics_with_intervals():
    images = generate_phantoms(60, 32, 0, FRACTIONS, 0.1, 0.1).images
    out = pixel_metrics(images[:30], images[30:], seed=0, with_ci=True, n_bootstrap=50)
    for name in ("ssim_real_fake", "ms_ssim_real_fake"):
        assert 0 < out[name] < 1 and out[f"{name}_ci_low"] <= out[name] <= out[f"{name}_ci_high"]
    assert pixel_metrics(images[:30], images[:30], seed=0)["ssim_real_fake"] < 1  # unpaired: random partners


def test_label_fidelity_per_class():
    out = label_fidelity(np.array([0, 0, 1, 1, 1]), np.array([0, 1, 1, 1, 1]), ["normal", "pneumonia"])
    assert out == {"label_fidelity": 0.8, "label_fidelity_normal": 1.0, "label_fidelity_pneumonia": 0.75}


def test_memorisation_flags_noisy_copies_of_training_images():
    train = generate_phantoms(120, 28, 0, FRACTIONS, 0.1, 0.1).images
    rng = np.random.default_rng(0)
    copies = np.clip(train[:60].astype(int) + rng.normal(0, 2, train[:60].shape).round(), 0, 255).astype(np.uint8)
    fresh = generate_phantoms(60, 28, 1, FRACTIONS, 0.1, 0.1).images
    features = lambda x: x.reshape(len(x), -1)[:, ::7].astype(float)  # a stand-in feature space
    copied, _ = memorisation(copies, train, features(copies), features(train), "subsampled-pixels")
    novel, _ = memorisation(fresh, train, features(fresh), features(train), "subsampled-pixels")
    assert copied["memorisation_pixel_copy_rate"] > 0.9 and novel["memorisation_pixel_copy_rate"] < 0.2
    assert copied["memorisation_domain_copy_rate"] > 0.9


def test_quality_command_on_two_sets(tmp_path):
    real = generate_phantoms(80, 32, 0, FRACTIONS, 0.1, 0.1)
    fake = generate_phantoms(80, 32, 1, FRACTIONS, 0.1, 0.1)
    np.savez(tmp_path / "real.npz", images=real.images, labels=real.finding)
    np.savez(tmp_path / "fake.npz", images=fake.images, labels=fake.finding)
    reference = tmp_path / "reference"
    reference.mkdir()
    save_classifier(SimpleCNN(3), reference / "model.pt", "simple_cnn", 3, ["normal", "bacterial", "viral"], 1,
                    {"extractor": "untrained-simple_cnn (test)"})
    out = tmp_path / "q.json"
    code = cli_main(["quality", "--real", str(tmp_path / "real.npz"), "--fake", str(tmp_path / "fake.npz"),
                     "--reference", str(reference), "--json", str(out), "--n-bootstrap", "20"])
    assert code == 0
    report = json.loads(out.read_text())
    metrics = report["metrics"]
    assert report["extractor"] == "untrained-simple_cnn (test)"
    assert {"fd_domain", "ssim_real_fake", "memorisation_pixel_copy_rate", "n_fake"} <= set(metrics)
    assert metrics["n_real"] == 80 and "fid_inception" not in metrics  # no local Inception weights in tests


def test_quality_refuses_the_test_split_and_bad_files(tmp_path):
    from ganaug.config import params_from_dict
    from ganaug.data.packed import save_packed
    from ganaug.data.sources import load_phantom

    save_packed(load_phantom(params_from_dict({"data": {"image_size": 32, "phantom": {"n_images": 60}}}).data), tmp_path / "prepared")
    with pytest.raises(ValueError, match="test split is kept for the final comparison"):
        load_image_set(tmp_path / "prepared", "test")
    np.savez(tmp_path / "x.npz", pixels=np.zeros((2, 1, 28, 28), np.uint8))
    with pytest.raises(ValueError, match="no 'images' array"):
        load_image_set(tmp_path / "x.npz")


def test_quality_command_with_inception_weights_reports_fid_kid_and_inception_score(tmp_path):
    """Random FID-Inception weights stand in for the real file (not on this machine): the
    plumbing is what is checked, from the weights file to the named metrics and intervals."""
    import torch

    from ganaug.quality.inception import fid_inception_architecture

    torch.manual_seed(0)
    weights = tmp_path / "pt_inception.pth"
    torch.save(fid_inception_architecture().state_dict(), weights)
    real = generate_phantoms(12, 28, 0, FRACTIONS, 0.1, 0.1).images
    fake = generate_phantoms(12, 28, 1, FRACTIONS, 0.1, 0.1).images
    np.savez(tmp_path / "real.npz", images=real)
    np.savez(tmp_path / "fake.npz", images=fake)
    out = tmp_path / "q.json"
    assert cli_main(["quality", "--real", str(tmp_path / "real.npz"), "--fake", str(tmp_path / "fake.npz"),
                     "--reference", str(tmp_path / "none"), "--inception-weights", str(weights),
                     "--json", str(out), "--n-bootstrap", "20"]) == 0
    metrics = json.loads(out.read_text())["metrics"]
    for name in ("fid_inception", "kid_inception", "precision_inception", "coverage_inception"):
        assert metrics[f"{name}_ci_low"] <= metrics[name] <= metrics[f"{name}_ci_high"], name
    assert metrics["inception_score"] >= 1.0 and metrics["inception_score_std"] >= 0
    assert 0 < metrics["ssim_likeness_median"] <= metrics["ssim_likeness_max"] <= 1
