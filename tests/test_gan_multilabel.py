"""Conditional GANs on multi-hot finding vectors (NIH-style multi-label sets): the networks
condition on the vector's findings, a multi-hot generator file records its label kind, and it
samples one image per label vector drawn by ganaug.gan.conditioning."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from ganaug.config import GANConfig
from ganaug.gan import GANS
from ganaug.gan.conditioning import draw_combinations
from ganaug.gan.generator import TrainedGenerator
from ganaug.gan.losses import class_loss
from ganaug.gan.train import build_generator
from ganaug.torchfile import BadFileError

FINDINGS = ["consolidation", "interstitial", "cardiomegaly", "effusion"]
MULTI_HOT = np.array([[1, 0, 0, 1], [0, 0, 0, 0], [0, 1, 1, 0], [1, 1, 0, 1]] * 4, dtype=np.uint8)  # (16, 4)


def tiny_cfg(**overrides) -> GANConfig:
    base = dict(latent_dim=8, base_channels=4, epochs=1, batch_size=8, n_eval=8, seed=0, device="cpu",
                loss="nonsaturating", spectral_norm=False, augment="none", ema_kimg=0.0, mode="conditional")
    return dataclasses.replace(GANConfig(), **{**base, **overrides})


def untrained_generator(arch: str, n_classes: int) -> torch.nn.Module:
    """G as training builds it, in eval mode (sampling and file layout do not need trained weights;
    training on multi-hot labels: test_gan.py::test_multi_hot_labels_train_every_conditional_arch)."""
    torch.manual_seed(0)
    return build_generator(tiny_cfg(arch=arch), 28, n_classes, 1).eval()


def test_projection_discriminator_adds_one_embedding_per_finding():
    """logit(x, y) = w.phi(x) + sum_k y_k <e_k, phi(x)>: linear in the multi-hot vector."""
    torch.manual_seed(0)
    d = GANS["cgan"].discriminator(28, 4, 4, 1, "none", False).eval()
    x = torch.randn(3, 1, 28, 28)
    logit = lambda *findings: d(x, torch.tensor([[1.0 if k in findings else 0.0 for k in range(4)]] * 3))
    both = logit(0, 2) - logit()
    assert torch.allclose(both, (logit(0) - logit()) + (logit(2) - logit()), atol=1e-5)
    assert not torch.allclose(logit(0), logit(1))  # each finding has its own embedding


@pytest.mark.parametrize("arch", ["dcgan", "cgan", "acgan"])
def test_generator_output_depends_on_the_findings(arch):
    torch.manual_seed(0)
    g = GANS[arch].generator(28, 8, 4, 4, 1)
    if arch == "cgan":  # conditional BatchNorm starts as plain BatchNorm: give the findings a say
        for module in g.modules():
            if hasattr(module, "gain"):
                torch.nn.init.normal_(module.gain.weight, 0, 0.5)
    g.eval()
    z = torch.randn(2, 8)
    none, effusion = g(z, torch.zeros(2, 4)), g(z, torch.tensor([[0.0, 0, 0, 1]] * 2))
    assert none.shape == (2, 1, 28, 28) and not torch.allclose(none, effusion)
    # a one-hot vector is the class index of the single-label path
    assert torch.equal(g(z, torch.tensor([3, 3])), effusion)


def test_acgan_aux_head_is_binary_cross_entropy_per_finding():
    logits = torch.tensor([[2.0, -1.0, 0.0, 0.5]])
    target = torch.tensor([[1.0, 0.0, 0.0, 1.0]])
    expected = -(torch.log(torch.sigmoid(logits)) * target + torch.log(1 - torch.sigmoid(logits)) * (1 - target)).mean()
    assert class_loss(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("arch", ["cgan", "acgan"])
def test_multi_hot_generator_file_round_trips_and_samples_drawn_combinations(tmp_path, arch):
    generator = TrainedGenerator(untrained_generator(arch, 4), dataclasses.asdict(tiny_cfg(arch=arch)), FINDINGS, [0, 1, 2, 3], True,
                                 {}, label_kind="multi_hot")
    generator.save(tmp_path / "generator.pt")
    loaded = TrainedGenerator.load(tmp_path / "generator.pt")
    assert loaded.label_kind == "multi_hot" and loaded.multilabel and loaded.class_names == FINDINGS
    vectors = draw_combinations(MULTI_HOT, 11, seed=5)
    a_images, a_labels = generator.sample(vectors, seed=3, batch_size=4)
    b_images, b_labels = loaded.sample(vectors, seed=3)
    assert a_images.shape == (11, 1, 28, 28) and a_images.dtype == np.uint8
    np.testing.assert_array_equal(a_images, b_images)  # a pure function of (file, seed, vectors), batch size aside
    np.testing.assert_array_equal(a_labels, vectors)
    assert a_labels.dtype == np.uint8 and b_labels.shape == (11, 4)
    assert not np.array_equal(loaded.sample(vectors, seed=4)[0], a_images)
    # a class-index request means the finding alone
    np.testing.assert_array_equal(loaded.sample({3: 2}, seed=9)[0], loaded.sample(np.array([[0, 0, 0, 1]] * 2), seed=9)[0])
    assert loaded.sample(np.zeros((0, 4), np.uint8), seed=0)[0].shape == (0, 1, 28, 28)
    with pytest.raises(ValueError, match=r"multi-hot \(N, 4\)"):
        loaded.sample(np.array([[0, 2, 0, 1]]), seed=0)


def test_class_index_generator_refuses_label_vectors_and_keeps_its_file_layout(tmp_path):
    generator = TrainedGenerator(untrained_generator("cgan", 2), dataclasses.asdict(tiny_cfg(arch="cgan")), ["normal", "pneumonia"],
                                 [0, 1], True, {})
    generator.save(tmp_path / "generator.pt")
    assert "label_kind" not in torch.load(tmp_path / "generator.pt", weights_only=True)  # single-label files unchanged
    assert TrainedGenerator.load(tmp_path / "generator.pt").label_kind == "class_index"
    with pytest.raises(ValueError, match="label_kind='class_index'"):
        generator.sample(np.array([[1, 0]]), seed=0)


def test_generator_file_with_an_unknown_label_kind_is_refused(tmp_path):
    TrainedGenerator(untrained_generator("cgan", 4), dataclasses.asdict(tiny_cfg(arch="cgan")), FINDINGS, [0, 1, 2, 3], True, {},
                     label_kind="multi_hot").save(tmp_path / "generator.pt")
    blob = torch.load(tmp_path / "generator.pt", weights_only=True)
    blob["label_kind"] = "soft"
    torch.save(blob, tmp_path / "bad.pt")
    with pytest.raises(BadFileError, match="label_kind='soft'"):
        TrainedGenerator.load(tmp_path / "bad.pt")


class ConstantGenerator(torch.nn.Module):
    """Every sample the same image, whatever the noise and findings: a collapsed G."""

    latent_dim = 8

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        assert labels.shape == (len(z), 4) and labels.dtype == torch.float32  # the multi-hot vectors, as in training
        return torch.zeros(len(z), 1, 28, 28)


def test_multi_label_evaluation_covers_every_finding_and_sees_a_collapse(monkeypatch):
    from conftest import smooth_images

    monkeypatch.setattr("ganaug.quality.suite.PAIRS", 20)  # SSIM pairs per score: fewer, same code

    from ganaug.quality.multilabel import MIN_PER_FINDING, MultiLabelQualityEvaluator, evaluation_vectors

    labels = np.array([[1, 0, 0, 0]] * 30 + [[0, 0, 0, 0]] * 20 + [[0, 1, 1, 0]] * 6 + [[0, 0, 0, 1]] * 4, np.uint8)
    vectors = evaluation_vectors(labels, 10, seed=0)
    assert (vectors.sum(axis=0) >= MIN_PER_FINDING).all()  # rare findings topped up from their train combinations
    assert {tuple(v) for v in vectors} <= {tuple(v) for v in labels}
    evaluator = MultiLabelQualityEvaluator(smooth_images(60, 28, 0), labels, FINDINGS, 10, torch.device("cpu"),
                                           final_epoch=2, seed=0)
    collapsed = evaluator(2, ConstantGenerator())  # the final evaluation
    assert collapsed["diversity"] == 0.0 and collapsed["diversity_pixel_effusion"] == 0.0
    assert "memorisation_pixel_copy_rate" in collapsed and evaluator.final_fake.shape == (len(vectors), 1, 28, 28)
    assert "ssim_real_fake_ci_low_effusion" in collapsed  # intervals at the final evaluation, as for single-label data
    # a real-like G (image-like samples as varied as the train images), at an earlier epoch
    real_like = evaluator(1, RealImagesGenerator(smooth_images(len(vectors), 28, 1)))
    assert real_like["diversity"] > 0.5 and "fd_domain" not in real_like
    assert "memorisation_pixel_copy_rate" not in real_like  # the audit runs at the final evaluation only
    assert real_like["ssim_real_fake"] == pytest.approx(np.mean([real_like[f"ssim_real_fake_{n}"] for n in FINDINGS]))


class RealImagesGenerator(torch.nn.Module):
    latent_dim = 8

    def __init__(self, images: np.ndarray):
        super().__init__()
        self.images = torch.from_numpy(images).float() / 127.5 - 1.0

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.images[: len(z)]
