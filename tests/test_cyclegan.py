"""CycleGAN (gan.arch=cyclegan): networks at every resolution, its losses on tiny inputs, the
image pool and learning-rate schedule, one training step, the class and params checks, the
translator's pyfunc round trip, the unchanged-input translator flagged, and synthesize's
provenance through the real stages. Exact resume and the divergence guard: test_gan.py."""

from __future__ import annotations

import dataclasses
import json

import mlflow
import numpy as np
import pytest
import torch
from torch import nn

from ganaug.config import IMAGE_SIZE_RANGE, ConfigError, GANConfig, SynthesizeConfig, params_from_dict
from ganaug.gan import cyclegan
from ganaug.gan.generator import TrainedGenerator
from ganaug.gan.train import build_generator, training_loop
from ganaug.quality.gate import QualityGateError
from ganaug.quality.translation import change_metrics, unchanged_message
from ganaug.resolution import buildable_resolutions

CPU = torch.device("cpu")


def tiny_cfg(**overrides) -> GANConfig:
    cc = dataclasses.replace(GANConfig().cyclegan, **{"pool_size": 4, **overrides.pop("cyclegan", {})})
    base = dict(arch="cyclegan", base_channels=4, epochs=1, batch_size=4, eval_every=1, n_eval=8, seed=0, device="cpu")
    return dataclasses.replace(GANConfig(), cyclegan=cc, **{**base, **overrides})


def tiny_images(n=16, size=28, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 1, size, size), dtype=np.uint8)


@pytest.mark.parametrize("resolution", buildable_resolutions(*IMAGE_SIZE_RANGE))
def test_shapes_at_every_supported_resolution(resolution):
    nets = cyclegan.build_translators(tiny_cfg(), resolution, 1)
    x = torch.rand(2, 1, resolution, resolution) * 2 - 1
    y = nets.g_ab(x)
    assert y.shape == x.shape and y.min() >= -1 and y.max() <= 1
    patches = nets.d_b(y)
    assert patches.ndim == 4 and patches.shape[:2] == (2, 1) and min(patches.shape[2:]) >= 2  # a map of patch verdicts
    assert build_generator(tiny_cfg(), resolution, 0).n_res_blocks == cyclegan.residual_blocks(resolution, 0)


def test_generator_depth_follows_the_resolution_or_the_key():
    assert [cyclegan.residual_blocks(r, 0) for r in (28, 64, 128, 256)] == [3, 6, 6, 9]
    assert build_generator(tiny_cfg(cyclegan={"n_res_blocks": 2}), 64, 0).n_res_blocks == 2


