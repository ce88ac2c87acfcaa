"""Stage `evaluate`: every arm (ganaug.config.arm_names) on the untouched real test split,
compared with each reference arm (evaluate.references) by ganaug.stats.compare.compare_arms.

Reads models/arms/<id>/test_predictions.npz and metrics.json (written by train_classifier).
Writes reports/evaluation.json (the full record), reports/comparison.md and .json (the tables),
metrics/evaluation.json (its small summary, tracking.summaries), the DVC plots
plots/ratio_curve.csv, plots/recall_per_class.csv and plots/roc/<arm>.csv, and the same table
and plots to the MLflow evaluate run."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd

from ganaug.config import Params, arm_names, flatten
from ganaug.data.packed import read_meta
from ganaug.experiments.arms import ARM_METRICS_FILE, PREDICTIONS_FILE, parse_arm
from ganaug.experiments.folds import seed_of
from ganaug.io import atomic_dir, atomic_file, write_json
from ganaug.quality.gate import gate_summary
from ganaug.stages import paths
from ganaug.stats import report
from ganaug.stats.compare import compare_arms
from ganaug.stats.metrics import compared_metrics, multilabel_compared_metrics
from ganaug.tracking import mlflow_utils, registry, runs, summaries
from ganaug.tracking.mlflow_utils import metric_key


def load_arm(arm_id: str) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, Any]]:
    """(test labels (N,), {seed key: proba (N, K)}, metrics.json record) of one arm's folder."""
    folder = paths.arm_dir(arm_id)
    predictions = folder / PREDICTIONS_FILE
    if not predictions.is_file():
        raise FileNotFoundError(f"{str(predictions)!r} not found: run the arm's stage first "
                                f"(bin/ganaug train-classifier --arm {arm_id}, or dvc repro)")
    with np.load(predictions) as npz:
        labels, seeds = npz["labels"], {k: npz[k] for k in npz.files if k != "labels"}
    record_path = folder / ARM_METRICS_FILE
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    return labels, seeds, record


def load_arms(arm_ids: list[str]) -> tuple[np.ndarray, dict[str, dict[str, np.ndarray]], dict[str, dict[str, Any]]]:
    """Every arm's predictions, checked to be on the same test labels."""
    labels, arms, records = None, {}, {}
    for arm in arm_ids:
        arm_labels, arms[arm], records[arm] = load_arm(arm)
        if labels is not None and not np.array_equal(labels, arm_labels):
            raise ValueError(f"arm {arm!r} was evaluated on other test labels than {arm_ids[0]!r} "
                             f"({str(paths.arm_dir(arm) / PREDICTIONS_FILE)!r}): rerun its stage on the current data")
        labels = arm_labels
    assert labels is not None, "no arms"
    return labels, arms, records


def caveats(families: dict[str, tuple[str, float | None]], references: list[str],
            records: dict[str, dict[str, Any]], real_counts: dict[str, int]) -> list[str]:
    """The balance caveat: with a `balanced` reference, the comparison separates balance from the
    GAN; without one, warn for each mixed arm whose synthetic images shift the class shares."""
    if "balanced" in references:
        return ["the balanced arm (real images, classes balanced by arms.balance) is a reference: an arm that beats "
                "real but not balanced may owe its gain to class balance rather than to the synthetic images"]
    notes = []
    for arm, (_, ratio) in families.items():
        synthetic = (records[arm].get("train_counts") or {}).get("synthetic") or {}
        note = report.balance_caveat(real_counts, synthetic) if ratio is not None and synthetic else None
        if note:
            notes.append(f"{arm}: {note}")
    return notes


