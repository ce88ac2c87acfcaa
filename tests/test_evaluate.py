"""The evaluate stage: reads every arm's folder (models/arms/<id>), compares the arms with the
references, and writes the full record, the Markdown/JSON tables, the narrow DVC summary, the
DVC plots and the MLflow run; the report helpers (ratio curve, recall per class, caveats)."""

from __future__ import annotations

import dataclasses
import json
import re

import mlflow
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from conftest import REPO
from ganaug.classify.metrics import classification_metrics
from ganaug.config import ArmsConfig, EvaluateConfig, Params
from ganaug.presets import not_beaten
from ganaug.quality.gate import gate_summary
from ganaug.report.build import answer
from ganaug.stages import evaluate
from ganaug.stats import report
from ganaug.stats.compare import compare_arms
from ganaug.stats.metrics import compared_metrics
from ganaug.tracking import summaries

CLASSES = ["normal", "pneumonia"]
ARMS = ArmsConfig(real=["real", "balanced"], mixed=["synthetic"], ratios=[0.5, 1.0], synthetic=[])
ARM_IDS = ["real", "balanced", "synthetic-0.5", "synthetic-1.0"]
SKILL = {"real": 0.70, "balanced": 0.72, "synthetic-0.5": 0.74, "synthetic-1.0": 0.93}  # share of test images right


def model(labels, accuracy, rng, difficulty=None):
    """Right on about `accuracy` of the images: those below it in `difficulty` (per image, shared
    by an arm's seeds so that they agree as trained models do), soft probabilities."""
    difficulty = rng.random(len(labels)) if difficulty is None else difficulty
    right = difficulty < accuracy
    return np.eye(2)[np.where(right, labels, 1 - labels)] * 0.6 + 0.2 + rng.normal(0, 0.02, (len(labels), 2)).clip(0)


def arm_seeds(labels, accuracy, rng, n_seeds=3):
    difficulty = rng.random(len(labels))
    return {f"seed{s}": model(labels, accuracy + rng.normal(0, 0.01), rng, difficulty) for s in range(n_seeds)}


def write_arm(root, arm, labels, seeds: dict[str, np.ndarray], family, ratio, synthetic=None):
    folder = root / "models/arms" / arm
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "test_predictions.npz", labels=labels, **seeds)
    (folder / "metrics.json").write_text(json.dumps({
        "arm": arm, "family": family, "ratio": ratio, "mlflow_run_id": f"run-{arm}",
        "train_counts": {"real": {"normal": 50, "pneumonia": 150}, "synthetic": synthetic or {}},
        "seeds": {k.removeprefix("seed"): {"mlflow_run_id": f"run-{arm}-{k}"} for k in seeds}}))


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project folder with data/prepared/meta.json and four arms' predictions (3 seeds each)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    (tmp_path / "data/prepared").mkdir(parents=True)
    (tmp_path / "data/prepared/meta.json").write_text(json.dumps({
        "class_names": CLASSES, "counts": {"train": {"per_class": {"normal": 50, "pneumonia": 150}}},
        "dataset_hash": "abc", "source": {"name": "phantom"}, "content_hash": {"test": "t"}}))
    labels = np.repeat([0, 1], [120, 180])
    rng = np.random.default_rng(0)
    for arm in ARM_IDS:
        ratio = float(arm.rpartition("-")[2]) if "-" in arm else None
        synthetic = {"normal": round(150 * ratio)} if ratio else None
        write_arm(tmp_path, arm, labels, arm_seeds(labels, SKILL[arm], rng),
                  "synthetic" if ratio else arm, ratio, synthetic)
    return tmp_path


def params(**evaluate_overrides) -> Params:
    return dataclasses.replace(Params(), arms=ARMS, evaluate=dataclasses.replace(EvaluateConfig(n_bootstrap=300), **evaluate_overrides))


