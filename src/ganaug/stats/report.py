"""The arms' comparison (stats.compare.compare_arms' result) as tables and plot data: the
Markdown table people read, one flat record per comparison for MLflow's table view, and the rows
of the DVC plots (metric vs synthetic ratio with its interval band, recall per class, ROC)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_curve

from ganaug.stats.metrics import batch_recall

TABLE_METRICS = ("balanced_accuracy", "macro_f1", "roc_auc", "roc_auc_micro")  # + the minority recall, in the per-arm table
LABELS = {"balanced_accuracy": "balanced accuracy", "accuracy": "accuracy", "macro_f1": "macro F1", "roc_auc": "AUROC", "roc_auc_micro": "micro AUROC"}


def metric_label(name: str) -> str:
    return LABELS.get(name, name.replace("_", " "))


def _fmt(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "n/a"
    return f"{x:+.3f}" if signed else f"{x:.3f}"


def _interval(low: float | None, high: float | None, signed: bool = False) -> str:
    return f"[{_fmt(low, signed)}, {_fmt(high, signed)}]"


def _p(p: float | None) -> str:
    if p is None:
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _models(result: dict[str, Any], arm: str) -> int:
    """Models of an arm (seeds, or seeds x folds with classifier.folds): the collapse rule counts models."""
    return result["arms"][arm].get("n_models", result["arms"][arm]["n_seeds"])


def minority_metric(result: dict[str, Any]) -> str | None:
    """The `recall_<class>` metric compare_arms was given, if any."""
    return next((m for m in result["metrics"] if m.startswith("recall_")), None)


def arms_table(result: dict[str, Any]) -> pd.DataFrame:
    """One row per arm: mean [interval] over seeds and test images of the table metrics, collapsed seeds k/n."""
    level = f"{result['ci_level']:.0%}"
    names = [m for m in (*TABLE_METRICS, minority_metric(result)) if m and m in result["metrics"]]
    rows = []
    for arm, record in result["arms"].items():
        row = {"arm": arm}
        for name in names:
            m = record["metrics"][name]
            row[f"{metric_label(name)} ({level} interval)"] = f"{_fmt(m['mean'])} {_interval(m['low'], m['high'])}"
        row["collapsed seeds"] = ("n/a" if result.get("label_kind") == "multi_hot"
                                  else f"{len(record['collapsed_seeds'])}/{record.get('n_models', record['n_seeds'])}")
        rows.append(row)
    return pd.DataFrame(rows)


def differences_table(result: dict[str, Any], reference: str) -> pd.DataFrame:
    """The comparisons against one reference: one row per (arm, metric)."""
    level = f"{result['ci_level']:.0%}"
    overridden = gate_overridden_arms(result)
    unconfirmed = unconfirmed_gains(result)
    rows = []
    for r in result["comparisons"]:
        if r["reference"] != reference:
            continue
        rows.append({"arm": r["arm"], "metric": metric_label(r["metric"]), "difference": _fmt(r["difference"], True),
                     f"{level} interval": _interval(r["low"], r["high"], True),
                     "corrected interval": f"{_interval(r['corrected_low'], r['corrected_high'], True)} ({r['corrected_level']:.2%})",
                     "Holm p": _p(r["p_holm"]), "McNemar p": _p(r["mcnemar_p"]),
                     "DeLong p": _p(r.get("delong_p")) if r["metric"] == "roc_auc" else "",
                     "collapsed seeds (arm, reference)": f"{r['collapsed_seeds_arm']}/{_models(result, r['arm'])}, "
                                                         f"{r['collapsed_seeds_reference']}/{_models(result, reference)}",
                     "verdict": r["verdict"] + _not_against(unconfirmed, r) + (" (gate overridden)" if r["arm"] in overridden else "")})
    return pd.DataFrame(rows)


def unconfirmed_gains(result: dict[str, Any]) -> dict[tuple[str, str], list[str]]:
    """{(arm, metric): the references it did not beat} for every arm that helped against at least
    one reference on that metric but not against every reference it was compared with. Such a gain
    is one a control gives without synthetic images (class balance, classic augmentation): the
    control exposes it, so the arm's `helped` rows say which references it did not beat."""
    by_arm: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in result["comparisons"]:
        by_arm.setdefault((r["arm"], r["metric"]), []).append(r)
    return {key: missed for key, rows in by_arm.items()
            if any(r["verdict"] == "helped" for r in rows)
            and (missed := [r["reference"] for r in rows if r["verdict"] != "helped"])}