def main(params: Params) -> None:
    cfg = params.evaluate
    meta = read_meta(paths.PREPARED)
    class_names = meta["class_names"]
    train_counts = [meta["counts"]["train"]["per_class"][n] for n in class_names]
    multilabel = meta.get("label_kind", "class_index") == "multi_hot"  # compared by macro AUROC over the findings
    arm_ids = arm_names(params.arms)
    parsed = {arm: parse_arm(arm, params.arms) for arm in arm_ids}
    families = {arm: (a.family, a.ratio) for arm, a in parsed.items()}  # ratio None off the mixing axis
    labels, arms, records = load_arms(arm_ids)
    metrics = (multilabel_compared_metrics(labels) if multilabel
               else compared_metrics(int(np.argmin(train_counts)), class_names))
    result = compare_arms(labels, arms, cfg.references, metrics, n_bootstrap=cfg.n_bootstrap, ci=cfg.ci, seed=cfg.seed,
                          seed_of=seed_of)  # k-fold: a seed's folds averaged into one replicate (experiments.folds)
    manifest_path = paths.SYNTHETIC / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    if multilabel:
        result["per_finding"] = report.per_finding(labels, arms, class_names)
    else:
        result["caveats"] += caveats(families, list(cfg.references), records, dict(zip(class_names, train_counts)))
    result["caveats"] += report.unconfirmed_gain_caveats(result)
    result["families"] = {arm: {"family": f, "ratio": r} for arm, (f, r) in families.items()}
    result["train_counts"] = {arm: records[arm].get("train_counts") for arm in arm_ids}
    result["mlflow_runs"] = {arm: {"parent": records[arm].get("mlflow_run_id"),
                                   "seeds": {s: r.get("mlflow_run_id") for s, r in records[arm].get("seeds", {}).items()}}
                             for arm in arm_ids}
    result["quality_gate"] = manifest.get("quality_gate") or {"recorded": False}
    result["quality_gate"]["summary"] = gate_summary(manifest.get("quality_gate"))

    markdown = report.comparison_markdown(result)
    records_table = report.comparison_records(result)
    print(markdown)
    print(result["quality_gate"]["summary"])
    write_json(paths.REPORTS / "evaluation.json", result)
    with atomic_file(paths.REPORTS / "comparison.md") as tmp:
        tmp.write_text(markdown)
    write_json(paths.REPORTS / "comparison.json", records_table.to_dict(orient="records"))
    write_json(paths.METRICS / "evaluation.json", summaries.evaluation_summary(result))
    curve = report.ratio_curve(result, families)
    recall = report.recall_per_class(labels, arms, class_names)
    write_plots(curve, recall, {arm: report.roc_points(labels, seeds) for arm, seeds in arms.items()})

    mlflow_utils.setup()
    digests = {arm: hashlib.sha256((paths.arm_dir(arm) / PREDICTIONS_FILE).read_bytes()).hexdigest() for arm in arm_ids}
    key = runs.input_key(evaluate=flatten(cfg, "evaluate"), data=meta["dataset_hash"], predictions=digests)
    compared = {f"runs.{arm}": str(r["parent"]) for arm, r in result["mlflow_runs"].items()}
    name = mlflow_utils.unique_run_name("evaluate", {"evaluate": flatten(cfg), "runs": result["mlflow_runs"]})
    with runs.start_run("evaluate", key, run_name=name, tags=mlflow_utils.lineage_tags("evaluate", meta, **compared)):
        mlflow.log_params(flatten(cfg, "evaluate") | {"arms": ",".join(arm_ids)})
        mlflow.log_metrics(run_metrics(result))
        mlflow.log_table(records_table, "comparison.json")  # every (arm, reference, metric), in the run's Artifacts
        mlflow.log_text(markdown, "comparison.md")
        mlflow.log_text(markdown, "comparison.txt")  # the name notebooks/compare_runs.ipynb reads
        mlflow.log_dict(result, "evaluation.json")
        mlflow.log_figure(report.ratio_figure(curve), "plots/ratio_curve.png")
        for plot in (paths.PLOTS / "ratio_curve.csv", paths.PLOTS / "recall_per_class.csv"):
            mlflow.log_artifact(str(plot), "plots")
        mlflow.log_artifacts(str(paths.PLOTS / "roc"), "plots/roc")
    record_generator_downstream(result, [arm for arm, a in parsed.items() if a.uses_synthetic], manifest)


def record_generator_downstream(result: dict[str, Any], synthetic_arms: list[str], manifest: dict[str, Any]) -> None:
    """Put the best synthetic arm's difference from real on the generator's registry version
    (tags downstream.*), where `ganaug promote`'s downstream gate reads it (on the primary metric:
    balanced accuracy, or macro AUROC for multi-label data)."""
    summary = report.downstream_summary(result, synthetic_arms, result["metrics"][0])
    run_id = manifest.get("generator_mlflow_run_id")
    if summary is None or not run_id:
        return
    version = registry.version_of_run(str(run_id))
    if version is None:
        print(f"note: no registered generator version comes from run {run_id}: downstream result not recorded")
        return
    registry.record_downstream(version, summary)
    print(f"{registry.REGISTERED_NAME} v{version}: downstream {summary['arm']} - real {summary['metric']} "
          f"{summary['difference']:+.3f}, corrected [{summary['corrected_ci_low']:+.3f}, {summary['corrected_ci_high']:+.3f}]")


def run_metrics(result: dict[str, Any]) -> dict[str, float]:
    """MLflow charts: each arm's mean per metric and each difference, `<arm>/<metric>` and
    `diff_<reference>/<arm>/<metric>` (arm ids through metric_key: `synthetic-0_5`)."""
    flat = {f"{metric_key(arm)}/{name}": m["mean"] for arm, r in result["arms"].items() for name, m in r["metrics"].items()}
    flat |= {f"diff_{metric_key(c['reference'])}/{metric_key(c['arm'])}/{c['metric']}": c["difference"]
             for c in result["comparisons"]}
    return {k: float(v) for k, v in flat.items() if v is not None and np.isfinite(v)}


def write_plots(curve: pd.DataFrame, recall: pd.DataFrame, roc: dict[str, pd.DataFrame]) -> None:
    """plots/ratio_curve.csv, plots/recall_per_class.csv, plots/roc/<arm>.csv (the folder replaced whole)."""
    paths.PLOTS.mkdir(parents=True, exist_ok=True)
    curve.to_csv(paths.PLOTS / "ratio_curve.csv", index=False)
    recall.to_csv(paths.PLOTS / "recall_per_class.csv", index=False)
    with atomic_dir(paths.PLOTS / "roc") as tmp:
        for arm, points in roc.items():
            points.to_csv(Path(tmp) / f"{arm}.csv", index=False)