def test_evaluate_writes_tables_summary_plots_and_the_mlflow_run(project):
    evaluate.main(params())
    result = json.loads((project / "reports/evaluation.json").read_text())
    assert list(result["arms"]) == ARM_IDS and result["references"] == ["real", "balanced"]
    big = next(c for c in result["comparisons"] if (c["arm"], c["reference"], c["metric"]) == ("synthetic-1.0", "real", "balanced_accuracy"))
    assert big["verdict"] == "helped" and big["corrected_low"] > 0
    assert result["mlflow_runs"]["synthetic-1.0"]["parent"] == "run-synthetic-1.0"
    assert result["families"]["synthetic-0.5"] == {"family": "synthetic", "ratio": 0.5}
    assert any("balanced arm" in c for c in result["caveats"])
    assert result["quality_gate"]["summary"].startswith("quality gate: not recorded")

    markdown = (project / "reports/comparison.md").read_text()
    assert "| synthetic-1.0 " in markdown and "## Against `real`" in markdown and "## Against `balanced`" in markdown
    assert "collapsed seeds" in markdown and "helped" in markdown
    table = pd.DataFrame(json.loads((project / "reports/comparison.json").read_text()))
    assert len(table) == 5 * 5  # (balanced, 2 mixed vs real) + (2 mixed vs balanced), 5 metrics each
    summary = json.loads((project / "metrics/evaluation.json").read_text())
    assert set(summary) == {"real_balanced_accuracy", "balanced_accuracy_vs_real", "collapsed_seeds"}
    assert set(summary["balanced_accuracy_vs_real"]) == {"balanced", "synthetic-0_5", "synthetic-1_0"}
    assert summary["balanced_accuracy_vs_real"]["synthetic-1_0"]["diff"] == pytest.approx(big["difference"])

    curve = pd.read_csv(project / "plots/ratio_curve.csv")
    ba = curve[curve["metric"] == "balanced_accuracy"]
    assert list(ba[ba["family"] == "synthetic"]["ratio"]) == [0.0, 0.5, 1.0]  # anchored at 0 by the real arm
    assert list(ba[ba["family"] == "synthetic"]["arm"]) == ["real", "synthetic-0.5", "synthetic-1.0"]
    assert list(ba[ba["family"] == "balanced"]["ratio"]) == [0.0]
    assert (ba["low"] <= ba["mean"]).all() and (ba["mean"] <= ba["high"]).all()
    recall = pd.read_csv(project / "plots/recall_per_class.csv")
    assert len(recall) == len(ARM_IDS) * 2 and set(recall["class"]) == set(CLASSES)
    assert sorted(p.name for p in (project / "plots/roc").iterdir()) == sorted(f"{a}.csv" for a in ARM_IDS)

    run = mlflow.search_runs(experiment_names=["ganaug"], filter_string="tags.`ganaug.stage` = 'evaluate'", output_format="list")[0]
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
    assert {"comparison.json", "comparison.md", "evaluation.json", "plots"} <= artifacts
    plots = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "plots")}
    assert {"plots/ratio_curve.png", "plots/ratio_curve.csv", "plots/recall_per_class.csv", "plots/roc"} <= plots
    assert run.data.tags["runs.synthetic-1.0"] == "run-synthetic-1.0"
    assert run.data.metrics["diff_real/synthetic-1_0/balanced_accuracy"] == pytest.approx(big["difference"])


def test_evaluate_refuses_arms_scored_on_different_test_labels(project):
    labels = np.repeat([0, 1], [121, 179])
    write_arm(project, "balanced", labels, {"seed0": model(labels, 0.7, np.random.default_rng(1))}, "balanced", None)
    with pytest.raises(ValueError, match="'balanced' was evaluated on other test labels"):
        evaluate.main(params())


def test_a_missing_arm_names_its_command(project):
    (project / "models/arms/synthetic-0.5/test_predictions.npz").unlink()
    with pytest.raises(FileNotFoundError, match="train-classifier --arm synthetic-0.5"):
        evaluate.main(params())


