"""The quality gate: the decision on a generator's final evaluation, synthesize refusing a
collapsed generator before writing anything, the recorded override, and evaluate's line."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest
from ruamel.yaml import YAML

from ganaug.cli import main as cli_main
from ganaug.config import GANConfig, Params, arm_names, load_params, to_dict
from ganaug.data.packed import read_meta
from ganaug.gan.generator import TrainedGenerator
from ganaug.gan.train import build_generator
from ganaug.quality.gate import gate_decision, gate_summary, relative_label_fidelity

from conftest import REPO, prepared_project

LEVELS = {"label_fidelity_relative": 0.5, "coverage_domain": 0.1, "diversity": 0.5}
GOOD = {"label_fidelity_relative": 0.97, "coverage_domain": 0.6, "diversity": 0.9, "fd_domain": 20.0}
# the fresh-clone DCGAN: one image repeated
COLLAPSED = {"label_fidelity_relative": 0.0, "coverage_domain": 0.01, "diversity": 0.05, "recall_domain": 0.0}


@pytest.mark.parametrize(("final", "levels", "failures"), [
    (GOOD, LEVELS, []),
    (COLLAPSED, LEVELS, ["label_fidelity_relative 0.000 < synthesize.min_label_fidelity=0.5",
                         "coverage_domain 0.010 < synthesize.min_coverage=0.1",
                         "diversity 0.050 < synthesize.min_diversity=0.5"]),
    ({**GOOD, "diversity": 0.3}, LEVELS, ["diversity 0.300 < synthesize.min_diversity=0.5"]),
    ({**GOOD, "label_fidelity_relative": float("nan")}, LEVELS, ["label_fidelity_relative nan < synthesize.min_label_fidelity=0.5"]),
    ({"label_fidelity_relative": 0.9}, LEVELS, ["coverage_domain was not measured (synthesize.min_coverage=0.1)",
                                       "diversity was not measured (synthesize.min_diversity=0.5)"]),
    ({}, {"label_fidelity_relative": 0.0, "coverage_domain": 0.0, "diversity": 0.0}, []),  # every level 0: unchecked
    (COLLAPSED, {"label_fidelity_relative": 0.0, "coverage_domain": 0.0, "diversity": 0.01}, []),
])
def test_gate_decision(final, levels, failures):
    decision = gate_decision(final, levels)
    assert decision.failures == failures
    assert decision.passed == (not failures)


def test_relative_label_fidelity_divides_by_the_oracle_on_real_images_in_the_same_class_mix():
    assert relative_label_fidelity(0.25, {0: 0.5}, {0: 500}) == pytest.approx(0.5)
    assert relative_label_fidelity(0.6, {0: 0.5, 1: 1.0}, {0: 100, 1: 300}) == pytest.approx(0.6 / 0.875)
    assert np.isnan(relative_label_fidelity(0.0, {0: 0.0}, {0: 10}))


def test_gate_summary_says_passed_overridden_or_not_recorded():
    passed = gate_decision(GOOD, LEVELS).record(overridden=False)
    assert gate_summary(passed) == "quality gate: passed (label_fidelity_relative 0.970, coverage_domain 0.600, diversity 0.900)"
    overridden = gate_summary(gate_decision(COLLAPSED, LEVELS).record(overridden=True))
    assert overridden.startswith("quality gate overridden (synthesize.override_gate=true): label_fidelity_relative 0.000 <")
    assert "not recorded" in gate_summary(None)


def test_params_yaml_gan_and_synthesize_sections_are_the_dataclass_defaults():
    params = load_params(REPO / "params.yaml")
    assert to_dict(params.gan) == to_dict(Params().gan)
    assert to_dict(params.synthesize) == to_dict(Params().synthesize)


TINY = {"data": {"image_size": 32, "phantom": {"n_images": 80}}, "reference": {"epochs": 1},
        "evaluate": {"n_bootstrap": 100}}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A prepared tiny phantom and its reference classifier (the real stages), in a folder of its own."""
    with prepared_project(tmp_path_factory.mktemp("gate"), {**TINY, "synthesize": {}}) as root:
        return root


