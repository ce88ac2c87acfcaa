"""The diversity statistic (identical images -> 0, a real set against itself -> 1, brute-force
agreement) and the training loop's mode-collapse stop rule (warning, stop, last good checkpoint)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from scipy.spatial.distance import pdist

from ganaug.config import GANConfig
from ganaug.gan.train import GANModeCollapseError, collapse_remedies, last_diverse_path, training_loop
from ganaug.quality.diversity import diversity_metrics, diversity_ratio, image_rows, low_streak, mean_pairwise_distance

from conftest import smooth_images

CPU = torch.device("cpu")


def test_mean_pairwise_distance_is_the_brute_force_mean():
    x = np.random.default_rng(0).normal(size=(40, 7))
    assert mean_pairwise_distance(x) == pytest.approx(pdist(x).mean(), rel=1e-9)


def test_identical_images_have_zero_diversity_in_pixels_and_features():
    real = smooth_images(30, 16, seed=0)
    collapsed = np.repeat(real[:1], 30, axis=0)  # one image repeated: the sample grid
    assert diversity_ratio(image_rows(collapsed), image_rows(real)) == 0
    features = np.random.default_rng(1).normal(size=(30, 5))
    assert diversity_ratio(np.repeat(features[:1], 30, axis=0), features) == 0


def test_a_real_set_against_itself_or_its_other_half_is_about_one():
    real = smooth_images(400, 16, seed=2)
    assert diversity_ratio(image_rows(real), image_rows(real)) == pytest.approx(1.0)
    assert diversity_ratio(image_rows(real[:200]), image_rows(real[200:])) == pytest.approx(1.0, abs=0.05)
    # subsampling above max_rows stays unbiased
    assert diversity_ratio(image_rows(real), image_rows(real), max_rows=100, seed=3) == pytest.approx(1.0, abs=0.1)


def test_a_real_set_without_spread_is_refused():
    same = np.zeros((5, 3))
    with pytest.raises(ValueError, match="no spread"):
        diversity_ratio(np.ones((5, 3)), same)


def test_diversity_metrics_report_the_lowest_class_and_each_class():
    real = {0: smooth_images(20, 16, 0), 1: smooth_images(20, 16, 1)}
    features = {c: image_rows(x)[:, :10] for c, x in real.items()}
    fake = np.concatenate([real[0], np.repeat(real[1][:1], 20, axis=0)])  # class 1 collapsed
    labels = np.repeat([0, 1], 20)
    out = diversity_metrics(features, image_rows(fake)[:, :10], real, fake, labels, ["normal", "pneumonia"])
    assert out["diversity_pixel_normal"] == pytest.approx(1.0) and out["diversity_pixel_pneumonia"] == 0
    assert out["diversity_domain"] == 0 and out["diversity_pixel"] == 0 and out["diversity"] == 0  # the collapsed class decides
    assert out["diversity_normal"] == pytest.approx(1.0)
    single = diversity_metrics({0: features[0]}, features[0], {0: real[0]}, real[0], np.zeros(20, int), ["normal"])
    assert set(single) == {"diversity", "diversity_domain", "diversity_pixel"}


def test_diversity_is_the_lower_of_features_and_pixels():
    real = smooth_images(30, 16, 0)
    near_copies = np.repeat(real[:1], 30, axis=0)  # identical in pixels ...
    spread_features = np.random.default_rng(0).normal(size=(30, 4))  # ... but spread in features (far off the domain)
    out = diversity_metrics({0: spread_features}, 3 * spread_features, {0: real}, near_copies, np.zeros(30, int), ["normal"])
    assert out["diversity_domain"] == pytest.approx(3.0) and out["diversity"] == out["diversity_pixel"] == 0


@pytest.mark.parametrize(("values", "expected"), [
    ([0.9, 0.1, 0.2], 2), ([0.1, 0.9], 0), ([], 0), ([0.1, None, 0.1], 1), ([float("nan")], 0)])
def test_low_streak_counts_the_last_evaluations_below_the_level(values, expected):
    quality = [{"epoch": i} if v is None else {"epoch": i, "diversity": v} for i, v in enumerate(values)]
    assert low_streak(quality, "diversity", 0.5) == expected


def tiny_cfg(**overrides) -> GANConfig:
    base = dict(latent_dim=8, base_channels=4, epochs=6, batch_size=8, eval_every=1, n_eval=8, seed=0, device="cpu",
                min_diversity=0.5, diversity_evals=2)
    return dataclasses.replace(GANConfig(), **{**base, **overrides})


def scripted_evaluation(values: list[float]):
    """An evaluate callback returning diversity = values[epoch - 1]."""
    return lambda epoch, generator: {"diversity": values[epoch - 1]}


def test_collapse_stop_rule_warns_then_stops_naming_epoch_value_key_and_last_good_checkpoint(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (16, 1, 28, 28), dtype=np.uint8)
    checkpoint = tmp_path / "c.pt"
    with pytest.warns(RuntimeWarning, match=r"collapsed at epoch 2: diversity 0.100 < gan.min_diversity=0.5"):
        with pytest.raises(GANModeCollapseError, match=r"diversity .* was 0.100 \(epoch 2\), 0.050 \(epoch 3\), below "
                           r"gan.min_diversity=0.5 .*gan.diversity_evals=2.*stopped at epoch 3. Last good checkpoint: "
                           r".*c.last_diverse.pt \(epoch 1\).*gan.min_diversity=0 turns this check off"):
            training_loop(images, None, 0, tiny_cfg(), checkpoint, CPU, evaluate=scripted_evaluation([0.9, 0.1, 0.05, 0.9, 0.9, 0.9]))
    assert torch.load(last_diverse_path(checkpoint), weights_only=True)["epoch"] == 1
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 2  # the collapsed epoch 3 is not saved


def test_collapse_remedies_leave_out_what_the_params_already_do():
    plain = collapse_remedies(dataclasses.replace(GANConfig(), augment="none", loss="nonsaturating", spectral_norm=False,
                                                  ema_kimg=0.0))
    assert plain.startswith("gan.augment=diffaugment, gan.loss=hinge with gan.spectral_norm=true, gan.ema_kimg > 0")
    modern = collapse_remedies(dataclasses.replace(GANConfig(), arch="acgan", mode="conditional"))  # the default recipe
    assert "diffaugment" not in modern and "gan.loss=hinge" not in modern and "ema_kimg" not in modern
    assert modern.startswith("gan.arch=cgan") and modern.endswith("more gan.epochs, another gan.seed")


@pytest.mark.parametrize("overrides, values", [
    ({"min_diversity": 0.0}, [0.0] * 6),  # the check is off
    ({}, [0.1, 0.9, 0.1, 0.9, 0.1, 0.9]),  # never two low evaluations in a row
])
def test_collapse_stop_rule_lets_these_runs_finish(tmp_path, overrides, values):
    images = np.random.default_rng(0).integers(0, 256, (16, 1, 28, 28), dtype=np.uint8)
    result = training_loop(images, None, 0, tiny_cfg(**overrides), tmp_path / "c.pt", CPU, evaluate=scripted_evaluation(values))
    assert [q["epoch"] for q in result.quality] == [1, 2, 3, 4, 5, 6]