# ---------------------------------------------------------------------------------- helpers


def small_result(references=("real",)):
    rng = np.random.default_rng(3)
    labels = np.repeat([0, 1], [100, 100])
    arms = {arm: arm_seeds(labels, SKILL[arm], rng, n_seeds=2) for arm in ARM_IDS}
    return labels, arms, compare_arms(labels, arms, list(references), compared_metrics(0, CLASSES), n_bootstrap=150)


def test_ratio_curve_without_a_real_arm_has_no_anchor():
    _, _, result = small_result()
    families = {"real": ("real", None), "balanced": ("balanced", None), "synthetic-0.5": ("synthetic", 0.5)}
    result["arms"] = {k: v for k, v in result["arms"].items() if k in families}
    curve = report.ratio_curve(result, families)
    assert set(curve["family"]) == {"synthetic", "balanced"} and len(curve) == 3 * 5
    curve = report.ratio_curve(result, {"real": ("real", None), "balanced": ("balanced", None)})
    assert set(curve["family"]) == {"balanced"}  # no mixed family: real is no line's anchor


def test_recall_per_class_and_roc_of_the_seed_average():
    labels, arms, _ = small_result()
    recall = report.recall_per_class(labels, arms, CLASSES)
    seeds = arms["real"]
    expected = np.mean([np.mean(p.argmax(1)[labels == 1] == 1) for p in seeds.values()])
    assert recall[(recall["arm"] == "real") & (recall["class"] == "pneumonia")]["recall"].item() == pytest.approx(expected)
    roc = report.roc_points(labels, seeds)
    assert np.trapezoid(roc["tpr"], roc["fpr"]) == pytest.approx(roc_auc_score(labels, np.mean(list(seeds.values()), 0)[:, 1]))


def test_balance_caveat_only_without_a_balanced_reference():
    families = {"real": ("real", None), "synthetic-1.0": ("synthetic", 1.0)}
    records = {"real": {}, "synthetic-1.0": {"train_counts": {"synthetic": {"normal": 200}}}}
    real = {"normal": 100, "pneumonia": 300}
    notes = evaluate.caveats(families, ["real"], records, real)
    assert len(notes) == 1 and notes[0].startswith("synthetic-1.0: ") and "normal 25% -> 50%" in notes[0]
    assert "balanced arm" in evaluate.caveats(families, ["real", "balanced"], records, real)[0]
    assert report.balance_caveat({"normal": 100, "pneumonia": 100}, {"normal": 10, "pneumonia": 10}) is None


def test_summary_and_markdown_of_a_result():
    _, _, result = small_result(references=("real", "balanced"))
    summary = summaries.evaluation_summary(result | {"quality_gate": {"overridden": True}})
    assert set(summary["balanced_accuracy_vs_real"]) == {"balanced", "synthetic-0_5", "synthetic-1_0"}
    assert summary["quality_gate"] == {"overridden": 1.0} and summary["collapsed_seeds"] == 0
    markdown = report.comparison_markdown(result, notes=["a note"])
    assert markdown.count("| real ") == 1 and "- caveat: a note" in markdown
    assert "recall normal" in markdown  # the minority recall is a column of the arms table
    assert "gate overridden" not in markdown


