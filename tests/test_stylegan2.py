"""StyleGAN2 (gan.arch=stylegan2): networks at every buildable resolution, style mixing,
truncation, lazy regularisation, gan.init_from and its params checks. The uniform tests (one
step, exact resume, divergence, sampling, pyfunc) parametrise over it in test_gan.py."""

from __future__ import annotations

import dataclasses

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from ganaug.config import IMAGE_SIZE_RANGE, ConfigError, GANConfig, params_from_dict
from ganaug.gan import GANS
from ganaug.gan.generator import TrainedGenerator
from ganaug.gan.stylegan2 import StyleGAN2Loss, minibatch_std
from ganaug.gan.train import build_networks, initialise_from, training_loop
from ganaug.resolution import buildable_resolutions
from ganaug.tracking import pyfunc_generator

CPU = torch.device("cpu")


def sg2_cfg(**overrides) -> GANConfig:
    base = dict(arch="stylegan2", latent_dim=8, base_channels=4, epochs=1, batch_size=8, eval_every=1, n_eval=8,
                seed=0, device="cpu", loss="nonsaturating", spectral_norm=False, augment="none", ema_kimg=0.0)
    return dataclasses.replace(GANConfig(), **{**base, **overrides})


def tiny_images(n=16, size=28, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 1, size, size), dtype=np.uint8)


@pytest.mark.parametrize("resolution", buildable_resolutions(*IMAGE_SIZE_RANGE))
def test_generator_and_discriminator_build_at_every_supported_resolution(resolution):
    torch.manual_seed(0)
    g, d = build_networks(sg2_cfg(), resolution, 3)
    labels = torch.tensor([0, 2, 1])
    train_images = g(torch.randn(3, 8), labels)  # training mode: fresh noise, style mixing, linear output
    assert train_images.shape == (3, 1, resolution, resolution) and torch.isfinite(train_images).all()
    assert d(train_images, labels).shape == (3,)
    g.eval()
    images = g(torch.randn(3, 8), labels)
    assert images.shape == (3, 1, resolution, resolution) and images.min() >= -1 and images.max() <= 1


def test_eval_mode_is_deterministic_and_training_mode_draws_noise():
    torch.manual_seed(0)
    g, _ = build_networks(sg2_cfg(), 32, 0)
    z = torch.randn(2, 8)
    for layer in g.modules():  # noise strengths start at 0: give the noise inputs a visible effect
        if hasattr(layer, "noise_strength"):
            layer.noise_strength.data.fill_(0.5)
    g.eval()
    assert torch.equal(g(z), g(z))  # constant noise maps, no mixing: a sample is a function of z
    g.train()
    assert not torch.equal(g(z), g(z))


def test_style_mixing_gives_two_ws_split_at_one_layer():
    torch.manual_seed(0)
    g, _ = build_networks(sg2_cfg(stylegan2={"style_mixing": 1.0}), 32, 2)
    z, y = torch.randn(4, 8), torch.tensor([0, 1, 0, 1])
    ws = g.mapping_ws(z, y)  # (N, num_ws, w_dim)
    assert ws.shape == (4, g.num_ws, 128)
    changes = [i for i in range(1, g.num_ws) if not torch.equal(ws[:, i], ws[:, i - 1])]
    assert len(changes) == 1  # layers [0, cutoff) follow z, [cutoff, num_ws) a second z of the same class
    g_plain, _ = build_networks(sg2_cfg(stylegan2={"style_mixing": 0.0}), 32, 2)
    ws = g_plain.mapping_ws(z, y)
    assert all(torch.equal(ws[:, i], ws[:, 0]) for i in range(g_plain.num_ws))
    g.eval()  # sampling never mixes
    ws = g.mapping_ws(z, y)
    assert all(torch.equal(ws[:, i], ws[:, 0]) for i in range(g.num_ws))