class Passthrough(nn.Module):
    """A 'translator' that returns its input (a parameter so that an optimiser can hold it)."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return x + 0 * self.weight


def test_cycle_and_identity_losses_on_tiny_inputs():
    a = torch.tensor([[[[0.5, -0.5], [1.0, 0.0]]]])
    assert cyclegan.cycle_loss(a, a) == 0 and cyclegan.identity_loss(a, a) == 0
    assert cyclegan.cycle_loss(a, a + 0.25) == pytest.approx(0.25)
    assert cyclegan.identity_loss(a, torch.zeros_like(a)) == pytest.approx((0.5 + 0.5 + 1.0) / 4)
    ls = cyclegan.LeastSquaresLoss()
    assert ls.discriminator(torch.ones(3), torch.zeros(3)) == 0 and ls.generator(torch.ones(3)) == 0
    assert ls.discriminator(torch.zeros(3), torch.ones(3)) == pytest.approx(1.0)  # 0.5 * (1 + 1)
    # identity generators: the cycle and identity terms of a real step are exactly 0
    cfg = tiny_cfg(cyclegan={"pool_size": 0})
    d = cyclegan.PatchDiscriminator(28, 4, 1)
    nets = cyclegan.Translators(Passthrough(), Passthrough(), d, cyclegan.PatchDiscriminator(28, 4, 1))
    opt_g = torch.optim.Adam([*nets.g_ab.parameters(), *nets.g_ba.parameters()])
    opt_d = torch.optim.Adam([*nets.d_a.parameters(), *nets.d_b.parameters()])
    pool = cyclegan.ImagePool(0, 0)
    x = torch.rand(2, 1, 28, 28) * 2 - 1
    terms = cyclegan.translation_step(nets, x, x.flip(0), opt_g, opt_d, pool, pool, cfg)
    assert terms["loss_cycle"] == 0 and terms["loss_identity"] == 0
    assert terms["loss_g"] == pytest.approx(float(terms["loss_g_adv"]))


def test_one_training_step_changes_every_network(tmp_path):
    images, domains = tiny_images(8), np.arange(8) % 2
    cfg = tiny_cfg(epochs=1)
    torch.manual_seed(cfg.seed)
    before = cyclegan.build_translators(cfg, 28, 1)  # what the loop builds first, from the same seed
    result = training_loop(images, domains, 0, cfg, tmp_path / "c.pt", CPU)
    assert len(result.losses) == 1  # one step: 4 images per class, batch 4
    state = torch.load(tmp_path / "c.pt", weights_only=True)
    for name, module in before.modules().items():
        changed = [not torch.equal(v, state[name][k]) for k, v in module.state_dict().items()]
        assert any(changed), f"{name} did not change"
    assert {"loss_cycle", "loss_identity", "loss_g_adv", "loss_d_a", "loss_d_b"} <= set(result.losses[0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_translation_epoch_is_finite_and_trains(tmp_path):
    result = training_loop(tiny_images(16), np.arange(16) % 2, 0, tiny_cfg(epochs=2, device="cuda"), tmp_path / "c.pt",
                           torch.device("cuda"))
    assert all(np.isfinite(r[k]) for r in result.losses for k in ("loss_d", "loss_g", "loss_cycle"))
    assert result.losses[-1]["loss_cycle"] < result.losses[0]["loss_cycle"]


def test_learning_rate_is_constant_then_decays_linearly():
    factors = [cyclegan.lr_factor(e, 10, 0.5) for e in range(1, 11)]
    assert factors[:5] == [1.0] * 5
    assert factors[5:] == pytest.approx([5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6])
    assert cyclegan.lr_factor(1, 4, 0.0) == pytest.approx(0.8)


def test_image_pool_is_seeded_and_resumes_exactly():
    batches = [torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(i)) for i in range(6)]
    pool = cyclegan.ImagePool(4, seed=1)
    first = [pool.query(b) for b in batches[:3]]
    assert torch.equal(first[0], batches[0])  # while the pool fills, D sees this step's fakes
    state = pool.state_dict()
    rest = [pool.query(b) for b in batches[3:]]
    resumed = cyclegan.ImagePool(4, seed=1)
    resumed.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(rest, [resumed.query(b) for b in batches[3:]], strict=True))
    assert any(not torch.equal(r, b) for r, b in zip(rest, batches[3:], strict=True))  # old fakes came back
    assert torch.equal(cyclegan.ImagePool(0, 0).query(batches[0]), batches[0])


def test_classes_default_to_majority_and_minority_and_are_checked_by_name():
    names, counts = ["normal", "bacterial", "viral"], [10, 30, 5]
    assert cyclegan.translation_classes(names, counts, tiny_cfg()) == (1, 2)
    assert cyclegan.translation_classes(names, counts, tiny_cfg(cyclegan={"source_class": "normal"})) == (0, 2)
    with pytest.raises(ValueError, match=r"gan.cyclegan.target_class='covid': not a class .*\['normal', 'bacterial', 'viral'\]"):
        cyclegan.translation_classes(names, counts, tiny_cfg(cyclegan={"target_class": "covid"}))
    with pytest.raises(ValueError, match="gan.cyclegan.source_class and gan.cyclegan.target_class both resolve to 'viral'"):
        cyclegan.translation_classes(names, counts, tiny_cfg(cyclegan={"source_class": "viral"}))


@pytest.mark.parametrize("gan, synthesize, match", [
    ({"mode": "conditional"}, {}, "gan.arch=cyclegan .* gan.mode=conditional: expected gan.mode=minority"),
    ({"cyclegan": {"source_class": "a", "target_class": "a"}}, {}, "source_class and gan.cyclegan.target_class are both 'a'"),
    ({}, {"filter": "reference_confidence"}, "synthesize.filter=reference_confidence with gan.arch=cyclegan"),
    ({"cyclegan": {"lambda_cycle": -1}}, {}, r"gan.cyclegan.lambda_cycle=-1: expected"),
    ({"cyclegan": {"pool": 3}}, {}, "unknown params key 'gan.cyclegan.pool'; did you mean 'gan.cyclegan.pool_size'"),
])
def test_params_checks_name_the_key(gan, synthesize, match):
    with pytest.raises(ConfigError, match=match):
        params_from_dict({"gan": {"arch": "cyclegan", **gan}, "synthesize": synthesize})


def trained_translator(tmp_path, source_class=0) -> TrainedGenerator:
    cfg = tiny_cfg()
    result = training_loop(tiny_images(8), np.arange(8) % 2, 0, cfg, tmp_path / "c.pt", CPU)
    return TrainedGenerator(result.generator, dataclasses.asdict(cfg), ["normal", "pneumonia"], [1], False,
                            {"source_class": source_class, "final_quality": {}})


def test_translator_file_round_trip_and_refuses_noise(tmp_path):
    translator = trained_translator(tmp_path)
    translator.save(tmp_path / "generator.pt")
    loaded = TrainedGenerator.load(tmp_path / "generator.pt")
    assert loaded.translator and loaded.config["cyclegan"] == translator.config["cyclegan"]
    sources = tiny_images(5, seed=3)
    np.testing.assert_array_equal(cyclegan.translate(loaded.network, sources), cyclegan.translate(translator.network, sources))
    with pytest.raises(ValueError, match="CycleGAN translator: it takes source images, not noise"):
        loaded.sample({1: 2}, seed=0)


def test_registered_translator_loads_back_as_pyfunc(tmp_path):
    from ganaug.tracking import pyfunc_generator, pyfunc_translator

    translator = trained_translator(tmp_path)
    translator.save(tmp_path / "generator.pt")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        exp = mlflow.create_experiment("t", artifact_location=(tmp_path / "artifacts").as_uri())
        with mlflow.start_run(experiment_id=exp):
            info = pyfunc_translator.log_translator(tmp_path / "generator.pt", 1, 28)
        model = mlflow.pyfunc.load_model(f"models:/{pyfunc_generator.REGISTERED_NAME}/{info.registered_model_version}")
        sources = tiny_images(3, seed=4)
        translated = model.predict(sources)
        assert translated.shape == (3, 1, 28, 28) and translated.dtype == np.uint8
        np.testing.assert_array_equal(translated, cyclegan.translate(translator.network, sources))
        with pytest.raises(Exception, match="uint8|shape|28"):
            model.predict(tiny_images(2, size=32))
    finally:
        mlflow.set_tracking_uri(None)


def test_a_translator_that_returns_its_input_is_flagged(tmp_path):
    from ganaug.quality.gate import check_gate

    sources = tiny_images(6, seed=5)
    unchanged = change_metrics(sources, cyclegan.translate(Passthrough(), sources))
    assert unchanged == {"translation_change": 0.0, "translation_ssim_to_source": pytest.approx(1.0),
                         "translation_unchanged_rate": 1.0}
    assert "returns its input (nearly) unchanged: translation_change 0.0000 < 0.01" in unchanged_message(unchanged, 0.01)
    changed = change_metrics(sources, 255 - sources)
    assert changed["translation_change"] > 0.3 and changed["translation_unchanged_rate"] == 0
    assert unchanged_message(changed, 0.01) is None
    # the quality gate refuses its set, naming the key, unless overridden
    translator = trained_translator(tmp_path)
    translator.info["final_quality"] = {**unchanged, "coverage_domain": 0.5, "diversity": 1.0}
    levels = SynthesizeConfig()
    with pytest.raises(QualityGateError, match=r"translation_change 0.000 < synthesize.min_translation_change=0.01"):
        check_gate(translator, "generator.pt", levels)
    assert check_gate(translator, "generator.pt", dataclasses.replace(levels, override_gate=True)).failures
    translator.info["final_quality"] |= changed
    assert check_gate(translator, "generator.pt", levels).passed


def test_translate_pool_records_which_train_image_each_translation_came_from(tmp_path):
    from ganaug.data.packed import Split
    from ganaug.stages.synthesize import translate_pool

    translator = trained_translator(tmp_path, source_class=0)
    labels = np.array([0, 1, 0, 0, 1, 1, 1, 0, 1, 1])
    train = Split(tiny_images(10, seed=6), labels)
    cfg = SynthesizeConfig(pool_ratio=1.0, seed=3)
    images, out_labels, counts, sources = translate_pool(translator, train, [4, 6], cfg)
    assert counts == {1: 6} and (out_labels == 1).all() and len(images) == 6
    assert (labels[sources] == 0).all() and set(sources) == {0, 2, 3, 7}  # every source once, then repeated
    np.testing.assert_array_equal(images, cyclegan.translate(translator.network, train.images[sources]))
    smaller = translate_pool(translator, train, [4, 6], dataclasses.replace(cfg, pool_ratio=0.5))
    np.testing.assert_array_equal(smaller[3], sources[:3])  # a smaller pool is a prefix
    assert not np.array_equal(translate_pool(translator, train, [4, 6], dataclasses.replace(cfg, seed=4))[3], sources)


TINY_STAGES = {
    "data": {"image_size": 32, "phantom": {"n_images": 120}},
    "reference": {"epochs": 1},
    "gan": {"arch": "cyclegan", "epochs": 1, "base_channels": 4, "batch_size": 16, "eval_every": 1, "n_eval": 16,
            "device": "cpu", "min_diversity": 0.0},
    "synthesize": {"pool_ratio": 1.0, "min_coverage": 0.0, "min_diversity": 0.0, "min_translation_change": 0.0},
}


@pytest.mark.slow
def test_stages_train_a_translator_and_synthesize_records_provenance(tmp_path):
    from conftest import prepared_project

    from ganaug.cli import main as cli_main
    from ganaug.data.packed import load_packed
    from ganaug.data.synthetic import MANIFEST_FILE, SYNTHETIC_FILE
    from ganaug.tracking import pyfunc_generator

    with prepared_project(tmp_path, TINY_STAGES) as root:
        assert cli_main(["train-gan"]) == 0
        assert cli_main(["synthesize"]) == 0
        meta = json.loads((root / "data/prepared/meta.json").read_text())
        counts = meta["counts"]["train"]["per_class"]
        source = max(counts, key=counts.get)
        target = min(counts, key=counts.get)
        generator = TrainedGenerator.load(root / "models/gan/generator.pt")
        assert generator.translator and generator.class_names[generator.info["source_class"]] == source
        quality = json.loads((root / "models/gan/quality.json").read_text())
        assert {"translation_change", "translation_ssim_to_source", "label_fidelity", "fd_domain",
                "memorisation_pixel_copy_rate"} <= set(quality)
        manifest = json.loads((root / "data/synthetic" / MANIFEST_FILE).read_text())
        provenance = manifest["provenance"]
        assert (provenance["source_class"], provenance["target_class"]) == (source, target)
        train = load_packed(root / "data/prepared").train
        sources = np.array(provenance["source_train_index"])
        assert (train.labels[sources] == meta["class_names"].index(source)).all()
        synthetic = np.load(root / "data/synthetic" / SYNTHETIC_FILE)
        assert len(sources) == len(synthetic["images"]) == max(counts.values())
        np.testing.assert_array_equal(synthetic["images"], cyclegan.translate(generator.network, train.images[sources]))
        assert manifest["translation"]["translation_change"] > 0
        # the registered model is the translator: images in, images out
        model = mlflow.pyfunc.load_model(f"models:/{pyfunc_generator.REGISTERED_NAME}@challenger")
        np.testing.assert_array_equal(model.predict(train.images[sources[:3]]), synthetic["images"][:3])
