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
from sklearn.metrics import balanced_accuracy_score, roc_curve

from ganaug.classify.metrics import roc_auc
from ganaug.config import EvaluateConfig, Params, flatten
from ganaug.data.packed import read_meta
from ganaug.io import write_json
from ganaug.stages import paths
from ganaug.stages.train_classifier import ARMS, PREDICTIONS_FILE
from ganaug.tracking import mlflow_utils

Metric = Callable[[np.ndarray, np.ndarray], float]  # (y_true (N,), proba (N, K)) -> value


def compared_metrics(minority: int, class_names: list[str]) -> dict[str, Metric]:
    """The numbers compared between arms, including recall of the scarce class."""
    return {
        "balanced_accuracy": lambda y, p: float(balanced_accuracy_score(y, p.argmax(1))),
        "accuracy": lambda y, p: float((p.argmax(1) == y).mean()),
        "roc_auc": roc_auc,
        f"recall_{class_names[minority]}": lambda y, p: float((p.argmax(1)[y == minority] == minority).mean()),
    }


def load_predictions(arm: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    path = paths.classifier_dir(arm) / PREDICTIONS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} not found (run train_classifier_{arm})")
    with np.load(path) as npz:
        return npz["labels"], {k: npz[k] for k in npz.files if k != "labels"}


def arm_metric(fn: Metric, labels: np.ndarray, seeds: dict[str, np.ndarray], index: np.ndarray | None = None) -> float:
    """The metric averaged over seeds (optionally on a resample `index` of the test images)."""
    if index is None:
        return float(np.mean([fn(labels, p) for p in seeds.values()]))
    return float(np.mean([fn(labels[index], p[index]) for p in seeds.values()]))


def compare_arms(labels: np.ndarray, arms: dict[str, dict[str, np.ndarray]], cfg: EvaluateConfig, minority: int, class_names: list[str]) -> dict[str, Any]:
    """Per-arm mean/std over seeds and the paired-bootstrap CI of augmented - real."""
    metrics = compared_metrics(minority, class_names)
    rng = np.random.default_rng(cfg.seed)
    resamples = [rng.integers(0, len(labels), len(labels)) for _ in range(cfg.n_bootstrap)]
    alpha = (1 - cfg.ci) / 2
    out: dict[str, Any] = {"n_test": int(len(labels)), "ci_level": cfg.ci, "n_bootstrap": cfg.n_bootstrap, "arms": {}, "difference": {}}
    for arm, seeds in arms.items():
        out["arms"][arm] = {}
        for name, fn in metrics.items():
            per_seed = [fn(labels, p) for p in seeds.values()]
            out["arms"][arm][name] = {"mean": float(np.mean(per_seed)), "std": float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else 0.0, "n_seeds": len(per_seed)}
    for name, fn in metrics.items():
        observed = arm_metric(fn, labels, arms["augmented"]) - arm_metric(fn, labels, arms["real"])
        diffs = np.array([arm_metric(fn, labels, arms["augmented"], i) - arm_metric(fn, labels, arms["real"], i) for i in resamples])
        diffs = diffs[np.isfinite(diffs)]
        low, high = np.quantile(diffs, [alpha, 1 - alpha])
        out["difference"][name] = {"augmented_minus_real": float(observed), "ci_low": float(low), "ci_high": float(high),
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
    table = comparison_table(result)
    print(table.to_string(index=False))

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

