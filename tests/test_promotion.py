"""Promotion through named gates in a real MLflow registry (SQLite store in a temporary folder).

Each version is a registered version of a real logged pyfunc generator (a tiny untrained
DCGAN, logged once by `pyfunc_generator.log_generator`: training or logging one per version
would add minutes and change nothing the gates read), carded by the code train_gan runs
(`registry.model_card`, `registry.register_generator`). Its metrics come from the quality suite train_gan runs on its last
evaluation (`feature_metrics` with half-sample intervals, the memorisation audit), measured on
image sets that stand for three generators of one phantom class:

    copier  training images with a little noise: an excellent FD, copy rate ~1
    fresh   new draws from the same phantom distribution: a good FD, copy rate ~0.01
    blurry  new draws, dimmed and noisy: a clearly worse FD, no copies

The feature extractor is 7 x 7 average pooling of the pixels (49-D), named like a reference
network so the compatibility gate can compare it.
"""

from __future__ import annotations

import dataclasses

import mlflow
import numpy as np
import pytest

from ganaug.cli import main as cli
from ganaug.config import GANConfig, PromoteConfig, flatten
from ganaug.data.phantom import render_phantom
from ganaug.gan.generator import TrainedGenerator
from ganaug.gan.train import build_networks
from ganaug.quality.suite import FeatureSet, feature_metrics, memorisation
from ganaug.tracking import mlflow_utils, pyfunc_generator, registry

EXTRACTOR = "pool7@test"
DATA_HASH = "d" * 64
RULES = PromoteConfig()
NAME = pyfunc_generator.REGISTERED_NAME


def phantoms(n: int, seed: int) -> np.ndarray:
    """(n, 1, 28, 28) uint8 phantom radiographs without findings."""
    rng = np.random.default_rng(seed)
    return np.stack([render_phantom(28, "normal", False, False, rng)[None] for _ in range(n)])


def pooled(images: np.ndarray) -> np.ndarray:
    """(N, 49) features: mean of each 4 x 4 block in [0, 1]."""
    x = images.astype(np.float32) / 255
    return x.reshape(len(x), 1, 7, 4, 7, 4).mean(axis=(3, 5)).reshape(len(x), -1)


def final_metrics(fake: np.ndarray, train: np.ndarray) -> dict[str, float]:
    """What train_gan's last evaluation records: domain metrics with intervals + the audit."""
    out = feature_metrics(FeatureSet("domain", EXTRACTOR, pooled(train), pooled(fake)), with_ci=True, seed=0)
    audit, _ = memorisation(fake, train, pooled(fake), pooled(train), EXTRACTOR)
    return out | audit


@pytest.fixture(scope="module")
def generators() -> dict[str, dict[str, float]]:
    train = phantoms(150, seed=0)
    rng = np.random.default_rng(5)
    noise = rng.normal(0, 2, (120, 1, 28, 28))  # ~2 grey levels: a copy with noise on top
    copier = np.clip(train[rng.integers(0, len(train), 120)] + noise, 0, 255).astype(np.uint8)
    blurry = np.clip(phantoms(120, seed=2) * 0.8 + rng.normal(0, 20, (120, 1, 28, 28)), 0, 255).astype(np.uint8)
    return {"copier": final_metrics(copier, train), "fresh": final_metrics(phantoms(120, seed=1), train),
            "blurry": final_metrics(blurry, train)}


@pytest.fixture(scope="module")
def logged_generator(tmp_path_factory):
    """A fresh SQLite store and one logged pyfunc generator (a tiny untrained DCGAN) that every
    version is registered from."""
    root = tmp_path_factory.mktemp("registry")
    cfg = dataclasses.replace(GANConfig(), latent_dim=8, base_channels=4, device="cpu")
    network, _ = build_networks(cfg, 28, 0)
    TrainedGenerator(network.eval(), dataclasses.asdict(cfg), ["normal"], [0], False, {}).save(root / "generator.pt")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        mlflow_utils.setup()
        with mlflow.start_run():
            info = pyfunc_generator.log_generator(root / "generator.pt", 1, 28, 0, register=False)
        yield info.model_uri, cfg, info.run_id
    mlflow.set_tracking_uri(None)


