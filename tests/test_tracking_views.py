"""What makes the MLflow and DVC views readable: metric keys from any class name, the experiment
kind, unique run names, data sets as run inputs, intervals as tables, the DVC summaries,
progress lines in logs, and the offline plots page."""

from __future__ import annotations

import io
import re
from pathlib import Path

import medmnist
import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.utils.validation import _validate_metric_name, _validate_param_name

from conftest import REPO
from ganaug.classify.metrics import classification_metrics
from ganaug.progress import LogLines
from ganaug.stats.report import comparison_records
from ganaug.tracking import mlflow_utils, summaries
from ganaug.tracking.mlflow_utils import metric_key

FLAGS_2D = sorted(flag for flag in medmnist.INFO if not flag.endswith("3d"))


@pytest.mark.parametrize("flag", FLAGS_2D)
def test_every_medmnist_class_name_makes_a_valid_distinct_metric_key(flag):
    names = list(medmnist.INFO[flag]["label"].values())
    keys = [metric_key(name) for name in names]
    for key in keys:
        _validate_metric_name(f"recall_{key}")  # raises MlflowException on a bad key
        _validate_param_name(f"n_train_{key}")
        assert "/" not in key and "." not in key  # no accidental nesting in MLflow charts or DVC columns
    assert len(set(keys)) == len(keys), f"{flag}: two class names map to one key {keys}"


@pytest.mark.parametrize("name, key", [
    ("normal, benign", "normal_benign"),
    ("immature granulocytes(myelocytes, metamyelocytes)", "immature_granulocytes_myelocytes_metamyelocytes"),
    ("Collecting Duct, Connecting Tubule", "Collecting_Duct_Connecting_Tubule"),
    ("femur-left", "femur-left"),
    ("épanchement/pleural", "epanchement_pleural"),
])
def test_metric_key_examples(name, key):
    assert metric_key(name) == key


def test_metric_key_refuses_a_name_without_letters():
    with pytest.raises(ValueError, match="'\\(\\)'"):
        metric_key("()")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One SQLite tracking store for the module (creating one costs seconds)."""
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mlflow.set_tracking_uri(uri)
        yield uri
    mlflow.set_tracking_uri(None)


def test_class_names_with_commas_reach_mlflow(store, monkeypatch):
    """The breastmnist crash: per-class classifier metrics logged as MLflow metrics."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    mlflow_utils.setup("views-commas")
    names = list(medmnist.INFO["breastmnist"]["label"].values())
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    metrics = classification_metrics(np.array([0, 1, 1]), proba, names)
    with mlflow.start_run() as run:
        mlflow.log_metrics({k: v for k, v in metrics.items() if isinstance(v, float)})
    logged = mlflow.get_run(run.info.run_id).data.metrics
    assert logged["recall_normal_benign"] == 0.5