def test_truncation_psi_0_gives_the_class_mean_image_and_psi_1_changes_nothing():
    torch.manual_seed(0)
    g, _ = build_networks(sg2_cfg(), 28, 3)
    for _ in range(20):  # training forwards track each class's mean w
        g(torch.randn(6, 8), torch.tensor([0, 1, 2, 0, 1, 2]))
    assert (g.mapping.w_avg.abs().sum(dim=1) > 0).all()
    g.eval()
    z = torch.randn(4, 8)
    for c in range(3):
        y = torch.full((4,), c)
        mean_image = g(z, y, truncation_psi=0.0)
        assert torch.allclose(mean_image, mean_image[:1].expand_as(mean_image), atol=1e-6)  # the same for every z
        expected = g.synthesis(g.mapping.w_avg[c].expand(1, g.num_ws, -1)).clamp(-1, 1)
        assert torch.allclose(mean_image[:1], expected, atol=1e-6)
        assert torch.equal(g(z, y, truncation_psi=1.0), g(z, y))
        half = g(z, y, truncation_psi=0.5)
        assert not torch.allclose(half, mean_image) and not torch.allclose(half, g(z, y))
    per_class = [g(z[:1], torch.tensor([c]), truncation_psi=0.0) for c in range(3)]
    assert not torch.allclose(per_class[0], per_class[1])  # one mean per class, not one for all
    with pytest.raises(ValueError, match="synthesize.truncation_psi"):
        g(z[:1], torch.tensor([[1.0, 0.0, 1.0]]), truncation_psi=0.5)  # multi-hot: no class mean


def test_truncation_reaches_samples_and_is_refused_for_other_archs(tmp_path):
    cfg = sg2_cfg(mode="conditional", epochs=2)
    result = training_loop(tiny_images(16), np.arange(16) % 2, 2, cfg, tmp_path / "c.pt", CPU)
    generator = TrainedGenerator(result.generator, dataclasses.asdict(cfg), ["a", "b"], [0, 1], True, {})
    generator.save(tmp_path / "g.pt")
    loaded = TrainedGenerator.load(tmp_path / "g.pt")
    plain = loaded.sample_stream(1, 0, 4, seed=3)
    np.testing.assert_array_equal(loaded.with_truncation(1.0).sample_stream(1, 0, 4, seed=3), plain)
    collapsed = loaded.with_truncation(0.0).sample_stream(1, 0, 4, seed=3)
    assert (collapsed == collapsed[:1]).all() and not (plain == plain[:1]).all()
    dcgan = dataclasses.replace(loaded, config={**loaded.config, "arch": "dcgan"})
    with pytest.raises(ValueError, match=r"synthesize.truncation_psi=0.7: truncation needs a StyleGAN2 generator"):
        dcgan.with_truncation(0.7)


def test_registered_pyfunc_takes_truncation_psi_as_a_param(tmp_path):
    cfg = sg2_cfg(mode="conditional", epochs=2)
    result = training_loop(tiny_images(16), np.arange(16) % 2, 2, cfg, tmp_path / "c.pt", CPU)
    TrainedGenerator(result.generator, dataclasses.asdict(cfg), ["a", "b"], [0, 1], True, {}).save(tmp_path / "g.pt")
    loaded = TrainedGenerator.load(tmp_path / "g.pt")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        exp = mlflow.create_experiment("t", artifact_location=(tmp_path / "artifacts").as_uri())
        with mlflow.start_run(experiment_id=exp):
            info = pyfunc_generator.log_generator(tmp_path / "g.pt", 1, 28, 1)
        model = mlflow.pyfunc.load_model(f"models:/{pyfunc_generator.REGISTERED_NAME}/{info.registered_model_version}")
        request = pd.DataFrame({"class_label": [1], "count": [4]})
        plain = model.predict(request, params={"seed": 3})
        np.testing.assert_array_equal(model.predict(request, params={"seed": 3, "truncation_psi": 1.0}), plain)
        half = model.predict(request, params={"seed": 3, "truncation_psi": 0.5})
        np.testing.assert_array_equal(half, loaded.with_truncation(0.5).sample({1: 4}, seed=3)[0])
        assert not np.array_equal(half, plain)
        collapsed = model.predict(request, params={"seed": 3, "truncation_psi": 0.0})
        assert (collapsed == collapsed[:1]).all() and not (plain == plain[:1]).all()
        with pytest.raises(Exception, match=r"params\['truncation_psi'\]=1.5: expected a value in \[0, 1\]"):
            model.predict(request, params={"seed": 3, "truncation_psi": 1.5})
    finally:
        mlflow.set_tracking_uri(None)
    dcgan_model = pyfunc_generator.GeneratorModel()
    dcgan_model.generator = dataclasses.replace(loaded, config={**loaded.config, "arch": "dcgan"})
    with pytest.raises(ValueError, match=r"params\['truncation_psi'\]=0.7: truncation needs a StyleGAN2 generator"):
        dcgan_model.predict(None, request, params={"truncation_psi": 0.7})


