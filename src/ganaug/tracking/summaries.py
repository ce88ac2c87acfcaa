"""The few numbers each stage gives DVC (`metrics/*.json`, what `dvc metrics show` and
`dvc exp show` compare), chosen here, in one place, from the stage's full record.

The full records (every metric, interval, per-class value, per-seed result, gate record) stay
in the stage's own output folder and in MLflow: `models/gan/quality.json`,
`models/reference/metrics.json`, `models/arms/<arm>/metrics.json`, `reports/evaluation.json`.
A key missing from a record (e.g. `diversity` before the GAN had it) is left out.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ganaug.stats.report import unconfirmed_gains
from ganaug.tracking.mlflow_utils import metric_key

# quality of the trained generator: distance, coverage, label fidelity, diversity, copies
GAN_KEYS = ("fd_domain", "kd_domain", "precision_domain", "recall_domain", "coverage_domain", "label_fidelity",
            "diversity", "memorisation_pixel_copy_rate", "memorisation_domain_copy_rate",
            "translation_change", "translation_ssim_to_source")  # the last two: translators (gan.arch=cyclegan) only
REFERENCE_KEYS = ("val_balanced_accuracy", "val_accuracy", "val_roc_auc", "val_roc_auc_macro", "best_epoch")
# test split, mean and std over seeds; multi-label sets: the macro AUROC and average precision over findings
CLASSIFIER_KEYS = ("balanced_accuracy", "accuracy", "roc_auc", "roc_auc_macro", "average_precision_macro")
SUMMARY_REFERENCE = "real"  # evaluate's summary: every arm against this reference arm
SUMMARY_METRIC = "balanced_accuracy"  # on this metric (the comparison's primary one)


def pick(record: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: record[k] for k in keys if k in record}


def gan_summary(final_quality: dict[str, float]) -> dict[str, float]:
    """metrics/gan.json from the final evaluation (models/gan/quality.json)."""
    return {k: float(v) for k, v in pick(final_quality, GAN_KEYS).items()}


def reference_summary(record: dict[str, float]) -> dict[str, float]:
    """metrics/reference.json from the reference classifier's validation metrics."""
    return pick(record, REFERENCE_KEYS)


def classifier_summary(per_seed: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """metrics/classifier_<arm>.json: {metric: {mean, std}} over seeds of the test metrics."""
    out = {}
    for key in CLASSIFIER_KEYS:
        values = [m[key] for m in per_seed.values() if key in m]
        if values:
            out[key] = {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0}
    return out


def evaluation_summary(result: dict[str, Any]) -> dict[str, Any]:
    """metrics/evaluation.json, kept narrow for `dvc exp show`: the real arm's balanced accuracy
    (mean over seeds), then per arm its difference from real (`diff`) and the corrected interval
    (`corrected_low`, `corrected_high`; the verdict reads it; `references_not_beaten` when it helped
    against real but not against every other reference), the number of collapsed seeds over
    all arms, and quality_gate.overridden. Arm ids pass through metric_key (`synthetic-1_0`):
    a dot would nest in DVC's columns. Everything else is in reports/evaluation.json."""
    metric = SUMMARY_METRIC if SUMMARY_METRIC in result["metrics"] else result["metrics"][0]  # multi-label: macro AUROC
    real = result["arms"].get(SUMMARY_REFERENCE, {}).get("metrics", {}).get(metric, {})
    summary: dict[str, Any] = {f"{SUMMARY_REFERENCE}_{metric}": real["mean"]} if real.get("mean") is not None else {}
    differences = {}
    unconfirmed = unconfirmed_gains(result)
    for c in result["comparisons"]:
        if c["reference"] == SUMMARY_REFERENCE and c["metric"] == metric:
            numbers = {"diff": c["difference"], "corrected_low": c["corrected_low"], "corrected_high": c["corrected_high"]}
            if c["verdict"] == "helped" and (c["arm"], metric) in unconfirmed:  # helped here, not against another reference
                numbers["references_not_beaten"] = len(unconfirmed[(c["arm"], metric)])
            differences[metric_key(c["arm"])] = {k: float(v) for k, v in numbers.items() if v is not None}
    summary[f"{metric}_vs_{SUMMARY_REFERENCE}"] = differences
    summary["collapsed_seeds"] = sum(len(a["collapsed_seeds"]) for a in result["arms"].values())
    gate = result.get("quality_gate") or {}
    if "overridden" in gate:  # a synthetic set written past a failed gate shows beside the numbers it produced
        summary["quality_gate"] = {"overridden": float(bool(gate["overridden"]))}
    return summary
