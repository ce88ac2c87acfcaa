"""The few numbers each stage gives DVC (`metrics/*.json`, what `dvc metrics show` and
`dvc exp show` compare), chosen here, in one place, from the stage's full record.

The full records (every metric, interval, per-class value, per-seed result, gate record) stay
in the stage's own output folder and in MLflow: `models/gan/quality.json`,
`models/reference/metrics.json`, `models/classifier_<arm>/metrics.json`, `reports/evaluation.json`.
A key missing from a record (e.g. `diversity` before the GAN had it) is left out.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# quality of the trained generator: distance, coverage, label fidelity, diversity, copies
GAN_KEYS = ("fd_domain", "kd_domain", "precision_domain", "recall_domain", "coverage_domain", "label_fidelity",
            "diversity", "memorisation_pixel_copy_rate", "memorisation_domain_copy_rate")
REFERENCE_KEYS = ("val_balanced_accuracy", "val_accuracy", "val_roc_auc", "best_epoch")
CLASSIFIER_KEYS = ("balanced_accuracy", "accuracy", "roc_auc")  # test split, mean and std over seeds
# summary name <- key in evaluate's `difference` record (B - A with its interval, corrected if present)
DIFFERENCE_KEYS = {"diff": "augmented_minus_real", "ci_low": "ci_low", "ci_high": "ci_high",
                   "corrected_ci_low": "corrected_ci_low", "corrected_ci_high": "corrected_ci_high"}
COMPARED = ("balanced_accuracy", "accuracy", "roc_auc")  # evaluate's metrics in the summary (not per-class recall)


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


def evaluation_summary(result: dict[str, Any]) -> dict[str, dict[str, float]]:
    """metrics/evaluation.json: Model B - Model A (`diff`) and its interval(s), per compared metric."""
    summary = {name: {short: float(diff[key]) for short, key in DIFFERENCE_KEYS.items() if key in diff}
               for name, diff in result["difference"].items() if name in COMPARED}
    gate = result.get("quality_gate") or {}
    if "overridden" in gate:  # a synthetic set written past a failed gate shows beside the numbers it produced
        summary["quality_gate"] = {"overridden": float(bool(gate["overridden"]))}
    return summary