def test_lazy_r1_runs_every_interval_scaled_by_it():
    torch.manual_seed(0)
    _, d = build_networks(sg2_cfg(), 28, 0)
    real = torch.randn(4, 1, 28, 28)
    lazy = StyleGAN2Loss(GANS["dcgan"].loss(sg2_cfg()).adversarial, r1_gamma=0.5, r1_interval=4, pl_weight=0.0, pl_interval=4)
    rng = torch.Generator().manual_seed(0)
    terms = [lazy.penalty(d, real, real, None, rng)["penalty_r1"].item() for _ in range(8)]
    assert [t > 0 for t in terms] == [False, False, False, True] * 2
    x = real.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(d(x).sum(), x)
    assert terms[3] == pytest.approx(0.5 * 0.5 * 4 * grad.flatten(1).pow(2).sum(1).mean().item(), rel=1e-4)
    assert lazy.state_dict()["d_steps"] == 8


def test_minibatch_std_appends_the_group_spread():
    x = torch.randn(6, 3, 4, 4)
    out = minibatch_std(x)  # groups of 3 (the largest divisor of 6 up to 4): {0, 2, 4} and {1, 3, 5}
    assert out.shape == (6, 4, 4, 4)
    spread = x.reshape(3, 2, 3, 4, 4).std(dim=0, unbiased=False).mean(dim=(1, 2, 3))
    assert torch.allclose(out[0, 3], spread[0].expand(4, 4), atol=1e-5)
    assert torch.allclose(out[1, 3], spread[1].expand(4, 4), atol=1e-5)
    assert torch.allclose(out[4, 3], out[0, 3])
    assert minibatch_std(torch.randn(1, 3, 4, 4))[0, 3].abs().max() < 1e-3  # one image: no spread


