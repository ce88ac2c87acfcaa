"""Stage `evaluate`: Model A (real only) against Model B (real + synthetic) on the untouched
real test split: mean and spread over seeds, and a paired bootstrap confidence interval of
the difference B - A over test images."""

from __future__ import annotations

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
from ganaug.stages.train_classifier import ARMS, PREDICTIONS_FILE
from ganaug.tracking import mlflow_utils

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
        f"recall_{class_names[minority]}": lambda y, p: batch_recall(y, p, minority),
    }


def load_predictions(arm: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    path = paths.classifier_dir(arm) / PREDICTIONS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} not found (run train_classifier_{arm})")
    with np.load(path) as npz:
        return npz["labels"], {k: npz[k] for k in npz.files if k != "labels"}


def arm_metric(fn: BatchMetric, labels: np.ndarray, seeds: dict[str, np.ndarray], index: np.ndarray) -> np.ndarray:
    """The metric averaged over seeds, on each resample: index (B, N) -> (B,)."""
    return np.mean([fn(labels[index], proba[index]) for proba in seeds.values()], axis=0)


def compare_arms(labels: np.ndarray, arms: dict[str, dict[str, np.ndarray]], cfg: EvaluateConfig, minority: int,
                 class_names: list[str], chunk: int = 250) -> dict[str, Any]:
    """Per-arm mean/std over seeds and the paired-bootstrap CI of augmented - real: each resample
    draws test images with replacement, and both arms are scored on the same draw."""
    metrics = compared_metrics(minority, class_names)
    rng = np.random.default_rng(cfg.seed)
    resamples = rng.integers(0, len(labels), (cfg.n_bootstrap, len(labels)))
    identity = np.arange(len(labels))[None]  # (1, N): the observed test set
    alpha = (1 - cfg.ci) / 2
    out: dict[str, Any] = {"n_test": int(len(labels)), "ci_level": cfg.ci, "n_bootstrap": cfg.n_bootstrap, "arms": {}, "difference": {}}
    for arm, seeds in arms.items():
        out["arms"][arm] = {}
        for name, fn in metrics.items():
            per_seed = [float(fn(labels[identity], proba[identity])[0]) for proba in seeds.values()]
            out["arms"][arm][name] = {"mean": float(np.mean(per_seed)), "std": float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else 0.0, "n_seeds": len(per_seed)}
    for name, fn in metrics.items():
        observed = float(arm_metric(fn, labels, arms["augmented"], identity)[0] - arm_metric(fn, labels, arms["real"], identity)[0])
        diffs = np.concatenate([
            arm_metric(fn, labels, arms["augmented"], resamples[i : i + chunk]) - arm_metric(fn, labels, arms["real"], resamples[i : i + chunk])
            for i in range(0, len(resamples), chunk)
        ])
        diffs = diffs[np.isfinite(diffs)]
        low, high = np.quantile(diffs, [alpha, 1 - alpha])
        out["difference"][name] = {"augmented_minus_real": observed, "ci_low": float(low), "ci_high": float(high),
                                   "p_augmented_better": float((diffs > 0).mean())}
    return out


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
        })
    return pd.DataFrame(rows)


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
    result["quality_gate"] = manifest.get("quality_gate") or {"recorded": False}
    result["quality_gate"]["summary"] = gate_summary(manifest.get("quality_gate"))
    table = comparison_table(result)
    print(table.to_string(index=False))
    print(result["quality_gate"]["summary"])

    flat = {f"{arm}.{name}": v["mean"] for arm, ms in result["arms"].items() for name, v in ms.items()}
    flat |= {f"diff.{name}": d["augmented_minus_real"] for name, d in result["difference"].items()}
    flat |= {f"diff.{name}.ci_low": d["ci_low"] for name, d in result["difference"].items()}
    flat |= {f"diff.{name}.ci_high": d["ci_high"] for name, d in result["difference"].items()}
    write_json(paths.METRICS / "evaluation.json", result)
    paths.PLOTS.mkdir(parents=True, exist_ok=True)
    _write_plots(labels, arms, class_names)

    mlflow_utils.setup()
    with mlflow.start_run(run_name="evaluate", tags=mlflow_utils.lineage_tags("evaluate", meta)):
        mlflow.log_params(flatten(cfg, "evaluate") | {"synthetic.counts": str(manifest["counts"])})
        mlflow.log_metrics({k.replace("@", "_"): v for k, v in flat.items() if np.isfinite(v)})
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