def test_setup_marks_new_and_existing_experiments_as_model_training(store, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    client = mlflow.MlflowClient()
    new_id = mlflow_utils.setup("views-new")
    artifacts = (Path(store.removeprefix("sqlite:///")).parent / "mlartifacts-old").as_uri()  # beside the store
    old_id = client.create_experiment("views-old", artifact_location=artifacts)  # made before the tag existed
    assert mlflow_utils.EXPERIMENT_KIND_TAG not in client.get_experiment(old_id).tags
    assert mlflow_utils.setup("views-old") == old_id
    for exp_id in (new_id, old_id):
        tags = client.get_experiment(exp_id).tags
        assert tags[mlflow_utils.EXPERIMENT_KIND_TAG] == mlflow_utils.MODEL_TRAINING_KIND == "custom_model_development"


def test_run_names_are_short_and_unique(store, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    mlflow_utils.setup("views-names")
    baseline = mlflow_utils.unique_run_name("train_gan-dcgan", {"gan": {"lr_g": 2e-4}, "data": "abc"})
    experiment = mlflow_utils.unique_run_name("train_gan-dcgan", {"gan": {"lr_g": 1e-4}, "data": "abc"})
    assert re.fullmatch(r"train_gan-dcgan-[0-9a-f]{6}", baseline) and baseline != experiment
    with mlflow.start_run(run_name=baseline):
        pass
    again = mlflow_utils.unique_run_name("train_gan-dcgan", {"gan": {"lr_g": 2e-4}, "data": "abc"})
    assert again == f"{baseline}-2"  # a forced rerun of the same inputs


def test_split_is_logged_as_a_run_input_with_its_content_hash(store, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    mlflow_utils.setup("views-inputs")
    meta = {"source": {"name": "phantom"}, "content_hash": {"train": "0123456789abcdef" * 4}}
    with mlflow.start_run() as run:
        mlflow_utils.log_split(meta, "train", np.zeros((5, 1, 8, 8), np.uint8), np.arange(5), "training")
    (logged,) = mlflow.get_run(run.info.run_id).inputs.dataset_inputs
    assert logged.dataset.name == "phantom-train" and logged.dataset.digest == "0123456789abcdef"
    assert "data/prepared" in logged.dataset.source
    assert {t.key: t.value for t in logged.tags}["mlflow.data.context"] == "training"


def test_interval_bounds_become_table_rows_not_metrics():
    values, rows = mlflow_utils.split_intervals(
        {"fd_domain": 3.0, "fd_domain_ci_low": 2.0, "fd_domain_ci_high": 4.0, "label_fidelity": 0.9,
         "recall_domain_normal_benign": 0.5, "recall_domain_ci_low_normal_benign": 0.4, "recall_domain_ci_high_normal_benign": 0.6})
    assert values == {"fd_domain": 3.0, "label_fidelity": 0.9, "recall_domain_normal_benign": 0.5}
    assert rows == [{"metric": "fd_domain", "value": 3.0, "ci_low": 2.0, "ci_high": 4.0},
                    {"metric": "recall_domain_normal_benign", "value": 0.5, "ci_low": 0.4, "ci_high": 0.6}]


FULL_GAN_RECORD = {
    "fd_domain": 12.0, "fd_domain_ci_low": 10.0, "fd_domain_ci_high": 14.0, "kd_domain": 0.1, "precision_domain": 0.5,
    "recall_domain": 0.4, "coverage_domain": 0.3, "density_domain": 0.7, "label_fidelity": 0.9,
    "label_fidelity_normal": 0.9, "memorisation_pixel_copy_rate": 0.0, "memorisation_domain_copy_rate": 0.01,
    "memorisation_pixel_threshold": 3.0, "ssim_real_fake": 0.2, "steps": 100, "train_images_per_second": 50.0,
}


def test_dvc_summaries_keep_the_compared_numbers_only():
    gan = summaries.gan_summary(FULL_GAN_RECORD)
    assert set(gan) == {"fd_domain", "kd_domain", "precision_domain", "recall_domain", "coverage_domain",
                        "label_fidelity", "memorisation_pixel_copy_rate", "memorisation_domain_copy_rate"}
    assert "diversity" in summaries.gan_summary(FULL_GAN_RECORD | {"diversity": 0.8})
    seeds = {"0": {"balanced_accuracy": 0.7, "accuracy": 0.8, "roc_auc": 0.9, "recall_normal": 0.5},
             "1": {"balanced_accuracy": 0.9, "accuracy": 0.8, "roc_auc": 0.9, "recall_normal": 0.7}}
    classifier = summaries.classifier_summary(seeds)
    assert set(classifier) == {"balanced_accuracy", "accuracy", "roc_auc"}
    assert classifier["balanced_accuracy"] == pytest.approx({"mean": 0.8, "std": np.std([0.7, 0.9], ddof=1)})
    assert summaries.evaluation_summary(evaluation_result()) == {
        "real_balanced_accuracy": 0.7, "collapsed_seeds": 1,
        "balanced_accuracy_vs_real": {"synthetic-1_0": {"diff": 0.1, "corrected_low": pytest.approx(0.01), "corrected_high": 0.19}}}


def evaluation_result() -> dict:
    """The shape of ganaug.stats.compare.compare_arms' result, two arms and two metrics."""
    def arm(ba, recall, collapsed):
        return {"n_seeds": 2, "collapsed_seeds": collapsed,
                "metrics": {"balanced_accuracy": {"mean": ba, "low": ba - 0.1, "high": ba + 0.1},
                            "recall_normal": {"mean": recall, "low": recall - 0.2, "high": recall + 0.2}}}

    def comparison(metric, diff, low, high):
        return {"arm": "synthetic-1.0", "reference": "real", "metric": metric, "difference": diff, "low": low, "high": high,
                "corrected_low": low - 0.04, "corrected_high": high + 0.04, "verdict": "no clear difference"}

    return {"ci_level": 0.95, "metrics": ["balanced_accuracy", "recall_normal"],
            "arms": {"real": arm(0.7, 0.5, ["seed1"]), "synthetic-1.0": arm(0.8, 0.7, [])},
            "comparisons": [comparison("balanced_accuracy", 0.1, 0.05, 0.15), comparison("recall_normal", 0.2, -0.1, 0.4)]}


def test_comparison_table_holds_both_arms_and_the_interval():
    table = comparison_records(evaluation_result())
    assert list(table["metric"]) == ["balanced_accuracy", "recall_normal"]
    row = table.iloc[0]
    assert (row["arm"], row["reference"], row["arm_mean"], row["reference_mean"], row["difference"], row["low"]) == (
        "synthetic-1.0", "real", 0.8, 0.7, 0.1, 0.05)


def test_progress_in_a_log_is_whole_lines_with_the_current_losses():
    log = io.StringIO()  # not a terminal
    bar = LogLines(range(3), desc="GAN", unit="epoch", file=log, mininterval=0, miniters=1)
    for epoch in bar:
        bar.set_postfix(loss_d=f"{0.5 + epoch:.3f}", refresh=False)
    bar.close()
    text = log.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert len(lines) == 4 and lines[-1].startswith("GAN") and "3/3" in lines[-1] and "loss_d=2.500" in lines[-1]


def test_offline_plots_template_bundles_vega_and_renders_without_a_network(tmp_path):
    from dvc_render import VegaRenderer
    from dvc_render.html import render_html

    template = REPO / ".dvc" / "plots" / "offline.html"
    text = template.read_text(encoding="utf8")
    assert text.count("{plot_divs}") == 1 and "{scripts}" not in text
    assert re.search(r"""<script[^>]*\ssrc=""", text) is None
    for library in ("vega 5.", "vega-lite 5.", "vega-embed 6."):
        assert f"/* {library}" in text, library
    assert "BSD-3-Clause" in text
    assert "html_template = plots/offline.html" in (REPO / ".dvc" / "config").read_text()
    points = [{"step": i, "loss": 1.0 / (i + 1), "rev": "workspace", "filename": "l.csv", "field": "loss"} for i in range(5)]
    renderer = VegaRenderer(points, "losses", x="step", y="loss")
    page = tmp_path / "index.html"
    render_html([renderer], page, html_template=template)
    html = page.read_text(encoding="utf8")
    assert "cdn.jsdelivr" not in html and re.search(r"""<script[^>]*\ssrc=""", html) is None
    assert "vegaEmbed(" in html and '"loss"' in html
