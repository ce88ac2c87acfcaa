"""Stage `evaluate`: Model A (real only) against Model B (real + synthetic) on the untouched
real test split: mean and spread over seeds, and a paired bootstrap confidence interval of
the difference B - A over test images. The full record goes to `reports/evaluation.json`
(with the MLflow runs it compared), the differences and intervals to `metrics/evaluation.json`,
the comparison to the MLflow run as a table."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from scipy.stats import rankdata
from sklearn.metrics import roc_curve
from ganaug.config import EvaluateConfig, Params, flatten
from ganaug.data.packed import read_meta
from ganaug.io import write_json
from ganaug.quality.gate import gate_summary
from ganaug.stages import paths
from ganaug.stages.train_classifier import ARMS, METRICS_FILE, PREDICTIONS_FILE
from ganaug.tracking import mlflow_utils, runs, summaries
from ganaug.tracking.mlflow_utils import metric_key

# Metrics on a batch of resamples: labels (B, N) int, proba (B, N, K) -> (B,) values.
# Vectorised so a 2000-resample paired bootstrap takes seconds; tests check them against sklearn.
BatchMetric = Callable[[np.ndarray, np.ndarray], np.ndarray]


def batch_accuracy(labels: np.ndarray, proba: np.ndarray) -> np.ndarray:
    return (proba.argmax(-1) == labels).mean(-1)


def batch_recall(labels: np.ndarray, proba: np.ndarray, class_index: int) -> np.ndarray:
    """Recall of one class (NaN for a resample without that class)."""
    is_class = labels == class_index
    hits = (is_class & (proba.argmax(-1) == class_index)).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return hits / is_class.sum(-1)


def batch_balanced_accuracy(labels: np.ndarray, proba: np.ndarray) -> np.ndarray:
    """Mean recall over the classes present (sklearn's balanced_accuracy_score)."""
    recalls = np.stack([batch_recall(labels, proba, c) for c in range(proba.shape[-1])])
    return np.nanmean(recalls, axis=0)


def batch_binary_auc(positive: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """ROC AUC by the rank-sum (Mann-Whitney) identity, ties averaged."""
    ranks = rankdata(scores, axis=-1)
    n_pos = positive.sum(-1)
    n_neg = positive.shape[-1] - n_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((ranks * positive).sum(-1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def batch_roc_auc(labels: np.ndarray, proba: np.ndarray) -> np.ndarray:
    """Binary: AUC of class 1; multi-class: macro one-vs-rest AUC (as classification_metrics)."""
    if proba.shape[-1] == 2:
        return batch_binary_auc(labels == 1, proba[..., 1])
    return np.mean([batch_binary_auc(labels == c, proba[..., c]) for c in range(proba.shape[-1])], axis=0)


def compared_metrics(minority: int, class_names: list[str]) -> dict[str, BatchMetric]:
    """The numbers compared between arms, including recall of the scarce class."""
    return {
        "balanced_accuracy": batch_balanced_accuracy,
        "accuracy": batch_accuracy,
        "roc_auc": batch_roc_auc,
        f"recall_{metric_key(class_names[minority])}": lambda y, p: batch_recall(y, p, minority),
    }


def load_predictions(arm: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    path = paths.classifier_dir(arm) / PREDICTIONS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} not found (run train_classifier_{arm})")
    with np.load(path) as npz:
        return npz["labels"], {k: npz[k] for k in npz.files if k != "labels"}


def per_seed_metric(fn: BatchMetric, labels: np.ndarray, seeds: dict[str, np.ndarray], index: np.ndarray) -> np.ndarray:
    """The metric of each seed's model on each resample: index (B, N) -> (S, B)."""
    return np.stack([fn(labels[index], proba[index]) for proba in seeds.values()])


def resample_seeds(per_seed: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(S, B) -> (B,): each resample averages S seeds drawn with replacement, so the interval
    carries seed-to-seed variance as well as test-image sampling."""
    n_seeds, n_resamples = per_seed.shape
    drawn = rng.integers(0, n_seeds, (n_resamples, n_seeds))  # (B, S) seed indices
    return per_seed[drawn, np.arange(n_resamples)[:, None]].mean(1)


def verdict(low: float, high: float) -> str:
    """'helped' / 'hurt' only when the corrected interval excludes 0."""
    if low > 0:
        return "helped"
    if high < 0:
        return "hurt"
    return "no clear difference"


def compare_arms(labels: np.ndarray, arms: dict[str, dict[str, np.ndarray]], cfg: EvaluateConfig, minority: int,
                 class_names: list[str], chunk: int = 250) -> dict[str, Any]:
    """Per-arm mean/std over seeds and a two-level bootstrap of augmented - real.

    Each resample draws test images with replacement (both arms scored on the same draw: paired)
    and, independently per arm, the seeds whose models are averaged (with replacement): the
    interval includes seed-to-seed variance. `ci_low`/`ci_high` are at `cfg.ci`; the
    `corrected_*` bounds are Bonferroni-corrected over the metrics compared, and the verdict
    says "helped" only when the corrected interval excludes 0."""
    metrics = compared_metrics(minority, class_names)
    rng = np.random.default_rng(cfg.seed)
    resamples = rng.integers(0, len(labels), (cfg.n_bootstrap, len(labels)))
    identity = np.arange(len(labels))[None]  # (1, N): the observed test set
    alpha = (1 - cfg.ci) / 2
    corrected_alpha = alpha / len(metrics)
    n_seeds = {arm: len(seeds) for arm, seeds in arms.items()}
    out: dict[str, Any] = {"n_test": int(len(labels)), "ci_level": cfg.ci, "n_bootstrap": cfg.n_bootstrap,
                           "interval": "two-level bootstrap: test images (paired) and seeds (per arm)",
                           "correction": f"Bonferroni over {len(metrics)} metrics",
                           "corrected_ci_level": 1 - 2 * corrected_alpha, "arms": {}, "difference": {}}
    if min(n_seeds.values()) < 2:
        out["warning"] = "an arm has a single seed: the interval cannot include seed-to-seed variance"
    for arm, seeds in arms.items():
        out["arms"][arm] = {}
        for name, fn in metrics.items():
            per_seed = per_seed_metric(fn, labels, seeds, identity)[:, 0]
            out["arms"][arm][name] = {"mean": float(np.mean(per_seed)),
                                      "std": float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else 0.0,
                                      "n_seeds": len(per_seed)}
    for name, fn in metrics.items():
        observed = out["arms"]["augmented"][name]["mean"] - out["arms"]["real"][name]["mean"]
        diffs = np.concatenate([
            resample_seeds(per_seed_metric(fn, labels, arms["augmented"], resamples[i : i + chunk]), rng)
            - resample_seeds(per_seed_metric(fn, labels, arms["real"], resamples[i : i + chunk]), rng)
            for i in range(0, len(resamples), chunk)
        ])
        diffs = diffs[np.isfinite(diffs)]
        low, high = np.quantile(diffs, [alpha, 1 - alpha])
        c_low, c_high = np.quantile(diffs, [corrected_alpha, 1 - corrected_alpha])
        out["difference"][name] = {"augmented_minus_real": float(observed), "ci_low": float(low), "ci_high": float(high),
                                   "corrected_ci_low": float(c_low), "corrected_ci_high": float(c_high),
                                   "verdict": verdict(float(c_low), float(c_high)),
                                   "p_augmented_better": float((diffs > 0).mean())}
    return out


def balance_caveat(real_counts: dict[str, int], synthetic_counts: dict[str, int], tolerance: float = 0.05) -> str | None:
    """A warning when the synthetic set changes the training set's class shares by more than
    `tolerance`: without a class-balanced real-only arm, a gain may come from rebalancing."""
    total_real = sum(real_counts.values())
    total = total_real + sum(synthetic_counts.values())
    shifts = {name: ((n + synthetic_counts.get(name, 0)) / total, n / total_real) for name, n in real_counts.items()}
    moved = {name: (after, before) for name, (after, before) in shifts.items() if abs(after - before) > tolerance}
    if not moved:
        return None
    change = ", ".join(f"{name} {before:.0%} -> {after:.0%}" for name, (after, before) in moved.items())
    return (f"the synthetic images change the training set's class shares ({change}); no class-balanced "
            "real-only arm was run, so a difference may come from rebalancing rather than from the GAN")


def comparison_table(result: dict[str, Any]) -> pd.DataFrame:
    rows = []
    for name, diff in result["difference"].items():
        real, aug = result["arms"]["real"][name], result["arms"]["augmented"][name]
        rows.append({
            "metric": name,
            "Model A (real)": f"{real['mean']:.3f} ± {real['std']:.3f}",
            "Model B (real+synthetic)": f"{aug['mean']:.3f} ± {aug['std']:.3f}",
            "B - A": f"{diff['augmented_minus_real']:+.3f}",
            f"{int(result['ci_level'] * 100)}% CI": f"[{diff['ci_low']:+.3f}, {diff['ci_high']:+.3f}]",
            "corrected CI": f"[{diff['corrected_ci_low']:+.3f}, {diff['corrected_ci_high']:+.3f}]",
            "verdict": diff["verdict"],
        })
    return pd.DataFrame(rows)


def comparison_records(result: dict[str, Any]) -> pd.DataFrame:
    """The comparison as numbers, one row per metric (MLflow's table view): each arm's mean and
    std over seeds, then every number of the metric's `difference` record (B - A, intervals, …)."""
    rows = []
    for name, diff in result["difference"].items():
        row: dict[str, Any] = {"metric": name}
        for arm, label in (("real", "A_real"), ("augmented", "B_augmented")):
            row |= {f"{label}_mean": result["arms"][arm][name]["mean"], f"{label}_std": result["arms"][arm][name]["std"]}
        row |= {("B_minus_A" if k == "augmented_minus_real" else k): v for k, v in diff.items()}
        rows.append(row)
    return pd.DataFrame(rows)


def compared_runs() -> dict[str, Any]:
    """The MLflow runs behind each arm's predictions (from train_classifier's record), for lineage."""
    found = {}
    for arm in ARMS:
        path = paths.classifier_dir(arm) / METRICS_FILE
        if path.is_file():
            record = json.loads(path.read_text())
            found[arm] = {"parent": record.get("mlflow_run_id"),
                         "seeds": {s: r.get("mlflow_run_id") for s, r in record.get("seeds", {}).items()}}
    return found


def main(params: Params) -> None:
    cfg = params.evaluate
    meta = read_meta(paths.PREPARED)
    class_names = meta["class_names"]
    train_counts = [meta["counts"]["train"]["per_class"][n] for n in class_names]
    minority = int(np.argmin(train_counts))
    arms, labels = {}, None
    for arm in ARMS:
        arm_labels, arms[arm] = load_predictions(arm)
        if labels is not None and not np.array_equal(labels, arm_labels):
            raise ValueError("the arms were evaluated on different test labels; rerun both classifier stages")
        labels = arm_labels
    result = compare_arms(labels, arms, cfg, minority, class_names)
    manifest = json.loads((paths.SYNTHETIC / "manifest.json").read_text())
    result["synthetic_counts"] = manifest["counts"]
    caveat = balance_caveat(dict(zip(class_names, train_counts)), manifest["counts"])
    result["caveats"] = [c for c in (result.get("warning"), caveat) if c]
    result["mlflow_runs"] = compared_runs()
    result["quality_gate"] = manifest.get("quality_gate") or {"recorded": False}
    result["quality_gate"]["summary"] = gate_summary(manifest.get("quality_gate"))
    table = comparison_table(result)
    print(table.to_string(index=False))
    print(f"intervals: {result['interval']}; verdict from the {result['corrected_ci_level']:.1%} interval "
          f"({result['correction']})")
    print(result["quality_gate"]["summary"])
    for note in result["caveats"]:
        print(f"caveat: {note}")

    # MLflow charts: one per arm mean and per difference (intervals are in the table, not charts)
    flat = {f"{arm}/{name}": v["mean"] for arm, ms in result["arms"].items() for name, v in ms.items()}
    flat |= {f"diff/{name}": d["augmented_minus_real"] for name, d in result["difference"].items()}
    write_json(paths.REPORTS / "evaluation.json", result)
    write_json(paths.METRICS / "evaluation.json", summaries.evaluation_summary(result))
    paths.PLOTS.mkdir(parents=True, exist_ok=True)
    _write_plots(labels, arms, class_names)

    mlflow_utils.setup()
    predictions = {arm: hashlib.sha256((paths.classifier_dir(arm) / PREDICTIONS_FILE).read_bytes()).hexdigest() for arm in ARMS}
    key = runs.input_key(evaluate=flatten(cfg, "evaluate"), data=meta["dataset_hash"], predictions=predictions)
    compared = {f"runs.{arm}": str(r["parent"]) for arm, r in result["mlflow_runs"].items()}
    name = mlflow_utils.unique_run_name("evaluate", {"evaluate": flatten(cfg), "runs": result["mlflow_runs"]})
    with runs.start_run("evaluate", key, run_name=name, tags=mlflow_utils.lineage_tags("evaluate", meta, **compared)):
        mlflow.log_params(flatten(cfg, "evaluate") | {"synthetic.counts": str(manifest["counts"])})
        mlflow.log_metrics({k: v for k, v in flat.items() if np.isfinite(v)})
        mlflow.log_table(comparison_records(result), "comparison.json")  # Model A vs B, in the run's Artifacts
        mlflow.log_text(table.to_string(index=False), "comparison.txt")
        mlflow.log_dict(result, "evaluation.json")


def _write_plots(labels: np.ndarray, arms: dict[str, dict[str, np.ndarray]], class_names: list[str]) -> None:
    """DVC plots per arm (first seed): ROC curve (micro-averaged one-vs-rest if multi-class), confusion pairs."""
    roc_rows, confusion_rows = [], []
    for arm, seeds in arms.items():
        proba = next(iter(seeds.values()))
        for actual, predicted in zip(labels, proba.argmax(1)):
            confusion_rows.append({"arm": arm, "actual": class_names[actual], "predicted": class_names[predicted]})
        if proba.shape[1] == 2:
            fpr, tpr, _ = roc_curve(labels, proba[:, 1])
        else:  # micro-averaged one-vs-rest
            fpr, tpr, _ = roc_curve(np.eye(proba.shape[1])[labels].ravel(), proba.ravel())
        roc_rows += [{"arm": arm, "fpr": f, "tpr": t} for f, t in zip(fpr, tpr)]
    for arm in arms:
        pd.DataFrame([r for r in confusion_rows if r["arm"] == arm]).drop(columns="arm").to_csv(paths.PLOTS / f"confusion_{arm}.csv", index=False)
        pd.DataFrame([r for r in roc_rows if r["arm"] == arm]).drop(columns="arm").to_csv(paths.PLOTS / f"roc_{arm}.csv", index=False)