def _not_against(unconfirmed: dict[tuple[str, str], list[str]], record: dict[str, Any]) -> str:
    missed = unconfirmed.get((record["arm"], record["metric"])) if record["verdict"] == "helped" else None
    return f" (not against {', '.join(missed)})" if missed else ""


def unconfirmed_gain_caveats(result: dict[str, Any]) -> list[str]:
    """One caveat per arm whose gain on the primary metric (the first compared) a control exposes."""
    primary = result["metrics"][0]
    notes = []
    for (arm, metric), missed in unconfirmed_gains(result).items():
        if metric == primary:
            beaten = [r["reference"] for r in result["comparisons"]
                      if (r["arm"], r["metric"]) == (arm, metric) and r["verdict"] == "helped"]
            notes.append(f"{arm} helped against {', '.join(beaten)} but not against {', '.join(missed)} in "
                         f"{metric_label(metric)}: its gain is not shown to exceed what {', '.join(missed)} "
                         "gives without synthetic images")
    return notes


def gate_overridden_arms(result: dict[str, Any]) -> set[str]:
    """The arms trained on a synthetic set whose generator failed the quality gate, written anyway
    (synthesize.override_gate=true); empty when the gate passed or was not recorded."""
    if not (result.get("quality_gate") or {}).get("overridden"):
        return set()
    from ganaug.experiments.arms import MIXED_FAMILIES, SYNTHETIC_ONLY

    trained_on_synthetic = (*MIXED_FAMILIES, SYNTHETIC_ONLY)
    return {arm for arm, f in (result.get("families") or {}).items() if f["family"] in trained_on_synthetic}


def comparison_markdown(result: dict[str, Any], notes: list[str] | None = None) -> str:
    """reports/comparison.md: the arms table, then per reference the table of differences."""
    parts = [f"# Arms on the test split ({result['n_test']} images)", ""]
    if gate_overridden_arms(result):  # first, before any verdict: these arms' synthetic images failed the gate
        parts += [f"> **{result['quality_gate']['summary']}.** Verdicts of the arms with synthetic images say "
                  "\"(gate overridden)\".", ""]
    parts += [f"Mean over seeds with its {result['ci_level']:.0%} interval ({result['interval']}).", "",
             arms_table(result).to_markdown(index=False, disable_numparse=True), ""]
    for reference in result["references"]:
        table = differences_table(result, reference)
        if table.empty:
            continue
        parts += [f"## Against `{reference}` (arm - {reference})", "", table.to_markdown(index=False, disable_numparse=True), ""]
    parts += ["Verdict: `helped` / `hurt` only when the corrected interval excludes 0; `helped (not against X)`: "
              "this arm did not beat reference X, which gets there without synthetic images. " + result["correction"]
              + " (a corrected interval that excludes 0 implies Holm's rejection). Paired tests: "
              + result["paired_test"] + " (DeLong p on the AUROC rows). Collapse: " + result["collapse_rule"] + ".", ""]
    if result.get("per_finding"):
        parts += ["## Per finding (test split, mean over seeds)", "", per_finding_markdown(result["per_finding"]), ""]
    for note in [*result["caveats"], *(notes or [])]:
        parts.append(f"- caveat: {note}")
    return "\n".join(parts).rstrip() + "\n"


def comparison_records(result: dict[str, Any]) -> pd.DataFrame:
    """Every comparison as numbers, one row per (arm, reference, metric) (MLflow's table view,
    reports/comparison.json), with both arms' means."""
    rows = []
    for r in result["comparisons"]:
        rows.append({**r, "arm_mean": result["arms"][r["arm"]]["metrics"][r["metric"]]["mean"],
                     "reference_mean": result["arms"][r["reference"]]["metrics"][r["metric"]]["mean"]})
    return pd.DataFrame(rows)


