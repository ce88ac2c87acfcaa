"""GAN networks, losses and the gan params checks: forward shapes of every architecture at
every resolution and conditioning mode, the registry against the config, loss values against
their formulas, gradient penalties, spectral normalisation; and benchmarks/gan_architectures.py
taking all five architectures through its equal-budget comparison on a tiny prepared set."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import typing

import pytest
import torch
import torch.nn.functional as F
from ruamel.yaml import YAML

from conftest import REPO

from ganaug.config import ConfigError, GANConfig, params_from_dict
from ganaug.gan import GANS
from ganaug.gan.blocks import resolution_plan
from ganaug.gan.losses import ACGANLoss, GANLoss, HingeLoss, NonSaturatingLoss, WassersteinLoss, class_loss
from ganaug.gan.train import build_networks, discriminator_norm

RESOLUTIONS = [28, 32, 64, 128, 256]
# conditioning: unconditional (dcgan only), class indices, multi-hot (K = 3)
CONDITIONING = {"none": None, "index": torch.tensor([0, 2]), "multi_hot": torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])}


def cfg(**overrides) -> GANConfig:
    plain = dict(loss="nonsaturating", spectral_norm=False)  # DCGAN's BCE and BatchNorm D, what the options change
    return dataclasses.replace(GANConfig(), latent_dim=8, base_channels=4, **{**plain, **overrides})


@pytest.mark.parametrize("resolution", RESOLUTIONS)
@pytest.mark.parametrize("arch, conditioning", [("dcgan", "none"), ("dcgan", "index"), ("dcgan", "multi_hot"),
                                                ("cgan", "index"), ("cgan", "multi_hot"),
                                                ("acgan", "index"), ("acgan", "multi_hot"),
                                                ("stylegan2", "none"), ("stylegan2", "index"), ("stylegan2", "multi_hot")])
def test_forward_shapes(arch, conditioning, resolution):
    labels = CONDITIONING[conditioning]
    n_classes = 0 if labels is None else 3
    g, d = build_networks(cfg(arch=arch), resolution, n_classes)
    if arch == "stylegan2":
        g.eval()  # its output is linear while training and clamped to [-1, 1] when sampled
    images = g(torch.randn(2, 8), labels)
    assert images.shape == (2, 1, resolution, resolution)
    assert images.min() >= -1 and images.max() <= 1
    out = d(images, labels)
    if arch == "acgan":  # (real/fake logits, class logits)
        assert out[0].shape == (2,) and out[1].shape == (2, 3)
    else:
        assert out.shape == (2,)


@pytest.mark.parametrize("arch", ["cgan", "acgan"])
def test_conditional_architectures_use_the_label(arch):
    g, d = build_networks(cfg(arch=arch), 32, 3)
    for module in g.modules():  # untrained cGAN embeddings start at zero: give them weights
        if isinstance(module, torch.nn.Linear):
            torch.nn.init.normal_(module.weight)
    g.eval()
    z = torch.randn(2, 8)
    assert not torch.allclose(g(z, torch.tensor([0, 0])), g(z, torch.tensor([1, 1])))
    if arch == "cgan":  # the projection term makes D's logit depend on the label
        x = torch.randn(2, 1, 32, 32)
        assert not torch.allclose(d(x, torch.tensor([0, 0])), d(x, torch.tensor([2, 2])))


@pytest.mark.parametrize("arch", ["cgan", "acgan"])
def test_conditional_architectures_refuse_to_build_without_classes(arch):
    with pytest.raises(ValueError, match=f"gan.arch={arch} is class-conditional"):
        build_networks(cfg(arch=arch), 32, 0)


@pytest.mark.parametrize("resolution", [30, 100, 288])
def test_unsupported_resolution_is_named(resolution):
    with pytest.raises(ValueError, match=f"GAN resolution {resolution}"):
        resolution_plan(resolution)


def test_registry_and_config_name_the_same_architectures():
    assert set(typing.get_args(typing.get_type_hints(GANConfig)["arch"])) == set(GANS)


@pytest.mark.parametrize("options, norm", [({}, "batch"), ({"loss": "wgan_gp"}, "layer"),
                                           ({"spectral_norm": True}, "none"), ({"spectral_norm": True, "loss": "wgan_gp"}, "none")])
def test_discriminator_norm_follows_loss_and_spectral_norm(options, norm):
    c = cfg(**options)
    assert discriminator_norm(c) == norm
    _, d = build_networks(c, 32, 0)
    kinds = {type(m) for m in d.modules()}
    assert (torch.nn.BatchNorm2d in kinds) == (norm == "batch") and (torch.nn.GroupNorm in kinds) == (norm == "layer")


def test_spectral_norm_bounds_each_layer():
    _, d = build_networks(cfg(spectral_norm=True), 32, 0)
    d.train()
    for _ in range(30):  # power iterations converge while D runs in training mode
        d(torch.randn(4, 1, 32, 32))
    convs = [m for m in d.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(hasattr(m, "parametrizations") for m in convs)
    for m in convs:
        sigma = torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2)
        assert sigma == pytest.approx(1.0, abs=0.05)


def test_adversarial_losses_match_their_formulas():
    real, fake = torch.tensor([2.0, -0.5, 0.3]), torch.tensor([-1.5, 0.7, 1.2])
    ns = NonSaturatingLoss()
    expected = -torch.log(torch.sigmoid(real)).mean() - torch.log(1 - torch.sigmoid(fake)).mean()
    assert ns.discriminator(real, fake).item() == pytest.approx(expected.item(), rel=1e-5)
    assert ns.generator(fake).item() == pytest.approx(-torch.log(torch.sigmoid(fake)).mean().item(), rel=1e-5)
    hinge = HingeLoss()
    assert hinge.discriminator(real, fake).item() == pytest.approx(((0 + 1.5 + 0.7) / 3 + (0 + 1.7 + 2.2) / 3), rel=1e-6)
    assert hinge.generator(fake).item() == pytest.approx(-fake.mean().item())
    w = WassersteinLoss()
    assert w.discriminator(real, fake).item() == pytest.approx((fake.mean() - real.mean()).item())


def test_acgan_loss_adds_weighted_class_terms_for_indices_and_multi_hot():
    loss = ACGANLoss(NonSaturatingLoss(), aux_weight=0.5)
    logits, class_logits = torch.tensor([0.3, -0.2]), torch.tensor([[2.0, 0.1, -1.0], [0.0, 1.0, 0.5]])
    y = torch.tensor([0, 2])
    terms = loss.discriminator((logits, class_logits), (logits, class_logits), y, y)
    assert set(terms) == {"loss_d_adv", "loss_d_aux"}
    assert terms["loss_d_aux"].item() == pytest.approx(0.5 * 2 * F.cross_entropy(class_logits, y).item(), rel=1e-6)
    multi_hot = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    g_terms = loss.generator((logits, class_logits), multi_hot)
    assert g_terms["loss_g_aux"].item() == pytest.approx(
        0.5 * F.binary_cross_entropy_with_logits(class_logits, multi_hot).item(), rel=1e-6)
    assert class_loss(class_logits, y).item() == pytest.approx(F.cross_entropy(class_logits, y).item())


def test_gradient_penalties_match_their_definitions():
    torch.manual_seed(0)
    linear = torch.nn.Conv2d(1, 1, 4, bias=False)  # D(x) = <w, x>: grad = w for every image
    d = lambda x, labels=None: linear(x).flatten()  # noqa: E731
    w_norm = linear.weight.norm().item()
    real, fake = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    terms = GANLoss(WassersteinLoss(), gp_weight=10.0, r1_gamma=2.0).penalty(d, real, fake, None, torch.Generator().manual_seed(0))
    assert terms["penalty_gp"].item() == pytest.approx(10.0 * (w_norm - 1) ** 2, rel=1e-4)
    assert terms["penalty_r1"].item() == pytest.approx(0.5 * 2.0 * w_norm**2, rel=1e-4)
    terms["penalty_gp"].backward()  # the penalty trains D: it has a gradient in D's weights
    assert linear.weight.grad is not None and linear.weight.grad.abs().sum() > 0
    assert GANLoss(NonSaturatingLoss()).penalty(d, real, fake, None, torch.Generator()) == {}


def test_loss_from_config_uses_gp_only_with_wgan_gp():
    assert GANLoss.from_config(cfg(loss="hinge", gp_weight=5.0)).gp_weight == 0.0
    loss = GANS["acgan"].loss(cfg(arch="acgan", mode="conditional", loss="wgan_gp", gp_weight=5.0, aux_weight=0.3, r1_gamma=1.0))
    assert isinstance(loss, ACGANLoss) and isinstance(loss.adversarial, WassersteinLoss)
    assert (loss.gp_weight, loss.r1_gamma, loss.aux_weight) == (5.0, 1.0, 0.3)


@pytest.mark.parametrize(
    "gan, message",
    [
        ({"arch": "cgan"}, "gan.arch=cgan is class-conditional but gan.mode=minority: expected gan.mode=conditional"),
        ({"arch": "acgan", "mode": "minority"}, "gan.arch=acgan is class-conditional"),
        ({"augment": "ada", "loss": "wgan_gp"}, "gan.augment=ada with gan.loss=wgan_gp"),
        ({"loss": "hinged"}, "gan.loss='hinged': expected one of .*did you mean 'hinge'"),
        ({"augment_policy": ["translation", "cutot"]}, r"gan.augment_policy\[1\]='cutot'.*did you mean 'cutout'"),
        ({"augment_policy": []}, "gan.augment_policy=.*a non-empty list of distinct ops"),
        ({"ada_target": 1.0}, r"gan.ada_target=1.0: expected in \(0, 1\)"),
        ({"n_critic": 0}, "gan.n_critic=0: expected > 0"),
        ({"ema_kimg": -1}, "gan.ema_kimg=-1: expected >= 0"),
        ({"spectral_norm": "yes"}, "gan.spectral_norm='yes': expected true or false"),
        ({"optimizer": "sgd"}, "gan.optimizer='sgd': expected one of 'adam', 'rmsprop'"),
        ({"arch": "stylegan2", "loss": "wgan_gp"}, "gan.arch=stylegan2 with gan.loss=wgan_gp"),
        ({"arch": "stylegan2", "r1_gamma": 1.0}, "gan.r1_gamma=1.0 with gan.arch=stylegan2: .*gan.stylegan2.r1_gamma"),
        ({"arch": "stylegan2", "stylegan2": {"r1_interval": 0}}, r"gan.stylegan2.r1_interval=0: expected >= 1"),
        ({"arch": "stylegan2", "stylegan2": {"mapping_depth": 2}}, "unknown params key 'gan.stylegan2.mapping_depth'"),
    ],
)
def test_bad_gan_params_name_the_key(gan, message):
    with pytest.raises(ConfigError, match=message):
        params_from_dict({"gan": gan})


def test_conditional_archs_validate_with_conditional_mode():
    params = params_from_dict({"gan": {"arch": "acgan", "mode": "conditional", "optimizer": "rmsprop", "lr_g": 1e-4,
                                       "lr_d": 1e-4, "augment": "ada", "ema_kimg": 1}})
    assert params.gan.arch == "acgan" and params.gan.augment_policy == ["translation", "cutout", "color"]


def load_benchmark():
    spec = importlib.util.spec_from_file_location("gan_architectures_benchmark", REPO / "benchmarks" / "gan_architectures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_benchmark_runs_every_architecture_at_one_budget(tmp_path, monkeypatch):
    """Tiny phantom set (84 train images: 22 normal, 62 pneumonia), tiny networks: every arch
    trains for the budget, every metric is finite and every interval holds its estimate; the
    translator's samples are target-class translations of source-class images."""
    from ganaug import cli

    with open(tmp_path / "params.yaml", "w") as f:
        YAML().dump({"data": {"image_size": 28, "phantom": {"n_images": 120}}}, f)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["prepare"]) == 0
    bench = load_benchmark()
    tiny = ["reference.epochs=1", "gan.base_channels=4", "gan.batch_size=8", "gan.latent_dim=8", "gan.stylegan2.w_dim=8"]
    bench.main([str(tmp_path / "data/prepared"), "--kimg", "0.1", "--augments", "diffaugment", "--n-eval", "24",
                "--device", "cpu", "--out", str(tmp_path / "out"), *[a for t in tiny for a in ("--set", t)]])
    report = json.loads((tmp_path / "out/gan_architectures.json").read_text())
    rows = {r["arch"]: r for r in report["rows"]}
    assert list(rows) == bench.ARCHS and report["commit"] and "cpu" in report["device"]
    for arch, row in rows.items():
        assert row["status"] == "ok", (arch, row["status"])
        assert row["kimg"] >= 0.1 and row["images_per_second"] > 0
        for key in ("images_per_second", "fd_domain", "kd_domain", "precision_domain", "recall_domain", "ssim_real_fake",
                    "label_fidelity", "memorisation_pixel_copy_rate", "memorisation_domain_copy_rate"):
            assert math.isfinite(row[key]), (arch, key, row[key])
        for key in report["interval_metrics"]:
            assert row[f"{key}_ci_low"] <= row[key] <= row[f"{key}_ci_high"], (arch, key)
            for name in (["normal"] if arch == "cyclegan" else ["normal", "pneumonia"]):  # each class made, on its own
                assert row[f"{key}_ci_low_{name}"] <= row[f"{key}_{name}"] <= row[f"{key}_ci_high_{name}"], (arch, key, name)
    assert (rows["stylegan2"]["augment"], rows["stylegan2"]["gan"]["mode"]) == ("diffaugment", "conditional")
    assert {k for k in rows["stylegan2"] if k.startswith("label_fidelity_")} == {"label_fidelity_normal", "label_fidelity_pneumonia"}
    translator = rows["cyclegan"]
    # the train_gan rule: the largest class (62 pneumonia) into the smallest (22 normal); each source at most once
    assert (translator["source_class"], translator["target_class"], translator["n_samples"]) == ("pneumonia", "normal", 24)
    assert translator["augment"] == "n/a" and translator["gan"]["augment"] == "none" and translator["gan"]["mode"] == "minority"
    assert "target class normal only" in translator["samples_cover"] and "fd_domain_pneumonia" not in translator
    assert translator["fd_domain_normal"] == translator["fd_domain"]  # one class: pooled and per class agree
    assert {k for k in translator if k.startswith("label_fidelity_")} == {"label_fidelity_normal", "label_fidelity_untranslated"}
    assert 0 < translator["translation_change"] <= 1 and -1 <= translator["translation_ssim_to_source"] < 1
    assert math.isfinite(translator["fd_domain_untranslated"])
    table = (tmp_path / "out/gan_architectures.md").read_text()
    assert "cyclegan (target class only)" in table and report["commit"] in table
