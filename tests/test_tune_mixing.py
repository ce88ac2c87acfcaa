"""The mixing study (`ganaug tune mixing|show mixing|apply mixing`, `ganaug.tune.mixing`): the
real code on a tiny phantom project with an untrained tiny generator. The search reads train
and val only (asserted), scores the mean over seeds on validation, logs nested MLflow runs; the
chosen trial is evaluated once on the test split against real-only with compare_arms; a
trial's synthetic images are the synthesize stage's; a bad space fails at load naming the key."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import mlflow
import numpy as np
import optuna
import pytest
from optuna.trial import TrialState
from ruamel.yaml import YAML

from conftest import REPO, prepared_project
from ganaug import cli
from ganaug.config import ConfigError, SynthesizeConfig, params_from_dict, to_dict
from ganaug.stats.compare import VERDICTS
from ganaug.tune import storage as tune_storage
from ganaug.config import EvaluateConfig
from ganaug.tune.mixing import FINAL_ATTR, SyntheticPool, final_references, final_verdict
from ganaug.tune.study import PARENT_RUN_ATTR

pytestmark = pytest.mark.slow

TINY = {
    "data": {"image_size": 32, "phantom": {"n_images": 200}},
    "reference": {"epochs": 2},
    "classifier": {"epochs": 2, "batch_size": 32, "seeds": [0]},
    "gan": {"latent_dim": 16, "base_channels": 4},
    "evaluate": {"n_bootstrap": 200},
    "synthesize": {"override_gate": True},  # the fixture's generator is untrained: no final evaluation to pass the gate
    "tune": {"mixing_space": {"synthetic_ratio": {"choices": [0.25, 0.5]},
                              "filter": {"choices": ["none", "reference_confidence"]},
                              "filter_threshold": {"low": 0.0, "high": 1.0},
                              "lr": {"low": 1.0e-3, "high": 3.0e-3, "log": True}},
             "mixing_seeds": [0, 1], "n_trials": 3, "startup_trials": 3, "heartbeat_s": 1},
}


def read_keys(monkeypatch) -> list[str]:
    """Records every array name read from an .npz file (the packed data set's splits)."""
    read: list[str] = []
    original = np.lib.npyio.NpzFile.__getitem__

    def recording(self, key):
        read.append(key)
        return original(self, key)

    monkeypatch.setattr(np.lib.npyio.NpzFile, "__getitem__", recording)
    return read


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A tiny project with prepare and train_reference outputs and an (untrained) minority-class
    generator of its data at models/gan/generator.pt."""
    from ganaug.config import GANConfig
    from ganaug.data.packed import read_meta
    from ganaug.gan.generator import TrainedGenerator
    from ganaug.gan.train import build_generator

    with prepared_project(tmp_path_factory.mktemp("mixing"), TINY) as root:
        meta = read_meta(root / "data/prepared")
        counts = [meta["counts"]["train"]["per_class"][name] for name in meta["class_names"]]
        cfg = GANConfig(latent_dim=16, base_channels=4)
        network = build_generator(cfg, 32, 0, 1).eval()
        (root / "models/gan").mkdir(parents=True)
        TrainedGenerator(network, to_dict(cfg), meta["class_names"], [int(np.argmin(counts))], False,
                         {"dataset_hash": meta["dataset_hash"]}).save(root / "models/gan/generator.pt")
        yield root


# ---------------------------------------------------------------------------------------
# bad input: each fails at load or before any trial, naming what is wrong


@pytest.mark.parametrize(("tune", "fragment"), [
    ({"mixing_space": {"synthetic_ratios": {"low": 0.1, "high": 1.0}}},
     "tune.mixing_space.synthetic_ratios: unknown mixing key 'synthetic_ratios'; did you mean 'synthetic_ratio'?"),
    ({"mixing_space": {"synthetic_ratio": {"choices": []}}}, "tune.mixing_space.synthetic_ratio.choices=[]: empty"),
    ({"mixing_space": {"synthetic_ratio": {"choices": [0.0, 1.0]}}},
     "tune.mixing_space.synthetic_ratio.choices[0]=0.0: expected in (0, 10] (the range of arms.ratios)"),
    ({"mixing_space": {"lr": {"low": 1e-2, "high": 1e-3}}}, "tune.mixing_space.lr: low=0.01 >= high=0.001"),
    ({"mixing_space": {"weight_decay": {"low": 0.0, "high": 0.1, "log": True}}},
     "tune.mixing_space.weight_decay: log=true with low=0.0"),
    ({"mixing_space": {"filter": {"choices": ["none", "blur"]}}}, "tune.mixing_space.filter.choices[1]='blur'"),
    ({"mixing_space": {"filter": {"low": 0, "high": 1}}}, "tune.mixing_space.filter: synthesize.filter is one of"),
    ({"mixing_space": {"filter": {"choices": ["none"]}, "filter_threshold": {"low": 0.1, "high": 0.5}}},
     "tune.mixing_space.filter_threshold searches a threshold, but the only filter is 'none'"),
    ({"mixing_space": {"filter_threshold": {"low": 0.1, "high": 1.5}}},
     "tune.mixing_space.filter_threshold.high=1.5: expected in [-1, 1]"),
    ({"mixing_seeds": []}, "tune.mixing_seeds=[]: expected a non-empty list of distinct seeds"),
    ({"mixing_objective": "roc_auc"}, "tune.mixing_objective='roc_auc': expected one of"),
])
def test_a_bad_mixing_space_is_refused_at_load_naming_the_key(tune, fragment):
    with pytest.raises(ConfigError) as excinfo:
        params_from_dict({"tune": tune})
    assert fragment in str(excinfo.value)


def test_missing_inputs_and_zero_workers_fail_before_any_trial(tmp_path, monkeypatch, capsys):
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    (tmp_path / "params.yaml").write_text("")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["tune", "mixing", "--trials", "1"]) == 1
    err = capsys.readouterr().err
    assert "a mixing study needs the prepared data and a generator" in err
    assert "data/prepared" in err and "models/gan/generator.pt" in err and "models/reference/model.pt" in err
    assert cli.main(["tune", "mixing", "--workers", "0"]) == 1
    assert "--workers 0: expected at least 1 worker process" in capsys.readouterr().err
    assert cli.main(["tune", "show", "mixing", "--storage", f"journal:{tmp_path / 'none.log'}"]) == 1
    assert "no study 'mixing'" in capsys.readouterr().err
    assert not (tmp_path / "optuna.db").exists()


def test_a_generator_below_the_quality_gate_is_refused_before_any_trial(project, capsys):
    """synthesize's gate holds here too: without synthesize.override_gate the untrained generator
    (no final evaluation) never reaches a training set."""
    strict = {**TINY, "synthesize": {"override_gate": False}}
    with open(project / "strict.yaml", "w") as f:
        YAML().dump(strict, f)
    storage = f"journal:{project / 'strict.log'}"
    assert cli.main(["tune", "mixing", "--params", "strict.yaml", "--study", "strict", "--storage", storage]) == 1
    assert "quality gate: generator" in capsys.readouterr().err
    assert optuna.get_all_study_summaries(tune_storage.open_storage(storage, 1, 1)) == []


# ---------------------------------------------------------------------------------------
# a trial's synthetic images are the synthesize stage's


def test_a_trials_synthetic_images_are_what_synthesize_writes(project):
    """Unfiltered: the per-class prefixes of synthesize's pool; filtered: synthesize's kept images
    (the same stream, scorer and threshold), whichever order trials ask in."""
    import torch

    from ganaug.data.packed import load_packed
    from ganaug.gan.generator import TrainedGenerator
    from ganaug.quality.filters import reference_confidence_scorer
    from ganaug.stages.synthesize import synthesize, synthesize_filtered
    from ganaug.stages.train_reference import load_reference

    generator = TrainedGenerator.load(project / "models/gan/generator.pt")
    train = load_packed(project / "data/prepared", splits=("train",)).train
    counts = np.bincount(train.labels, minlength=2).tolist()
    reference = load_reference(project / "models/reference", torch.device("cpu"))[0]
    scorer = reference_confidence_scorer(reference, torch.device("cpu"))
    pool = SyntheticPool(generator, seed=1234, batch_size=256, max_draws=5.0,
                         scorers={"reference_confidence": lambda: scorer})
    (c,) = generator.trained_classes
    small, large = int(round(0.25 * max(counts))), int(round(0.5 * max(counts)))
    images, labels, _ = pool.take({c: small}, "none", 0.0)
    expected, expected_labels, _ = synthesize(generator, counts, SynthesizeConfig(pool_ratio=0.5))
    assert np.array_equal(images, expected[:small]) and np.array_equal(labels, expected_labels[:small])
    images, _, _ = pool.take({c: large}, "none", 0.0)
    assert np.array_equal(images, expected)
    threshold = float(np.median(scorer(expected, c)))  # about half of the candidates pass
    images, labels, acceptance = pool.take({c: small}, "reference_confidence", threshold)
    draw = synthesize_filtered(generator, counts, SynthesizeConfig(pool_ratio=0.25, filter="reference_confidence",
                                                                   filter_threshold=threshold), scorer)
    assert np.array_equal(images, draw.images) and np.array_equal(labels, draw.labels)
    assert 0 < acceptance[c] < 1


def test_the_final_verdict_is_not_helped_when_a_control_matches_the_gain():
    """The chosen mix beat real-only but not balanced (a gain class balance alone gives, as in the
    brief's collapsed default run): the final verdict says so instead of "helped"."""
    def row(reference, verdict, metric="balanced_accuracy"):
        return {"arm": "mixing", "reference": reference, "metric": metric, "verdict": verdict}
    result = {"metrics": ["balanced_accuracy"], "comparisons": [
        {"arm": "balanced", "reference": "real", "metric": "balanced_accuracy", "verdict": "helped"},
        row("real", "helped"), row("balanced", "no clear difference"), row("classic", "hurt")]}
    assert final_verdict(result, result["comparisons"][1]) == "helped (not against balanced, classic)"  # mixing - real
    result["comparisons"][2:] = [row("balanced", "helped"), row("classic", "helped")]
    assert final_verdict(result, result["comparisons"][1]) == "helped"  # mixing - real
    result["comparisons"][1:] = [row("real", "no clear difference"), row("balanced", "hurt")]
    assert final_verdict(result, result["comparisons"][1]) == "no clear difference"  # mixing - real
    assert final_references(EvaluateConfig(references=["real", "balanced", "classic"])) == ["real", "balanced", "classic"]
    assert final_references(EvaluateConfig(references=["real", "synthetic-0.5"])) == ["real"]  # controls only


# ---------------------------------------------------------------------------------------
# the study, its MLflow runs and the one final test evaluation


def test_study_scores_on_validation_only_then_evaluates_the_choice_once_on_test(project, monkeypatch, capsys):
    read = read_keys(monkeypatch)
    storage = f"journal:{project / 'mixing.log'}"
    study = optuna.create_study(study_name="mix", storage=tune_storage.open_storage(storage, 1, 1), direction="maximize")
    study.enqueue_trial({"synthetic_ratio": 0.25, "filter": "none", "lr": 2e-3})
    study.enqueue_trial({"synthetic_ratio": 0.5, "filter": "reference_confidence", "filter_threshold": 1.0, "lr": 2e-3})
    study.enqueue_trial({"synthetic_ratio": 0.5, "filter": "none", "lr": 1e-3})
    assert cli.main(["tune", "mixing", "--study", "mix", "--storage", storage]) == 0
    assert read and not [k for k in read if k.startswith("test_")], f"the search read the test split: {read}"
    assert {k.split("_")[0] for k in read} == {"train", "val"}

    study = optuna.load_study(study_name="mix", storage=tune_storage.open_storage(storage, 1, 1))
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    first, strict, third = study.trials
    assert first.state == TrialState.COMPLETE and first.params == {"synthetic_ratio": 0.25, "filter": "none", "lr": 2e-3}
    # p(class) >= 1.0 is (almost) never reached: the filter runs out of draws and the trial is pruned, named
    assert strict.state == TrialState.PRUNED and "filter_threshold=1.0" in strict.user_attrs["stopped"]
    assert third.state == TrialState.COMPLETE  # tune.startup_trials=3: the median pruner does not prune yet
    parent = study.user_attrs[PARENT_RUN_ATTR]
    client = mlflow.MlflowClient()
    real_counts = list(json.loads((project / "data/prepared/meta.json").read_text())["counts"]["train"]["per_class"].values())
    for trial in (t for t in study.trials if t.state == TrialState.COMPLETE):
        assert sorted(trial.intermediate_values) == [0, 1]  # one report per seed of tune.mixing_seeds
        run = client.get_run(trial.user_attrs["mlflow_run_id"])
        assert run.data.tags["mlflow.parentRunId"] == parent and run.data.tags["optuna.state"] == "complete"
        per_seed = [m.value for m in client.get_metric_history(run.info.run_id, "val_balanced_accuracy")]
        assert len(per_seed) == 2 and trial.value == pytest.approx(np.mean(per_seed))  # the mean over seeds
        assert run.data.metrics["objective"] == pytest.approx(trial.value)
        assert float(run.data.params["classifier.lr"]) == pytest.approx(trial.params["lr"])
        synthetic = sum(int(v) for k, v in run.data.params.items() if k.startswith("n_train_synthetic_"))
        assert synthetic == int(round(trial.params["synthetic_ratio"] * max(real_counts)))
        assert int(run.data.params["n_train_images"]) == sum(real_counts) + synthetic  # real train + synthetic
    parent_run = client.get_run(parent)
    assert "synthetic_ratio" in parent_run.data.params["tune.mixing_space"]
    assert parent_run.data.metrics["best_value"] == pytest.approx(study.best_value)
    assert {"trials.csv", "summary.json"} <= {a.path for a in client.list_artifacts(parent)}

    capsys.readouterr()
    assert cli.main(["tune", "show", "mixing", "--study", "mix", "--storage", storage]) == 0
    shown = capsys.readouterr().out
    assert "(higher is better)" in shown and f"trial {study.best_trial.number}:" in shown
    assert "no final test evaluation yet" in shown

    # the final evaluation: the best trial, real-only and the balanced control, same seeds, on the test split, once
    read.clear()
    assert cli.main(["tune", "apply", "mixing", "--study", "mix", "--storage", storage]) == 0
    out = capsys.readouterr().out
    assert {k.split("_")[0] for k in read} == {"train", "val", "test"}
    study = optuna.load_study(study_name="mix", storage=tune_storage.open_storage(storage, 1, 1))
    final = study.user_attrs[FINAL_ATTR]
    best = study.best_trial
    assert final["trial"] == best.number and final["metric"] == "balanced_accuracy" and final["seeds"] == [0, 1]
    assert final["difference"] == pytest.approx(final["mixing_mean"] - final["real_mean"])
    assert final["corrected_low"] <= final["difference"] <= final["corrected_high"]
    assert final["verdict"].split(" (not against")[0] in VERDICTS and final["validation_value"] == pytest.approx(best.value)
    assert list(final["controls"]) == ["balanced"]  # evaluate.references' real-only controls beside real
    assert final["controls"]["balanced"]["verdict"] in VERDICTS
    assert final["controls"]["balanced"]["difference"] == pytest.approx(final["mixing_mean"] - final["controls"]["balanced"]["mean"])
    assert {final["collapsed_seeds_arm"], final["collapsed_seeds_reference"]} <= {0, 1, 2}
    ratio = best.params["synthetic_ratio"]
    assert sum(final["train_counts"]["synthetic"].values()) == int(round(ratio * max(final["train_counts"]["real"].values())))
    run = client.get_run(final["mlflow_run_id"])
    assert run.data.tags["mlflow.parentRunId"] == parent and run.data.tags["final.verdict"] == final["verdict"]
    comparison = json.loads(Path(mlflow.artifacts.download_artifacts(run_id=run.info.run_id,
                                                                     artifact_path="comparison.json")).read_text())
    assert comparison["arms"]["real"]["seeds"] == comparison["arms"]["mixing"]["seeds"] == ["seed0", "seed1"]
    assert comparison["arms"]["balanced"]["seeds"] == ["seed0", "seed1"] and comparison["references"] == ["real", "balanced"]
    assert client.get_run(parent).data.tags["final.verdict"] == final["verdict"]
    assert f"test balanced_accuracy: mixing {final['mixing_mean']:.4f} vs real-only {final['real_mean']:.4f}" in out
    assert f"against balanced (real-only control, {final['controls']['balanced']['mean']:.4f})" in out
    command = out.strip().splitlines()[-1]
    assert command.startswith(f"dvc exp run --name mix-trial-{best.number} -S 'arms.ratios=[{ratio!r}]'")
    assert f"-S synthesize.filter={best.params['filter']}" in command and "-S classifier.lr=" in command

    # asked again: the stored result, without reading the test split; another trial: refused
    read.clear()
    assert cli.main(["tune", "apply", "mixing", "--study", "mix", "--storage", storage]) == 0
    assert not [k for k in read if k.startswith("test_")]
    other = first.number if best.number == third.number else third.number
    assert cli.main(["tune", "apply", "mixing", "--study", "mix", "--storage", storage, "--trial", str(other)]) == 1
    assert f"already used the test split once, for trial {best.number}" in capsys.readouterr().err


def test_two_journal_workers_share_a_mixing_study_and_retry_a_killed_workers_trial(project):
    """`--workers 2`; the first worker to train a seed SIGKILLs itself: that trial is failed and
    run again (same params) by the other worker, and the budget is met."""
    import subprocess
    import sys

    storage = f"journal:{project / 'workers.log'}"
    done = subprocess.run(
        [sys.executable, "-m", "ganaug.cli", "tune", "mixing", "--study", "workers", "--storage", storage,
         "--trials", "2", "--workers", "2"],
        cwd=project, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPO / "src"), "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}",
             "GANAUG_TEST_KILL_AT": "tune_seed:*", "GANAUG_TEST_KILL_ONCE": str(project / "killed-workers")})
    killed = re.findall(r"tune: worker \d+ was killed by signal 9", done.stdout)
    assert done.returncode == 1 and len(killed) == 1, done.stdout[-3000:] + done.stderr[-3000:]
    study = optuna.load_study(study_name="workers", storage=tune_storage.open_storage(storage, 1, 1))
    trials = study.get_trials()
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    failed = [t for t in trials if t.state == TrialState.FAIL]
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(failed) == 1 and len(finished) == 2, [t.state for t in trials]
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == failed[0].number]
    assert len(retry) == 1 and retry[0].params == failed[0].params and retry[0] in finished
