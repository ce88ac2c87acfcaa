"""Limited-data training: DiffAugment ops against their definitions, differentiability, the
same augmentation for real and generated images in the loop, the ADA probability controller,
and the EMA of G."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from ganaug.config import GANConfig
from ganaug.gan import diffaugment
from ganaug.gan.diffaugment import (
    ADA_INTERVAL, AdaptiveAugmentProbability, DiffAugment, brightness_contrast, cut_out, translate,
)
from ganaug.gan.ema import GeneratorEMA
from ganaug.gan.train import training_loop

CPU = torch.device("cpu")
POLICY = ("translation", "cutout", "color")


def test_translate_shifts_with_zero_fill():
    x = torch.arange(2 * 5 * 6, dtype=torch.float32).reshape(2, 1, 5, 6) + 1
    out = translate(x, torch.tensor([[1, -2], [0, 0]]))
    expected = np.zeros((5, 6), np.float32)  # out[y, x] = in[y + 1, x - 2]
    expected[:4, 2:] = x[0, 0, 1:, :4].numpy()
    np.testing.assert_array_equal(out[0, 0].numpy(), expected)
    assert torch.equal(out[1], x[1])  # zero shift: unchanged


def test_cut_out_zeroes_one_clipped_square():
    x = torch.ones(3, 1, 8, 8)
    out = cut_out(x, torch.tensor([[4, 4], [0, 7], [3, 3]]), torch.tensor([4, 4, 0]))
    assert out[0, 0, 2:6, 2:6].sum() == 0 and out[0].sum() == 64 - 16
    assert out[1, 0, :2, 5:].sum() == 0 and out[1].sum() == 64 - 6  # clipped at the corner: rows 0-1, columns 5-7
    assert torch.equal(out[2], x[2])  # size 0: untouched


def test_brightness_contrast_is_the_affine_map_about_the_mean():
    x = torch.randn(2, 1, 4, 4)
    out = brightness_contrast(x, torch.tensor([0.2, 0.0]), torch.tensor([1.5, 1.0]))
    shifted = x[0] + 0.2
    torch.testing.assert_close(out[0], (shifted - shifted.mean()) * 1.5 + shifted.mean())
    torch.testing.assert_close(out[1], x[1])


@pytest.mark.parametrize("op", POLICY)
def test_each_op_keeps_shape_and_changes_images(op):
    x = torch.rand(8, 1, 16, 16) * 2 - 1
    out = DiffAugment((op,))(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and not torch.equal(out, x)


def test_diffaugment_is_differentiable():
    policy = DiffAugment(POLICY)
    x = torch.rand(3, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    # fixed parameters on every call (the same generator state), so autograd can be checked numerically
    assert torch.autograd.gradcheck(lambda t: policy(t, torch.Generator().manual_seed(3)), (x,))
    y = torch.rand(3, 1, 8, 8, requires_grad=True)
    policy(y, torch.Generator().manual_seed(4)).square().sum().backward()
    assert y.grad is not None and torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0


def test_probability_gates_each_op_per_image():
    x = torch.rand(64, 1, 16, 16) * 2 - 1
    policy = DiffAugment(POLICY)
    assert torch.equal(policy(x, torch.Generator().manual_seed(0), p=0.0), x)
    out = policy(x, torch.Generator().manual_seed(0), p=0.3)
    untouched = (out == x).flatten(1).all(1).float().mean().item()
    assert 0.2 < untouched < 0.55  # all three ops skipped: 0.7**3 = 0.34 of the images


def test_same_generator_state_same_transform():
    x = torch.rand(4, 1, 16, 16)
    a = DiffAugment(POLICY)(x, torch.Generator().manual_seed(9))
    b = DiffAugment(POLICY)(x, torch.Generator().manual_seed(9))
    assert torch.equal(a, b)


def test_unknown_op_is_named():
    with pytest.raises(ValueError, match="gan.augment_policy=\\['rotate'\\]"):
        DiffAugment(("rotate",))


@pytest.mark.parametrize("augment", ["diffaugment", "ada"])
def test_loop_augments_every_discriminator_input_real_and_fake_alike(tmp_path, monkeypatch, augment):
    """Each step: D sees only augmented images; real and fake go through the same policy with the
    same probability, in the D step (real, fake) and in the G step (fake, with its gradient)."""
    calls, outputs = [], set()
    original = DiffAugment.__call__

    def spy(self, images, rng, p=1.0):
        out = original(self, images, rng, p)
        calls.append((self.policy, p, images.requires_grad))
        outputs.add(id(out))
        return out

    monkeypatch.setattr(diffaugment.DiffAugment, "__call__", spy)
    cfg = dataclasses.replace(GANConfig(), latent_dim=8, base_channels=4, epochs=1, batch_size=8, device="cpu",
                              augment=augment, augment_policy=["cutout", "color"], loss="hinge")
    seen_by_d: list[int] = []
    from ganaug.gan import train

    build = train.build_networks

    def build_and_watch(*args, **kwargs):
        g, d = build(*args, **kwargs)
        d.register_forward_pre_hook(lambda module, inputs: seen_by_d.append(id(inputs[0])))
        return g, d

    monkeypatch.setattr(train, "build_networks", build_and_watch)
    training_loop(np.random.default_rng(0).integers(0, 256, (16, 1, 28, 28), dtype=np.uint8), None, 0, cfg, tmp_path / "c.pt", CPU)
    assert len(calls) == 6 and len(seen_by_d) == 6  # 2 steps x (real, fake for D, fake for G)
    assert all(i in outputs for i in seen_by_d)  # D never saw an un-augmented batch
    assert {policy for policy, _, _ in calls} == {("cutout", "color")}
    for step in (calls[:3], calls[3:]):
        assert len({p for _, p, _ in step}) == 1  # one probability for real and fake in a step
        assert [requires_grad for _, _, requires_grad in step] == [False, False, True]  # real, detached fake, fake -> G


def test_ada_probability_follows_the_overfitting_signal():
    ada = AdaptiveAugmentProbability(target=0.6, kimg=1.0)
    for _ in range(ADA_INTERVAL - 1):
        ada.observe(1.0, 10)  # D says "real" to every real image: r_t = 1
        ada.end_step()
    assert ada.p == 0.0  # adjusts only every ADA_INTERVAL steps
    ada.observe(1.0, 10)
    ada.end_step()
    assert ada.rt == 1.0 and ada.p == pytest.approx(40 / 1000)  # + images / (kimg * 1000)
    for _ in range(ADA_INTERVAL):
        ada.observe(-0.2, 5)  # r_t = -0.2 < target
        ada.end_step()
    assert ada.rt == pytest.approx(-0.2) and ada.p == pytest.approx(20 / 1000)
    for _ in range(10 * ADA_INTERVAL):
        ada.observe(-1.0, 10)
        ada.end_step()
    assert ada.p == 0.0  # clipped at 0


def test_ema_averages_weights_with_the_half_life_and_copies_buffers():
    g = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    ema = GeneratorEMA(g, half_life_kimg=0.1)
    start = [p.detach().clone() for p in g.parameters()]
    with torch.no_grad():
        for p in g.parameters():
            p.add_(1.0)
    g.train()(torch.randn(8, 2))  # moves BatchNorm's running statistics
    ema.update(g, n_images=100)  # one half-life: halfway to G
    for averaged, before, now in zip(ema.network.parameters(), start, g.parameters()):
        torch.testing.assert_close(averaged, (before + now) / 2)
    torch.testing.assert_close(ema.network[1].running_mean, g[1].running_mean)
    assert not ema.network.training and not any(p.requires_grad for p in ema.network.parameters())


def test_loop_samples_from_the_ema_when_it_is_on(tmp_path):
    cfg = dataclasses.replace(GANConfig(), latent_dim=8, base_channels=4, epochs=2, batch_size=8, device="cpu", ema_kimg=0.05)
    images = np.random.default_rng(0).integers(0, 256, (16, 1, 28, 28), dtype=np.uint8)
    seen = []
    result = training_loop(images, None, 0, cfg, tmp_path / "c.pt", CPU, evaluate=lambda epoch, g: seen.append(g) or {})
    assert result.generator is not result.trained_generator and all(g is result.generator for g in seen)
    trained = dict(result.trained_generator.named_parameters())
    differs = [name for name, p in result.generator.named_parameters() if not torch.equal(p, trained[name])]
    assert differs  # the average lags the optimised weights