def test_an_overridden_gate_heads_the_comparison_and_marks_the_synthetic_arms_verdicts():
    _, _, result = small_result(references=("real", "balanced"))
    result["families"] = {"real": {"family": "real", "ratio": None}, "balanced": {"family": "balanced", "ratio": None},
                          "synthetic-0.5": {"family": "synthetic", "ratio": 0.5},
                          "synthetic-1.0": {"family": "synthetic", "ratio": 1.0}}
    record = {"passed": False, "overridden": True, "failures": ["coverage_domain 0.022 < synthesize.min_coverage=0.1"]}
    result["quality_gate"] = {**record, "summary": gate_summary(record)}
    markdown = report.comparison_markdown(result)
    head = markdown.split("\n")[2]
    assert head.startswith("> **quality gate overridden (synthesize.override_gate=true): coverage_domain 0.022")
    table = report.differences_table(result, "real")
    marked = table["verdict"].str.endswith(" (gate overridden)")
    assert set(table[marked]["arm"]) == {"synthetic-0.5", "synthetic-1.0"} and set(table[~marked]["arm"]) == {"balanced"}
    passed = {"passed": True, "overridden": False, "failures": [], "values": {"coverage_domain": 0.4}}
    result["quality_gate"] = {**passed, "summary": gate_summary(passed)}
    assert "gate overridden" not in report.comparison_markdown(result)


def test_a_gain_a_control_also_gives_is_marked_in_the_verdict_the_caveats_and_the_headline():
    """classic_synthetic beat real but not classic (as on PneumoniaMNIST, README): its `helped`
    rows say `(not against classic)`, a caveat names it, and the report's headline does not say yes."""
    def row(arm, reference, verdict, metric="balanced_accuracy"):
        return {"arm": arm, "reference": reference, "metric": metric, "verdict": verdict}
    result = {"metrics": ["balanced_accuracy", "roc_auc"], "references": ["real", "classic"], "comparisons": [
        row("classic", "real", "helped"),
        row("classic_synthetic-0.5", "real", "helped"), row("classic_synthetic-0.5", "classic", "no clear difference"),
        row("synthetic-0.5", "real", "no clear difference"), row("synthetic-0.5", "classic", "hurt"),
        row("classic_synthetic-0.5", "real", "helped", "roc_auc"), row("classic_synthetic-0.5", "classic", "helped", "roc_auc")]}
    assert report.unconfirmed_gains(result) == {("classic_synthetic-0.5", "balanced_accuracy"): ["classic"]}
    assert report.unconfirmed_gain_caveats(result) == [
        "classic_synthetic-0.5 helped against real but not against classic in balanced accuracy: its gain is not shown "
        "to exceed what classic gives without synthetic images"]
    def full(r):
        return r | {"difference": 0.1, "low": 0.05, "high": 0.15, "corrected_low": 0.01, "corrected_high": 0.2, "corrected_level": 0.99}
    evaluation = result | {"ci_level": 0.95, "comparisons": [full(r) for r in result["comparisons"]],
                           "families": {"classic": {"family": "classic"}, "classic_synthetic-0.5": {"family": "classic_synthetic"},
                                        "synthetic-0.5": {"family": "synthetic"}}}
    headline, _ = answer(evaluation)
    assert headline.startswith("Not shown: arms with synthetic images beat a reference, but classic_synthetic-0.5 did not beat classic")
    assert "It hurt for synthetic-0.5 (vs classic)" in headline
    result["comparisons"][2]["verdict"] = "helped"  # beats classic too: a gain no control explains
    assert report.unconfirmed_gains(result) == {} and answer(evaluation | {"comparisons": [full(r) for r in result["comparisons"]]})[0].startswith(
        "Yes, for classic_synthetic-0.5 (vs classic), classic_synthetic-0.5 (vs real)")


def test_differences_table_marks_helped_rows_of_an_arm_a_control_exposes():
    _, _, result = small_result(references=("real", "balanced"))
    for r in result["comparisons"]:  # synthetic-1.0 beat real on every metric, balanced on none; balanced beat real
        r["verdict"] = ("helped" if r["reference"] == "real" and r["arm"] in ("synthetic-1.0", "balanced")
                        else "no clear difference")
    table = report.differences_table(result, "real")
    assert set(table[table["arm"] == "synthetic-1.0"]["verdict"]) == {"helped (not against balanced)"}
    assert not table[table["arm"] != "synthetic-1.0"]["verdict"].str.contains("not against").any()
    assert "synthetic-1.0 helped against real but not against balanced" in report.comparison_markdown(
        result | {"caveats": report.unconfirmed_gain_caveats(result)})
    summary = summaries.evaluation_summary(result)["balanced_accuracy_vs_real"]  # what dvc exp show and preset --table read
    assert summary["synthetic-1_0"]["references_not_beaten"] == 1.0
    assert "references_not_beaten" not in summary["balanced"] and "references_not_beaten" not in summary["synthetic-0_5"]
    assert not_beaten(summary["synthetic-1_0"]) == " (not against 1 other reference)" and not_beaten(summary["balanced"]) == ""