def ratio_curve(result: dict[str, Any], families: dict[str, tuple[str, float | None]]) -> pd.DataFrame:
    """plots/ratio_curve.csv: family, arm, ratio, metric, mean, low, high. One line per mixed
    family over its ratios, anchored at ratio 0 by the arm it adds synthetic images to (synthetic
    <- real, classic_synthetic <- classic); `balanced` is a point at ratio 0 (the control). Arms
    off the ratio axis (synthetic_only) are in the tables only. families: {arm: (family, ratio)}."""
    anchors = {"real": "synthetic", "classic": "classic_synthetic"}
    mixed = {family for family, ratio in families.values() if ratio is not None}
    points = []  # (line, arm, ratio)
    for arm, (family, ratio) in families.items():
        if ratio is not None:
            points.append((family, arm, ratio))
        elif family in anchors and anchors[family] in mixed:
            points.append((anchors[family], arm, 0.0))
        elif family == "balanced":
            points.append(("balanced", arm, 0.0))
    rows = [{"family": line, "arm": arm, "ratio": ratio, "metric": name, **{k: m[k] for k in ("mean", "low", "high")}}
            for line, arm, ratio in points for name, m in result["arms"][arm]["metrics"].items()]
    frame = pd.DataFrame(rows, columns=["family", "arm", "ratio", "metric", "mean", "low", "high"])
    return frame.sort_values(["metric", "family", "ratio"], kind="stable").reset_index(drop=True)


