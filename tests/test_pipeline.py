"""The whole pipeline through DVC on tiny settings: `dvc repro` produces every output and an
MLflow run per training step; a second repro reruns nothing; `dvc exp run -S gan.lr_g=…`
reruns from train_gan on, and only the arms that use synthetic images; adding a ratio runs only
the new arm; the registered generator samples; the notebook executes."""

from __future__ import annotations

import json

import mlflow
import nbformat
import numpy as np
import pandas as pd
import pytest
from nbclient import NotebookClient
from ruamel.yaml import YAML

from conftest import REPO, dvc_project

pytestmark = pytest.mark.slow

TINY = {
    "data": {"image_size": 32, "phantom": {"n_images": 200}},
    "reference": {"epochs": 2},
    # a 2-epoch GAN makes noise: no diversity stop, and the quality gate overridden (so its record is tested)
    "gan": {"epochs": 2, "eval_every": 1, "n_eval": 40, "batch_size": 16, "base_channels": 8, "min_diversity": 0.0},
    "synthesize": {"override_gate": True},
    "classifier": {"epochs": 2, "seeds": [0, 1]},
    "arms": {"real": ["real", "balanced"], "mixed": ["synthetic"], "ratios": [1.0]},
    "evaluate": {"n_bootstrap": 100},
}
STAGES = ["prepare", "train_reference", "real_features", "train_gan", "synthesize", "arm_real@real",
          "arm_real@balanced", "arm_mixed@synthetic-1.0", "arm_mixed@synthetic-0.5", "evaluate", "report"]


def merge(base: dict, override: dict) -> dict:
    for key, value in override.items():
        if isinstance(value, dict):
            merge(base[key], value)
        else:
            base[key] = value
    return base


def ran_stages(output: str) -> set[str]:
    return {s for s in STAGES if f"Running stage '{s}'" in output}


def repro_stages() -> set[str]:
    return set(STAGES) - {"arm_mixed@synthetic-0.5"}  # added by test_adding_a_ratio_runs_only_the_new_arm


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A fresh git + DVC project holding this repository's pipeline with tiny params."""
    root = tmp_path_factory.mktemp("project")
    params = YAML().load((REPO / "params.yaml").read_text())
    sh, env = dvc_project(root, merge(params, TINY))
    first = sh("dvc", "repro")
    return root, sh, env, first


def test_repro_runs_every_stage_and_writes_outputs(project):
    root, _, _, first = project
    assert ran_stages(first) == repro_stages()
    for path in ("data/prepared/dataset.npz", "data/prepared/meta.json", "models/reference/model.pt",
                 "models/gan/generator.pt", "models/gan/loss_curves.png", "data/synthetic/synthetic.npz",
                 "plots/gan_losses.csv", "plots/ratio_curve.csv", "plots/recall_per_class.csv", "plots/roc/real.csv",
                 "plots/roc/synthetic-1.0.csv", "reports/comparison.md", "reports/comparison.json", "reports/index.html"):
        assert (root / path).is_file(), path
    manifest = json.loads((root / "data/synthetic/manifest.json").read_text())
    largest = max(manifest["real_train_counts"].values())  # the pool: pool_ratio (1.0) x the largest class
    assert manifest["counts"] == manifest["pool"]["per_class"] == {"normal": largest}
    for arm in ("real", "balanced", "synthetic-1.0"):
        record = json.loads((root / "models/arms" / arm / "metrics.json").read_text())
        assert record["arm"] == arm and set(record["seeds"]) == {"0", "1"}, arm
        assert (root / "models/arms" / arm / "test_predictions.npz").is_file() and (root / "models/arms" / arm / "seed1.pt").is_file()
    assert {name: n for name, n in record["train_counts"]["synthetic"].items() if n} == {"normal": largest}
    evaluation = json.loads((root / "reports/evaluation.json").read_text())  # the full record
    assert set(evaluation["arms"]) == {"real", "balanced", "synthetic-1.0"}
    assert manifest["quality_gate"]["overridden"] == (not manifest["quality_gate"]["passed"])
    assert evaluation["quality_gate"]["summary"].startswith("quality gate")
    assert {(c["arm"], c["reference"]) for c in evaluation["comparisons"]} == {
        ("balanced", "real"), ("synthetic-1.0", "real"), ("synthetic-1.0", "balanced")}
    for c in evaluation["comparisons"]:
        if c["difference"] is not None:
            assert c["corrected_low"] <= c["low"] <= c["difference"] <= c["high"] <= c["corrected_high"], c
    summary = json.loads((root / "metrics/evaluation.json").read_text())  # DVC's: each arm - real, narrow
    assert set(summary) == {"real_balanced_accuracy", "balanced_accuracy_vs_real", "collapsed_seeds", "quality_gate"}
    assert summary["quality_gate"] == {"overridden": float(manifest["quality_gate"]["overridden"])}
    vs_real = next(c for c in evaluation["comparisons"]
                   if (c["arm"], c["reference"], c["metric"]) == ("synthetic-1.0", "real", "balanced_accuracy"))
    assert summary["balanced_accuracy_vs_real"]["synthetic-1_0"]["diff"] == vs_real["difference"]
    assert len(json.loads((root / "metrics/gan.json").read_text())) <= 10
    gan_metrics = json.loads((root / "models/gan/quality.json").read_text())
    assert np.isfinite(gan_metrics["fd_domain"]) and 0 < gan_metrics["ssim_real_fake"] <= 1
    for name in ("kd_domain", "recall_domain", "coverage_domain", "ms_ssim_real_fake", "label_fidelity"):
        assert np.isfinite(gan_metrics[name]), name
    assert gan_metrics["precision_domain_ci_low"] <= gan_metrics["precision_domain"] <= gan_metrics["precision_domain_ci_high"]
    assert 0 <= gan_metrics["memorisation_pixel_copy_rate"] <= 1  # the trained GAN's rate is reported
    assert 0 <= manifest["memorisation"]["memorisation_domain_copy_rate"] <= 1
    assert (root / "data/synthetic/memorisation_closest_pairs.png").is_file()