def test_init_from_loads_a_previous_checkpoint_and_refuses_a_mismatch(tmp_path):
    images, labels = tiny_images(16), np.arange(16) % 2
    source = sg2_cfg(mode="conditional", epochs=1, ema_kimg=0.1)
    training_loop(images, labels, 2, source, tmp_path / "source.pt", CPU)
    state = torch.load(tmp_path / "source.pt", weights_only=True)

    cfg = dataclasses.replace(source, init_from=str(tmp_path / "source.pt"), seed=5, epochs=2)
    g, d = build_networks(cfg, 28, 2)
    from ganaug.gan.ema import GeneratorEMA
    ema = GeneratorEMA(g, cfg.ema_kimg)
    initialise_from(tmp_path / "source.pt", cfg, g, d, ema, 28, 2, 1)
    for network, key in ((g, "generator"), (d, "discriminator"), (ema.network, "ema")):
        for name, value in network.state_dict().items():
            assert torch.equal(value, state[key][name]), (key, name)

    result = training_loop(images, labels, 2, cfg, tmp_path / "fine_tuned.pt", CPU)  # starts from the source's weights
    assert len(result.losses) == 4 and all(np.isfinite(v) for r in result.losses for v in r.values())

    with pytest.raises(ValueError, match=r"gan.init_from=.*source.pt.*resolution 28 \(this run: 32\)"):
        training_loop(tiny_images(16, 32), labels, 2, cfg, tmp_path / "other.pt", CPU)
    with pytest.raises(ValueError, match=r"gan.init_from=.*gan.arch stylegan2 \(this run: cgan\)"):
        training_loop(images, labels, 2, dataclasses.replace(cfg, arch="cgan"), tmp_path / "cgan.pt", CPU)
    with pytest.raises(ValueError, match=r"gan.init_from=.*other sizes.*gan.base_channels"):
        training_loop(images, labels, 2, dataclasses.replace(cfg, base_channels=8), tmp_path / "wide.pt", CPU)
    # a generator file: G and its EMA come from it, D keeps its random initialisation
    TrainedGenerator(result.generator, dataclasses.asdict(cfg), ["a", "b"], [0, 1], True, {}).save(tmp_path / "g.pt")
    g2, d2 = build_networks(cfg, 28, 2)
    d_initial = {k: v.clone() for k, v in d2.state_dict().items()}
    ema2 = GeneratorEMA(g2, cfg.ema_kimg)
    assert "generator file" in initialise_from(tmp_path / "g.pt", cfg, g2, d2, ema2, 28, 2, 1)
    for network in (g2, ema2.network):
        assert all(torch.equal(v, result.generator.state_dict()[k]) for k, v in network.state_dict().items())
    assert all(torch.equal(v, d_initial[k]) for k, v in d2.state_dict().items())
    with pytest.raises(ValueError, match=r"gan.init_from=.*g.pt.*classes 2 \(this run: 3\)"):
        initialise_from(tmp_path / "g.pt", cfg, *build_networks(cfg, 28, 3), None, 28, 3, 1)
    with pytest.raises(FileNotFoundError, match=r"gan.init_from=.*missing.pt.*no such file"):
        training_loop(images, labels, 2, dataclasses.replace(cfg, init_from=str(tmp_path / "missing.pt")),
                      tmp_path / "none.pt", CPU)


def test_params_accept_both_modes_and_name_the_truncation_key():
    for mode in ("minority", "conditional"):
        params = params_from_dict({"gan": {"arch": "stylegan2", "mode": mode, "loss": "nonsaturating",
                                           "stylegan2": {"pl_weight": 2.0}}, "synthesize": {"truncation_psi": 0.7}})
        assert params.gan.stylegan2.pl_weight == 2.0 and params.synthesize.truncation_psi == 0.7
    with pytest.raises(ConfigError, match="synthesize.truncation_psi=0.7: truncation needs a StyleGAN2 generator, but "
                                          "gan.arch=dcgan"):
        params_from_dict({"synthesize": {"truncation_psi": 0.7}})
    with pytest.raises(ConfigError, match=r"synthesize.truncation_psi=1.5: expected >= 0 and <= 1"):
        params_from_dict({"gan": {"arch": "stylegan2"}, "synthesize": {"truncation_psi": 1.5}})
    assert GANConfig(**dataclasses.asdict(sg2_cfg())).stylegan2 == sg2_cfg().stylegan2  # as read back from a file


def test_model_card_says_when_a_generator_was_initialised_from_another():
    from ganaug.tracking.registry import model_card

    data = {"dataset_hash": "abc123", "source": {"name": "phantom"}}
    for init_from, said in (("/runs/mri/generator.pt", True), (None, False)):
        tags, text = model_card({}, {"gan.arch": "stylegan2", "gan.mode": "minority", "gan.init_from": init_from}, data,
                                ["normal"], "simple_cnn", 64, {"epochs": 1}, {"device": "cpu"})
        assert ("Initialised from /runs/mri/generator.pt (gan.init_from" in text) == said
        assert tags["gan.init_from"] == str(init_from)