def ratio_figure(curve: pd.DataFrame) -> Any:
    """The ratio curve as a matplotlib figure (for MLflow): per metric, the mean over seeds of each
    family against the synthetic ratio, with the interval as a band."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    metrics = list(dict.fromkeys(curve["metric"]))
    fig = Figure(figsize=(4 * max(len(metrics), 1), 3.2))
    axes = fig.subplots(1, max(len(metrics), 1), squeeze=False)[0]
    for ax, name in zip(axes, metrics):
        for family, rows in curve[curve["metric"] == name].groupby("family", sort=False):
            rows = rows.sort_values("ratio")
            line = ax.plot(rows["ratio"], rows["mean"], marker="o", label=family)[0]
            ax.fill_between(rows["ratio"], rows["low"].astype(float), rows["high"].astype(float), alpha=0.2, color=line.get_color())
        ax.set_title(metric_label(name))
        ax.set_xlabel("synthetic ratio")
    axes[0].legend(fontsize="small")
    fig.tight_layout()
    return fig


def recall_per_class(labels: np.ndarray, arms: dict[str, dict[str, np.ndarray]], class_names: list[str]) -> pd.DataFrame:
    """plots/recall_per_class.csv: arm, class, recall (mean over the arm's seeds). Multi-hot labels
    (N, K): the recall (sensitivity) of each finding at the sigmoid threshold 0.5."""
    rows = []
    for arm, seeds in arms.items():
        for c, name in enumerate(class_names):
            if labels.ndim == 2:
                carriers = labels[:, c] == 1
                recall = np.mean([np.mean(proba[carriers, c] >= 0.5) if carriers.any() else np.nan for proba in seeds.values()])
            else:
                recall = np.mean([batch_recall(labels[None], proba[None], c)[0] for proba in seeds.values()])
            rows.append({"arm": arm, "class": name, "recall": float(recall)})
    return pd.DataFrame(rows)


def per_finding(labels: np.ndarray, arms: dict[str, dict[str, np.ndarray]], finding_names: list[str]) -> list[dict[str, Any]]:
    """Multi-label: per arm and finding, AUROC and average precision (mean over the arm's seeds,
    classify.metrics.multilabel_metrics), then the macro and micro rows (finding "macro", "micro");
    None where a finding has no positive or no negative test image."""
    from ganaug.classify.metrics import multilabel_metrics
    from ganaug.tracking.mlflow_utils import metric_key

    rows = []
    for arm, seeds in arms.items():
        per_seed = [multilabel_metrics(labels, proba, finding_names) for proba in seeds.values()]
        for finding in [*map(metric_key, finding_names), "macro", "micro"]:
            values = {m: float(np.mean([r[f"{m}_{finding}"] for r in per_seed])) for m in ("roc_auc", "average_precision")}
            rows.append({"arm": arm, "finding": finding, "n_seeds": len(per_seed),
                         **{m: (v if np.isfinite(v) else None) for m, v in values.items()}})
    return rows


def per_finding_markdown(rows: list[dict[str, Any]]) -> str:
    """The per-finding table as Markdown (per_finding_table)."""
    return per_finding_table(rows).to_markdown(index=False, disable_numparse=True)


def per_finding_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The per-finding table: one row per finding, AUROC / AP per arm."""
    frame = pd.DataFrame(rows)
    wide = frame.pivot(index="finding", columns="arm", values=["roc_auc", "average_precision"])
    findings = list(dict.fromkeys(frame["finding"]))
    table = pd.DataFrame({"finding": findings})
    for arm in dict.fromkeys(frame["arm"]):
        table[f"{arm} AUROC / AP"] = [f"{_fmt(wide.loc[f, ('roc_auc', arm)])} / {_fmt(wide.loc[f, ('average_precision', arm)])}"
                                      for f in findings]
    return table


def roc_points(labels: np.ndarray, seeds: dict[str, np.ndarray]) -> pd.DataFrame:
    """plots/roc/<arm>.csv: fpr, tpr of the seed-averaged probabilities (N, K) (the arm's ensemble;
    micro-averaged one-vs-rest for more than two classes)."""
    proba = np.mean(list(seeds.values()), axis=0)
    if labels.ndim == 2:  # multi-hot: micro-averaged over (image, finding) pairs
        fpr, tpr, _ = roc_curve(labels.ravel(), proba.ravel())
    elif proba.shape[1] == 2:
        fpr, tpr, _ = roc_curve(labels, proba[:, 1])
    else:
        fpr, tpr, _ = roc_curve(np.eye(proba.shape[1])[labels].ravel(), proba.ravel())
    return pd.DataFrame({"fpr": fpr, "tpr": tpr})


def balance_caveat(real_counts: dict[str, int], synthetic_counts: dict[str, int], tolerance: float = 0.05) -> str | None:
    """For runs without a `balanced` arm: a warning when the synthetic images change the training
    set's class shares by more than `tolerance` (a gain may come from rebalancing, not the GAN)."""
    total_real = sum(real_counts.values())
    total = total_real + sum(synthetic_counts.values())
    shifts = {name: ((n + synthetic_counts.get(name, 0)) / total, n / total_real) for name, n in real_counts.items()}
    moved = {name: (after, before) for name, (after, before) in shifts.items() if abs(after - before) > tolerance}
    if not moved:
        return None
    change = ", ".join(f"{name} {before:.0%} -> {after:.0%}" for name, (after, before) in moved.items())
    return (f"the synthetic images change the training set's class shares ({change}); no class-balanced "
            "real-only arm was run, so a difference may come from rebalancing rather than from the GAN")


def downstream_summary(result: dict[str, Any], synthetic_arms: list[str], metric: str = "balanced_accuracy") -> dict[str, Any] | None:
    """The generator's downstream record for the registry (`tracking.registry.record_downstream`):
    among the arms that trained on its images, the one with the largest `metric` difference from
    real, with its multiplicity-corrected interval. Picking the best arm after the fact keeps
    the interval valid: the corrected intervals are Bonferroni-simultaneous over every (arm,
    reference) comparison of the metric. None when no such arm was compared with real."""
    candidates = [c for c in result["comparisons"] if c["reference"] == "real" and c["metric"] == metric
                  and c["arm"] in synthetic_arms and c.get("difference") is not None]
    if not candidates:
        return None
    best = max(candidates, key=lambda c: c["difference"])
    return {"arm": best["arm"], "metric": metric, "difference": best["difference"],
            "corrected_ci_low": best["corrected_low"], "corrected_ci_high": best["corrected_high"],
            "verdict": best["verdict"]}