def test_every_training_step_is_an_mlflow_run_with_lineage(project):
    root, *_ = project
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["ganaug"])
    stages = runs["tags.ganaug.stage"].value_counts().to_dict()
    assert stages["train_reference"] >= 1 and stages["train_gan"] >= 1 and stages["evaluate"] >= 1 and stages["synthesize"] >= 1
    assert stages["train_classifier_real"] >= 3 and stages["train_classifier_synthetic-1.0"] >= 3  # one per arm + one per seed
    mixed = runs[(runs["tags.arm"] == "synthetic-1.0") & (runs["tags.ganaug.run_level"] == "arm")].iloc[0]
    assert (mixed["tags.family"], mixed["tags.ratio"], mixed["tags.dvc.stage"]) == ("synthetic", "1.0", "arm_mixed@synthetic-1.0")
    assert runs["tags.mlflow.runName"].is_unique
    seeds = runs[runs["tags.ganaug.run_level"] == "seed"]
    parents = runs[runs["tags.ganaug.run_level"] == "arm"]
    assert set(seeds["tags.mlflow.parentRunId"]) <= set(parents["run_id"])
    assert mlflow.get_experiment_by_name("ganaug").tags["mlflow.experimentKind"] == "custom_model_development"
    gan = runs[runs["tags.ganaug.stage"] == "train_gan"].iloc[-1]
    assert len(gan["tags.git.commit"]) == 40
    meta = json.loads((root / "data/prepared/meta.json").read_text())
    assert gan["tags.data.dataset_hash"] == meta["dataset_hash"]
    assert gan["params.gan.lr_g"] == "0.0002"
    client = mlflow.MlflowClient()
    losses = client.get_metric_history(gan["run_id"], "loss_d")
    assert len(losses) == int(gan["metrics.steps"]) if "metrics.steps" in gan else len(losses) > 1
    artifacts = {a.path for a in client.list_artifacts(gan["run_id"])}
    assert {"loss_curves.png", "memorisation_closest_pairs.png"} <= artifacts
    # evaluate put the best synthetic arm's result on the generator's version (promote's downstream gate)
    version = client.search_model_versions(f"name = 'ganaug-generator' and run_id = '{gan['run_id']}'")[0]
    assert version.tags["downstream.arm"] == "synthetic-1.0" and version.tags["downstream.metric"] == "balanced_accuracy"
    assert float(version.tags["downstream.corrected_ci_low"]) <= float(version.tags["downstream.difference"])
    mlflow.set_tracking_uri(None)