def test_classification_metrics_per_class_and_confusion():
    labels = np.array([0, 0, 1, 1, 1])
    proba = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.3, 0.7], [0.6, 0.4]])
    m = classification_metrics(labels, proba, CLASSES)
    assert m["accuracy"] == pytest.approx(0.6)
    assert m["recall_normal"] == pytest.approx(0.5) and m["recall_pneumonia"] == pytest.approx(2 / 3)
    assert m["confusion_matrix"] == [[1, 1], [1, 2]]
    assert m["roc_auc"] == pytest.approx(roc_auc_score(labels, proba[:, 1]))


@pytest.mark.parametrize(("template", "plot", "x", "y"), [("ratio_band", "ratio_curve", "ratio", "mean"),
                                                          ("recall_bars", "recall_per_class", "recall", "arm")])
def test_custom_plot_templates_read_the_columns_evaluate_writes(template, plot, x, y):
    """.dvc/plots/<template>.json (dvc.yaml's `template:`) names only columns of the CSV evaluate
    writes (plus DVC's `rev`), and dvc-render fills it with those rows."""
    from dvc_render import VegaRenderer

    labels, arms, result = small_result()
    families = {"real": ("real", None), "balanced": ("balanced", None), "synthetic-0.5": ("synthetic", 0.5),
                "synthetic-1.0": ("synthetic", 1.0)}
    frame = report.ratio_curve(result, families) if plot == "ratio_curve" else report.recall_per_class(labels, arms, CLASSES)
    rows = frame.astype(str).to_dict(orient="records")  # DVC reads CSV values as strings
    text = (REPO / ".dvc" / "plots" / f"{template}.json").read_text()
    assert set(re.findall(r'"field": "([^"]+)"', text)) - {"rev"} <= set(rows[0])
    points = [row | {"rev": "workspace", "filename": f"plots/{plot}.csv", "field": y} for row in rows]
    spec = VegaRenderer(points, plot, template=template, template_dir=str(REPO / ".dvc" / "plots"), x=x, y=y).get_filled_template()
    assert spec["data"]["values"] == points and "<DVC_METRIC" not in json.dumps(spec)


def test_downstream_summary_takes_the_best_synthetic_arm_against_real():
    def row(arm, reference, metric, difference):
        return {"arm": arm, "reference": reference, "metric": metric, "difference": difference,
                "corrected_low": difference - 0.1, "corrected_high": difference + 0.1, "verdict": "no clear difference"}

    result = {"comparisons": [row("balanced", "real", "balanced_accuracy", 0.30),  # not a synthetic arm
                              row("synthetic-0.5", "real", "balanced_accuracy", 0.02),
                              row("synthetic-1.0", "real", "balanced_accuracy", 0.05),
                              row("synthetic-1.0", "balanced", "balanced_accuracy", 0.40),  # another reference
                              row("synthetic-0.5", "real", "accuracy", 0.50)]}  # another metric
    summary = report.downstream_summary(result, ["synthetic-0.5", "synthetic-1.0"])
    assert summary == {"arm": "synthetic-1.0", "metric": "balanced_accuracy", "difference": 0.05,
                       "corrected_ci_low": 0.05 - 0.1, "corrected_ci_high": 0.05 + 0.1, "verdict": "no clear difference"}
    assert report.downstream_summary(result, []) is None