def write_params(path: Path, synthesize: dict) -> None:
    with open(path, "w") as f:
        YAML().dump({**TINY, "synthesize": synthesize}, f)


def write_generator(root: Path, final_quality: dict | None) -> None:
    """models/gan/generator.pt: an untrained tiny DCGAN of the minority class with the given final evaluation."""
    meta = read_meta(root / "data/prepared")
    minority = int(np.argmin([meta["counts"]["train"]["per_class"][n] for n in meta["class_names"]]))
    cfg = dataclasses.replace(GANConfig(), latent_dim=8, base_channels=4)
    info = {"dataset_hash": meta["dataset_hash"], **({"final_quality": final_quality} if final_quality is not None else {})}
    generator = TrainedGenerator(build_generator(cfg, 32, 0).eval(), to_dict(cfg), meta["class_names"], [minority], False, info)
    (root / "models/gan").mkdir(parents=True, exist_ok=True)
    generator.save(root / "models/gan/generator.pt")


@pytest.mark.parametrize(("final", "fragments"), [
    (COLLAPSED, ["coverage_domain 0.010 < synthesize.min_coverage=0.1", "diversity 0.050 < synthesize.min_diversity=0.25",
                 "models/gan/generator.pt", "synthesize.override_gate=true"]),
    (None, ["coverage_domain was not measured (synthesize.min_coverage=0.1)", "synthesize.override_gate=true"]),
])
def test_synthesize_refuses_a_generator_below_the_gate_and_writes_nothing(project, monkeypatch, capsys, final, fragments):
    monkeypatch.chdir(project)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project / 'mlflow.db'}")
    write_params(project / "params.yaml", {})
    write_generator(project, final)
    assert cli_main(["synthesize"]) == 1
    err = capsys.readouterr().err
    for fragment in fragments:
        assert fragment in err
    assert not (project / "data/synthetic").exists()
    assert not [p for p in (project / "data").iterdir() if p.name.startswith(".synthetic.tmp-")]


def test_overridden_gate_is_recorded_in_the_manifest_and_shown_by_evaluate(project, monkeypatch, capsys):
    monkeypatch.chdir(project)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project / 'mlflow.db'}")
    write_params(project / "params.yaml", {"override_gate": True})
    write_generator(project, COLLAPSED)
    assert cli_main(["synthesize"]) == 0
    assert "WARNING: quality gate overridden" in capsys.readouterr().out
    gate = json.loads((project / "data/synthetic/manifest.json").read_text())["quality_gate"]
    assert gate["overridden"] and not gate["passed"]
    assert gate["values"]["coverage_domain"] == 0.01 and "coverage_domain 0.010 < synthesize.min_coverage=0.1" in gate["failures"]

    with np.load(project / "data/prepared/dataset.npz") as npz:  # every arm's test predictions, made up: evaluate only compares
        test_labels = npz["test_labels"]
    rng = np.random.default_rng(0)
    for arm in arm_names(load_params(project / "params.yaml").arms):
        out = project / "models/arms" / arm
        out.mkdir(parents=True, exist_ok=True)
        proba = rng.dirichlet([1, 1], size=(2, len(test_labels)))
        np.savez(out / "test_predictions.npz", labels=test_labels, seed0=proba[0], seed1=proba[1])
    assert cli_main(["evaluate"]) == 0
    assert "quality gate overridden (synthesize.override_gate=true): coverage_domain 0.010" in capsys.readouterr().out
    assert json.loads((project / "metrics/evaluation.json").read_text())["quality_gate"] == {"overridden": 1.0}
    evaluation = json.loads((project / "reports/evaluation.json").read_text())
    assert evaluation["quality_gate"]["overridden"] and evaluation["quality_gate"]["summary"].startswith("quality gate overridden")


def test_a_generator_that_passes_is_recorded_as_passed(project, monkeypatch):
    monkeypatch.chdir(project)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project / 'mlflow.db'}")
    write_params(project / "params.yaml", {})
    write_generator(project, GOOD)
    assert cli_main(["synthesize"]) == 0
    gate = json.loads((project / "data/synthetic/manifest.json").read_text())["quality_gate"]
    assert gate["passed"] and not gate["overridden"] and gate["failures"] == []