def test_second_repro_reruns_nothing(project):
    _, sh, _, _ = project
    again = sh("dvc", "repro")
    assert ran_stages(again) == set()
    # resolve_generator runs every time (an alias can move outside DVC's view); with the same resolution nothing follows
    assert "Running stage 'resolve_generator'" in again
    status = sh("dvc", "status")
    assert "resolve_generator:" in status and "always changed" in status
    assert not [s for s in STAGES if f"{s}:" in status], status  # every other stage is up to date


def test_exp_run_on_a_gan_param_reruns_from_train_gan(project):
    root, sh, _, _ = project
    sh("git", "add", "-A")
    sh("git", "commit", "-qm", "baseline results")
    out = sh("dvc", "exp", "run", "-S", "gan.lr_g=0.0001")
    assert ran_stages(out) == {"train_gan", "synthesize", "arm_mixed@synthetic-1.0", "evaluate", "report"}  # not the real-only arms
    shown = json.loads(sh("dvc", "exp", "show", "--json").split("\n", 1)[-1] if False else sh("dvc", "exp", "show", "--json"))
    assert len(json.dumps(shown)) > 0
    assert "evaluation.json" in sh("dvc", "metrics", "show")
    sh("dvc", "plots", "show", "-o", str(root / "dvc_plots"))
    assert (root / "dvc_plots" / "index.html").is_file()


def test_exp_run_with_a_filter_reruns_from_synthesize_and_audits_both_sets(project):
    root, sh, _, _ = project
    out = sh("dvc", "exp", "run", "-S", "synthesize.filter=ssim_likeness", "-S", "synthesize.filter_threshold=0.0",
             "-S", "synthesize.max_draws=50")
    assert ran_stages(out) == {"synthesize", "arm_mixed@synthetic-1.0", "evaluate", "report"}
    manifest = json.loads((root / "data/synthetic/manifest.json").read_text())
    normal = manifest["filter"]["per_class"]["normal"]
    assert manifest["filter"]["name"] == "ssim_likeness" and normal["kept"] == manifest["counts"]["normal"]
    assert normal["drawn"] >= normal["kept"] and normal["score_kept"]["p10"] >= 0.0
    assert 0 <= manifest["unfiltered_candidates"]["unfiltered_memorisation_pixel_copy_rate"] <= 1
    assert -1 <= manifest["ssim_likeness"]["ssim_likeness_median"] <= 1


def test_adding_a_ratio_runs_only_the_new_arm(project):
    root, sh, _, _ = project
    out = sh("dvc", "exp", "run", "-S", "arms.ratios=[0.5,1.0]")
    assert ran_stages(out) == {"arm_mixed@synthetic-0.5", "evaluate", "report"}
    half = json.loads((root / "models/arms/synthetic-0.5/metrics.json").read_text())
    full = json.loads((root / "models/arms/synthetic-1.0/metrics.json").read_text())
    assert half["ratio"] == 0.5 and half["train_counts"]["synthetic"]["normal"] == round(full["train_counts"]["synthetic"]["normal"] / 2)


def test_registered_generator_samples_each_requested_class(project):
    root, *_ = project
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model("models:/ganaug-generator/1")
    images = model.predict(pd.DataFrame({"class_label": [0], "count": [4]}), params={"seed": 3})
    assert images.shape == (4, 1, 32, 32) and images.dtype == np.uint8
    with pytest.raises(Exception, match="cannot produce classes"):
        model.predict(pd.DataFrame({"class_label": [1], "count": [1]}))  # minority GAN: normal only
    mlflow.set_tracking_uri(None)


def test_notebook_executes_against_the_runs(project, monkeypatch):
    root, _, env, _ = project
    monkeypatch.setenv("MLFLOW_TRACKING_URI", env["MLFLOW_TRACKING_URI"])
    notebook = nbformat.read(REPO / "notebooks" / "compare_runs.ipynb", as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(root)}}).execute()
    outputs = "".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", "")) for c in notebook.cells for o in c.get("outputs", []))
    assert "balanced" in outputs and "synthetic-1.0" in outputs
    assert "steps;" in outputs and "fd_domain" in outputs