@pytest.fixture
def store(logged_generator, monkeypatch):
    """The module's store with no registered generator (each test starts from version 1)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow.get_tracking_uri())
    yield logged_generator
    mlflow.MlflowClient().delete_registered_model(NAME)


def register(store, final: dict[str, float], dataset_hash: str = DATA_HASH) -> str:
    """Register a version of the logged generator with its model card, as train_gan does; returns its number."""
    model_uri, cfg, _ = store
    meta = {"dataset_hash": dataset_hash, "source": {"name": "phantom"}}
    budget = {"epochs": 1, "steps": 10, "images_seen": 320, "train_seconds": 1.5}
    card = registry.model_card(final, flatten(cfg, "gan"), meta, ["normal"], EXTRACTOR, 28, budget, {"device": "cpu"})
    return registry.register_generator(model_uri, *card)


def alias(name: str) -> str | None:
    try:
        return str(mlflow.MlflowClient().get_model_version_by_alias(NAME, name).version)
    except mlflow.exceptions.MlflowException:
        return None


def tags(version: str) -> dict[str, str]:
    return mlflow.MlflowClient().get_model_version(NAME, version).tags


def gate(decision: registry.Decision, name: str) -> registry.Gate:
    return next(g for g in decision.gates if g.name == name)


def test_the_image_sets_behave_as_their_names_say(generators):
    copier, fresh, blurry = generators["copier"], generators["fresh"], generators["blurry"]
    assert copier["memorisation_pixel_copy_rate"] > 0.9 and copier["memorisation_domain_copy_rate"] > 0.9
    assert fresh["memorisation_pixel_copy_rate"] <= 0.05 and fresh["memorisation_domain_copy_rate"] <= 0.05
    assert copier["fd_domain"] < fresh["fd_domain_ci_high"] < blurry["fd_domain_ci_low"]  # the copier's FD is excellent


def test_train_gan_card_gives_challenger_and_the_model_card(store, generators):
    version = register(store, generators["fresh"])
    assert alias("challenger") == version and alias("champion") is None
    card = mlflow.MlflowClient().get_model_version(NAME, version)
    assert card.run_id == store[2]  # train_gan finds a version its killed run registered by this
    assert card.tags["data.dataset_hash"] == DATA_HASH and card.tags["classes"] == "normal"
    assert card.tags["feature_extractor"] == EXTRACTOR and card.tags["gan.arch"] == "dcgan"
    assert card.tags["budget.images_seen"] == "320" and card.tags["device.device"] == "cpu"
    for key in ("fd_domain", "fd_domain_ci_low", "fd_domain_ci_high", "memorisation_pixel_copy_rate"):
        assert float(card.tags[f"metric.{key}"]) == pytest.approx(generators["fresh"][key], rel=1e-5)
    assert "fd_domain" in card.description and "copy rate" in card.description and "not for diagnosis" in card.description


def test_a_version_registered_before_a_kill_gets_its_card_on_the_rerun(store, generators):
    version = str(mlflow.register_model(store[0], NAME).version)  # registered, then killed before the card
    assert "data.dataset_hash" not in tags(version)
    card = registry.model_card(generators["fresh"], flatten(store[1], "gan"), {"dataset_hash": DATA_HASH, "source": {}},
                               ["normal"], EXTRACTOR, 28, {}, {"device": "cpu"})
    registry.register_card(version, *card)
    assert tags(version)["data.dataset_hash"] == DATA_HASH and alias("challenger") == version


def test_copier_is_refused_by_memorisation_a_better_generator_is_promoted_and_rollback_restores(store, generators, capsys):
    v1 = register(store, generators["blurry"])
    first = registry.promote(RULES)
    assert first.outcome == "promoted" and alias("champion") == v1 and alias("challenger") is None

    v2 = register(store, generators["copier"])
    assert cli(["promote"]) == 3
    out = capsys.readouterr().out
    assert f"v{v2} against champion v{v1}" in out
    assert "[   FAIL] memorisation: pixel copy rate 1 > 0.05 (promote.max_copy_rate_pixel)" in out
    assert "domain copy rate 1 > 0.05 (promote.max_copy_rate_domain)" in out
    assert "[   PASS] quality: fd_domain" in out  # its FD is far better: only the memorisation gate stops it
    assert f"NOT PROMOTED: blocked by memorisation; @champion stays at v{v1}" in out
    assert alias("champion") == v1 and alias("challenger") == v2
    recorded = tags(v2)
    assert recorded["promotion.last"].endswith(": failed") and recorded["promotion.gate.memorisation"].startswith("fail: pixel")

    v3 = register(store, generators["fresh"])
    decision = registry.promote(RULES)
    assert decision.outcome == "promoted", decision.report()
    assert "the intervals do not overlap" in gate(decision, "quality").detail
    assert gate(decision, "downstream").status == "skipped"
    assert alias("champion") == v3 and alias("previous-champion") == v1
    assert tags(v3)[registry.REPLACED_TAG] == v1

    assert cli(["promote", "--rollback"]) == 0
    assert f"v{v1} is @champion again" in capsys.readouterr().out
    assert alias("champion") == v1 and alias("previous-champion") is None  # v1 replaced no champion
    assert "returned to v" + v1 in tags(v3)["promotion.rolled_back"]
    assert cli(["promote", "--rollback"]) == 1  # nothing left to roll back to
    assert "no @previous-champion" in capsys.readouterr().err


def test_a_worse_or_not_clearly_better_generator_fails_the_quality_gate(store, generators):
    register(store, generators["fresh"])
    registry.promote(RULES)
    register(store, generators["blurry"])
    decision = registry.promote(RULES)
    assert decision.outcome == "failed" and gate(decision, "quality").status == "fail"
    assert "not lower by the margin 0.05" in gate(decision, "quality").detail
    register(store, generators["copier"])  # FD lower in value, but within the champion's interval
    decision = registry.promote(dataclasses.replace(RULES, max_copy_rate_pixel=1.0, max_copy_rate_domain=1.0))
    assert gate(decision, "quality").status == "fail" and "the intervals overlap" in gate(decision, "quality").detail


def test_force_moves_champion_loudly_and_is_recorded(store, generators, capsys):
    v1 = register(store, generators["blurry"])
    registry.promote(RULES)
    v2 = register(store, generators["copier"])
    assert cli(["promote", "--force"]) == 0
    captured = capsys.readouterr()
    assert f"WARNING: --force: {NAME} v{v2} is @champion although memorisation did not pass" in captured.err
    assert "result: FORCED" in captured.out
    assert alias("champion") == v2 and alias("previous-champion") == v1
    assert "forced to @champion with --force; did not pass: memorisation" in tags(v2)["promotion.forced"]
    assert '"forced": true' in tags(v2)["promotion.1"]


def test_a_version_of_another_data_set_is_refused_not_failed(store, generators, capsys):
    v1 = register(store, generators["blurry"])
    registry.promote(RULES)
    v2 = register(store, generators["fresh"], dataset_hash="e" * 64)
    assert cli(["promote"]) == 3
    out = capsys.readouterr().out
    assert "[REFUSED] compatibility: data set hash differs" in out and "[SKIPPED] quality: not compared" in out
    assert f"REFUSED (not comparable): blocked by compatibility; @champion stays at v{v1}" in out
    assert tags(v2)["promotion.last"].endswith(": refused") and alias("champion") == v1


def test_downstream_result_is_recorded_and_gates_harm(store, generators):
    register(store, generators["blurry"])
    registry.promote(RULES)
    v2 = register(store, generators["fresh"])
    harm = {"arm": "synthetic-1.0", "metric": "balanced_accuracy", "difference": -0.08, "corrected_ci_low": -0.12,
            "corrected_ci_high": -0.03, "verdict": "worse"}
    registry.record_downstream(v2, harm)
    card = mlflow.MlflowClient().get_model_version(NAME, v2)
    assert card.tags["downstream.arm"] == "synthetic-1.0" and float(card.tags["downstream.corrected_ci_high"]) == -0.03
    assert "Downstream: arm synthetic-1.0 vs real-only, balanced_accuracy difference -0.08" in card.description
    decision = registry.promote(RULES)
    assert decision.outcome == "failed" and decision.blocking == ["downstream"]
    assert "corrected interval [-0.12, -0.03]: harm" in gate(decision, "downstream").detail

    no_harm = harm | {"difference": 0.01, "corrected_ci_low": -0.02, "corrected_ci_high": 0.04, "verdict": "no clear difference"}
    registry.record_downstream(v2, no_harm)  # a newer evaluation replaces the record
    assert mlflow.MlflowClient().get_model_version(NAME, v2).description.count("Downstream:") == 1
    decision = registry.promote(RULES)
    assert decision.outcome == "promoted" and "no harm shown (the interval includes 0)" in gate(decision, "downstream").detail


def test_record_downstream_names_what_is_missing(store, generators):
    version = register(store, generators["fresh"])
    with pytest.raises(ValueError, match=r"lacks \['corrected_ci_low', 'corrected_ci_high'\]"):
        registry.record_downstream(version, {"arm": "a", "metric": "m", "difference": 0.1, "verdict": "x"})
    with pytest.raises(ValueError, match="outside its interval"):
        registry.record_downstream(version, {"arm": "a", "metric": "m", "difference": 0.5, "corrected_ci_low": 0.0,
                                             "corrected_ci_high": 0.2, "verdict": "x"})


@pytest.mark.parametrize("candidate, champion, expected", [
    ({"metric.fd_domain": "5"}, None, "the challenger has no fd_domain with an interval"),
    ({"metric.fd_domain": "5", "metric.fd_domain_ci_low": "4", "metric.fd_domain_ci_high": "6"}, {"metric.fd_domain": "9"},
     "the champion has no fd_domain with an interval"),
])
def test_quality_gate_needs_intervals(candidate, champion, expected):
    result = registry.quality_gate(candidate, champion, "fd_domain", 0.05)
    assert result.status == "fail" and expected in result.detail


def test_memorisation_gate_fails_an_unaudited_version():
    result = registry.memorisation_gate({"metric.memorisation_pixel_copy_rate": "0"}, 0.05, 0.05)
    assert result.status == "fail" and "not audited: no metric.memorisation_domain_copy_rate" in result.detail
