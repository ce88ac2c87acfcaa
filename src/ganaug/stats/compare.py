"""Arms against references: per-arm means and intervals, and differences arm - reference with
intervals that carry BOTH seed-to-seed variance and test-image sampling, paired tests, Holm's
correction and a verdict.

What is estimated. An arm is a training procedure; a seed draws one model from it. For a metric
m, the arm's value is E[m] over seeds (training randomness) and over test sets drawn like the
real test split. The estimate is the mean over the arm's S seeds of m on the one test split, and
the difference arm - reference is the difference of those means (every arm is scored on the same
test images: paired by image).

The interval: variance components plus a t quantile with Welch-Satterthwaite degrees of freedom.
Think of a model's per-image score as mu + a_s (seed effect) + b_i (image effect, shared by the
seeds) + g_si (seed-by-image interaction). Then, for one arm with S seeds on N images,

    Var(mean over seeds) = var(a)/S + var(b)/N + var(g)/(N S).

 - The sample variance of the S per-seed values, s^2, estimates var(a) + var(g)/N (b is common to
   the seeds and cancels), so s^2/S carries the seed part, on S - 1 degrees of freedom.
 - A bootstrap of the test images (stratified by class, the same resampled images for every arm
   and seed, seeds held fixed) gives the variance of the seed mean over test sets,
   var(b)/N + var(g)/(N S). Its var(g)/(N S) part is already inside s^2/S, so it is removed: the
   same bootstrap gives it as (mean_s var*(m_s) - var*(mean_s m_s)) / (S - 1) (the average
   single-seed variance exceeds the variance of the seed mean by exactly the interaction).
 - For a difference the image parts are taken on the difference itself (paired by image: images
   that are hard for both arms cancel), and the seed parts add: s_a^2/S_a + s_r^2/S_r (seeds of
   different arms train on different sets, so they are treated as independent; with
   `pair_seeds=True` and the same seed keys in both arms, var(d_s)/S of the per-seed differences
   d_s on S - 1 degrees of freedom instead).
 - The interval is estimate +- t_{1 - alpha/2, df} * sqrt(V), with df from Welch-Satterthwaite
   over the components (S_a - 1, S_r - 1, and N - 1 for the test part).

Why not a bootstrap over seeds: with 3 seeds a resample can only be one of 10 multisets; it
estimates the seed variance with the factor (S - 1)/S (2/3 at S = 3) and its percentiles have
normal, not t, tails, although that variance rests on 2 degrees of freedom
(t_{0.975, 2} = 4.30 against 1.96). Such an interval undercovers exactly when seed variance
matters; the t interval above holds its level (tests/test_stats.py simulates it: coverage near
0.95 with 3 seeds per arm, while a test-images-only interval falls far below). Seeds are not
paired by default: pairing halves the degrees of freedom (t_{0.975,2} = 4.30 instead of about
2.78 at Welch df of about 4) and pays only when models of the same seed number in two arms are
strongly correlated (correlation above about 0.6), which different training sets rarely give;
ignoring a positive correlation only makes the interval wider (conservative), never too narrow.
Measured (tests/test_stats.py's simulation, balanced accuracy, 3 seeds per arm, 300 test images):
the difference interval covers 0.94-0.96 over seed-effect sizes from 0 to large; the per-arm
interval 0.89-0.94 (Welch-Satterthwaite's df is slightly liberal when one component rests on 2 df
and the other is comparable; the per-arm bands are descriptive, the verdicts read differences).
For metrics that are not means over images (balanced accuracy, macro F1, AUROC) the
decomposition holds for their linearised form, which is what the bootstrap variances measure.

Tests and correction. The p-value of a comparison is the two-sided t test of the same estimate,
standard error and df, so p < alpha exactly when the interval excludes 0. Holm's step-down
adjustment runs over all (arm, reference) comparisons of one metric (the family; metrics are
separate questions, balanced accuracy the primary one). The *corrected* interval is the same t
interval at the Bonferroni level 1 - alpha/m, m the family size: when it excludes 0, p < alpha/m,
so m p < alpha and Holm rejects too (Holm's adjusted p never exceeds m p); the converse need not
hold. The verdict reads the corrected interval: "helped" when its lower bound is above 0, "hurt"
when its upper bound is below 0, otherwise "no clear difference". Every percentile here is a t
quantile, never a tail of a few resamples: the bootstrap only estimates variances.
Beside it, McNemar's exact test on the predictions of the seed-averaged probabilities
(scipy.stats.binomtest on the discordant images) and DeLong's test of the AUROC difference (the
mean over seeds of each arm's AUROC, as a contrast of the correlated AUCs of all the models on the
same images: stats.delong) are reported per comparison: both condition on the trained models
(test-image sampling only), so they are checks on the images, not the verdict.

Multi-label test labels (N, K) multi-hot: the metrics are the macro (and micro) AUROC over the
findings (stats.metrics.multilabel_compared_metrics), the bootstrap resamples images without
strata (an image carries several findings), McNemar and the collapse rule (both read one
predicted class per image) are not computed, DeLong is on the macro AUROC.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import binomtest, t

from ganaug.stats.collapse import collapse_record
from ganaug.stats.delong import delong_test
from ganaug.stats.metrics import BatchMetric

VERDICTS = ("helped", "hurt", "no clear difference", "not computed")


@dataclass(frozen=True)
class SeedMetric:
    """One metric of one arm's models: observed (S,) on the test split, resampled (S, B) on the
    paired bootstrap resamples of the test images (the same resamples for every arm)."""

    observed: np.ndarray
    resampled: np.ndarray


@dataclass(frozen=True)
class Estimate:
    """A mean (or a difference of means) over seeds with its variance split in two parts."""

    value: float
    var_seed: float  # seed-to-seed part of the estimate's variance (0 with one seed per arm)
    var_test: float  # test-image sampling part
    df: float  # Welch-Satterthwaite degrees of freedom of var_seed + var_test (inf when exact)

    @property
    def se(self) -> float:
        return math.sqrt(self.var_seed + self.var_test)

    def interval(self, level: float) -> tuple[float, float]:
        """Two-sided t interval at `level` (a point when the standard error is 0)."""
        if not math.isfinite(self.value):
            return math.nan, math.nan
        half = float(t.ppf(0.5 + level / 2, self.df)) * self.se if self.se > 0 else 0.0
        return self.value - half, self.value + half

    def p_value(self) -> float:
        """Two-sided t test of value = 0 with the same standard error and df as the interval."""
        if not math.isfinite(self.value):
            return math.nan
        if self.se == 0:
            return 1.0 if self.value == 0 else 0.0
        return float(2 * t.sf(abs(self.value) / self.se, self.df))


def satterthwaite_df(components: Sequence[tuple[float, float]]) -> float:
    """Welch-Satterthwaite df of a sum of variance estimates [(variance, its df)]; inf if the sum is 0."""
    total = sum(v for v, _ in components)
    denominator = sum(v * v / d for v, d in components if v > 0)
    return total * total / denominator if denominator > 0 else math.inf


def interaction_variance(resampled: np.ndarray) -> float:
    """var(g)/(N S) of the seed mean, from resampled (S, B): (mean_s var*(m_s) - var*(mean_s m_s)) / (S - 1)."""
    n_seeds = len(resampled)
    if n_seeds < 2:
        return 0.0
    each = float(resampled.var(axis=1, ddof=1).mean())
    of_mean = float(resampled.mean(0).var(ddof=1))
    return max((each - of_mean) / (n_seeds - 1), 0.0)


def _seed_component(observed: np.ndarray) -> tuple[float, float]:
    """(s^2 / S, S - 1); (0, 1) with a single seed (no seed variance can be estimated)."""
    if len(observed) < 2:
        return 0.0, 1.0
    return float(observed.var(ddof=1)) / len(observed), float(len(observed) - 1)


def arm_estimate(m: SeedMetric, n_test: int) -> Estimate:
    """The arm's mean over seeds, its variance over seeds and test sets (module docstring)."""
    if not (np.all(np.isfinite(m.observed)) and np.all(np.isfinite(m.resampled))):
        return Estimate(math.nan, math.nan, math.nan, math.nan)
    seed = _seed_component(m.observed)
    test = max(float(m.resampled.mean(0).var(ddof=1)) - interaction_variance(m.resampled), 0.0)
    return Estimate(float(m.observed.mean()), seed[0], test, satterthwaite_df([seed, (test, n_test - 1)]))


def difference_estimate(arm: SeedMetric, reference: SeedMetric, n_test: int,
                        paired_seeds: bool = False) -> Estimate:
    """arm - reference: seed parts added (or, paired_seeds, taken on the per-seed differences of
    seeds aligned by position), test part on the paired image resamples of the difference."""
    if not all(np.all(np.isfinite(x)) for x in (arm.observed, arm.resampled, reference.observed, reference.resampled)):
        return Estimate(math.nan, math.nan, math.nan, math.nan)
    if paired_seeds:
        assert len(arm.observed) == len(reference.observed), "paired seeds need the same number of seeds"
        seeds = [_seed_component(arm.observed - reference.observed)]
    else:
        seeds = [_seed_component(arm.observed), _seed_component(reference.observed)]
    resampled = arm.resampled.mean(0) - reference.resampled.mean(0)  # (B,)
    test = float(resampled.var(ddof=1)) - interaction_variance(arm.resampled) - interaction_variance(reference.resampled)
    test = max(test, 0.0)
    value = float(arm.observed.mean() - reference.observed.mean())
    return Estimate(value, sum(v for v, _ in seeds), test, satterthwaite_df([*seeds, (test, n_test - 1)]))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (same order as given): the k-th smallest of m is
    multiplied by m - k + 1, then made monotone and capped at 1."""
    p = np.asarray(p_values, dtype=float)
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, (len(p) - np.arange(len(p))) * p[order])
    adjusted = np.empty_like(p)
    adjusted[order] = np.maximum.accumulate(scaled)
    return adjusted.tolist()


def verdict(corrected_low: float, corrected_high: float) -> str:
    """'helped' / 'hurt' only when the corrected interval excludes 0."""
    if not (math.isfinite(corrected_low) and math.isfinite(corrected_high)):
        return "not computed"
    if corrected_low > 0:
        return "helped"
    if corrected_high < 0:
        return "hurt"
    return "no clear difference"


def mcnemar_exact(labels: np.ndarray, proba_arm: np.ndarray, proba_reference: np.ndarray) -> dict[str, Any]:
    """Exact McNemar test on one model's predictions per arm: labels (N,), proba (N, K).
    b = images only the arm gets right, c = only the reference; p = binomial test of b in b + c at 1/2."""
    arm_right = proba_arm.argmax(1) == labels
    reference_right = proba_reference.argmax(1) == labels
    b, c = int(np.sum(arm_right & ~reference_right)), int(np.sum(~arm_right & reference_right))
    p = float(binomtest(b, b + c, 0.5).pvalue) if b + c > 0 else 1.0
    return {"arm_only_correct": b, "reference_only_correct": c, "p_value": p}


def stratified_resamples(labels: np.ndarray, n_bootstrap: int, rng: np.random.Generator) -> np.ndarray:
    """(B, N) indices: each resample draws, within each class, as many test images as the class
    has, with replacement (the test split is stratified, so its class counts are fixed by design;
    every class stays present, so recalls and AUROC are defined on every resample)."""
    index = np.empty((n_bootstrap, len(labels)), dtype=np.int64)
    start = 0
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        index[:, start : start + len(members)] = members[rng.integers(0, len(members), (n_bootstrap, len(members)))]
        start += len(members)
    return index


def iid_resamples(n_images: int, n_bootstrap: int, rng: np.random.Generator) -> np.ndarray:
    """(B, N) indices drawn with replacement from all test images (multi-label data: no class strata)."""
    return rng.integers(0, n_images, (n_bootstrap, n_images))


def seed_metrics(labels: np.ndarray, arms: dict[str, dict[str, np.ndarray]], metrics: dict[str, BatchMetric],
                 index: np.ndarray, chunk: int = 250) -> dict[str, dict[str, SeedMetric]]:
    """{arm: {metric: SeedMetric}}: every model scored on the test split and on each resample."""
    observed = {arm: {name: np.array([fn(labels[None], p[None])[0] for p in seeds.values()]) for name, fn in metrics.items()}
                for arm, seeds in arms.items()}
    resampled: dict[str, dict[str, list[list[np.ndarray]]]] = {
        arm: {name: [[] for _ in seeds] for name in metrics} for arm, seeds in arms.items()}
    for start in range(0, len(index), chunk):
        rows = index[start : start + chunk]  # (b, N)
        y = labels[rows]
        for arm, seeds in arms.items():
            for s, proba in enumerate(seeds.values()):
                p = proba[rows]  # (b, N, K)
                for name, fn in metrics.items():
                    resampled[arm][name][s].append(fn(y, p))
    return {arm: {name: SeedMetric(observed[arm][name], np.stack([np.concatenate(parts) for parts in resampled[arm][name]]))
                  for name in metrics} for arm in arms}


def pool_replicates(m: SeedMetric, keys: Sequence[str], seed_of: Callable[[str], str]) -> tuple[SeedMetric, list[str]]:
    """Average the replicates of each seed (k-fold: a seed's fold models) into one value per seed,
    observed (S,) and resampled (S, B), seeds in first-seen order. The seed is the independent
    unit: folds of one seed share most training images, so their values are correlated, and
    counting them as independent replicates would understate the seed-to-seed variance."""
    seeds = list(dict.fromkeys(seed_of(k) for k in keys))
    if len(seeds) == len(keys):
        return m, list(keys)
    members = [[i for i, k in enumerate(keys) if seed_of(k) == s] for s in seeds]
    return (SeedMetric(np.array([m.observed[i].mean() for i in members]), np.stack([m.resampled[i].mean(0) for i in members])),
            seeds)


def comparison_pairs(arm_ids: Sequence[str], references: Sequence[str]) -> list[tuple[str, str]]:
    """(arm, reference) for every arm and reference, each unordered pair once: a reference is
    compared with the references listed before it only (balanced - real, not also real - balanced)."""
    pairs = []
    for r_index, reference in enumerate(references):
        for arm in arm_ids:
            if arm == reference or (arm in references and references.index(arm) < r_index):
                continue
            pairs.append((arm, reference))
    return pairs


def _clip(interval: tuple[float, float], low: float, high: float) -> tuple[float, float]:
    """An interval clipped to [low, high] (NaN stays NaN)."""
    return tuple(min(max(x, low), high) if math.isfinite(x) else x for x in interval)  # type: ignore[return-value]


def _num(x: float) -> float | None:
    """JSON has no NaN: a metric that cannot be computed is null."""
    return float(x) if x is not None and math.isfinite(x) else None


def compare_arms(labels: np.ndarray, arms: dict[str, dict[str, np.ndarray]], references: Sequence[str],
                 metrics: dict[str, BatchMetric], n_bootstrap: int = 2000, ci: float = 0.95, seed: int = 0, *,
                 pair_seeds: bool = False, collapse_share: float = 0.98, collapse_label_share: float = 0.90,
                 bounds: tuple[float, float] = (0.0, 1.0), chunk: int = 250,
                 seed_of: Callable[[str], str] | None = None) -> dict[str, Any]:
    """Compare arms of classifiers on one test split (method: module docstring).

    labels (N,) class indices or (N, K) multi-hot; arms {arm_id: {seed_key: proba (N, K)}}
    (softmax, or one sigmoid per finding for multi-hot labels); references: arm ids every
    arm is compared with; metrics {name: BatchMetric} (stats.metrics.compared_metrics).
    pair_seeds: pair seeds by key where both arms have the same keys (default: independent).
    seed_of: the seed a replicate key belongs to (k-fold: experiments.folds.seed_of maps
    `seed0_fold2` to `seed0`); replicates of one seed are averaged before the seed variance
    (pool_replicates), so intervals count seeds, not folds. Default: every key is its own seed.
    bounds: the metrics' range; intervals are clipped to it (to +-(high - low) for differences):
    with 2 or 3 seeds the t quantile can reach past it, and the true value never lies there.
    Returns a JSON-able record: `arms` (per arm: seeds, collapsed seeds, per metric mean, std,
    interval, per-seed values) and `comparisons` (one record per (arm, reference, metric))."""
    labels = np.asarray(labels)
    if labels.ndim not in (1, 2):
        raise ValueError(f"labels must be (N,) class indices or (N, K) multi-hot, got shape {labels.shape}")
    multilabel = labels.ndim == 2
    if n_bootstrap < 20:
        raise ValueError(f"n_bootstrap={n_bootstrap}: the test-image variance needs at least 20 resamples")
    missing = [r for r in references if r not in arms]
    if missing:
        raise ValueError(f"references {missing} are not among the arms {list(arms)}")
    for arm, seeds in arms.items():
        if not seeds:
            raise ValueError(f"arm {arm!r} has no seeds")
        for key, proba in seeds.items():
            if proba.ndim != 2 or len(proba) != len(labels) or (multilabel and proba.shape != labels.shape):
                raise ValueError(f"arm {arm!r} seed {key!r}: proba {proba.shape}, expected ({len(labels)}, "
                                 f"{labels.shape[1] if multilabel else 'K'})")
    n_test = len(labels)
    rng = np.random.default_rng(seed)
    index = iid_resamples(n_test, n_bootstrap, rng) if multilabel else stratified_resamples(labels, n_bootstrap, rng)
    scored = seed_metrics(labels, arms, metrics, index, chunk)
    seed_keys = {arm: list(seeds) for arm, seeds in arms.items()}
    if seed_of is not None:
        for arm, seeds in arms.items():
            for name in metrics:
                scored[arm][name], seed_keys[arm] = pool_replicates(scored[arm][name], list(seeds), seed_of)
    caveats = []

    arm_records: dict[str, Any] = {}
    for arm, seeds in arms.items():
        collapse = {} if multilabel else {key: collapse_record(labels, proba, collapse_share, collapse_label_share)
                                          for key, proba in seeds.items()}
        record: dict[str, Any] = {"n_seeds": len(seed_keys[arm]), "seeds": seed_keys[arm], "n_models": len(seeds),
                                  "collapsed_seeds": [k for k, c in collapse.items() if c["collapsed"]],
                                  "predicted_share": {k: c["predicted_share"] for k, c in collapse.items()}, "metrics": {}}
        for name in metrics:
            m = scored[arm][name]
            est = arm_estimate(m, n_test)
            low, high = _clip(est.interval(ci), *bounds)
            record["metrics"][name] = {
                "mean": _num(est.value), "low": _num(low), "high": _num(high),
                "std": _num(float(m.observed.std(ddof=1))) if len(m.observed) > 1 else 0.0,
                "se_seed": _num(math.sqrt(est.var_seed)), "se_test": _num(math.sqrt(est.var_test)),
                "per_seed": {k: _num(float(v)) for k, v in zip(seed_keys[arm], m.observed)}}
        arm_records[arm] = record
        if len(seed_keys[arm]) < 2:
            caveats.append(f"arm {arm!r} has a single seed: its intervals cannot include seed-to-seed variance")
        if record["collapsed_seeds"]:
            caveats.append(f"arm {arm!r}: {len(record['collapsed_seeds'])} of {len(seeds)} seeds collapsed to one class "
                           f"({', '.join(record['collapsed_seeds'])})")

    pairs = comparison_pairs(list(arms), list(references))
    seed_mean = {arm: np.mean(list(seeds.values()), axis=0) for arm, seeds in arms.items()}  # (N, K) seed-averaged
    paired = {pair: pair_seeds and list(arms[pair[0]]) == list(arms[pair[1]]) and len(arms[pair[0]]) > 1 for pair in pairs}
    no_mcnemar = {"arm_only_correct": None, "reference_only_correct": None, "p_value": None}
    mcnemar = {pair: no_mcnemar if multilabel else mcnemar_exact(labels, seed_mean[pair[0]], seed_mean[pair[1]])
               for pair in pairs}
    delong = {pair: delong_test(labels, list(arms[pair[0]].values()), list(arms[pair[1]].values())) for pair in pairs}
    comparisons = []
    span = bounds[1] - bounds[0]
    for name in metrics:
        estimates = {pair: difference_estimate(scored[pair[0]][name], scored[pair[1]][name], n_test, paired[pair])
                     for pair in pairs}
        p_values = {pair: est.p_value() for pair, est in estimates.items()}
        family = [pair for pair in pairs if math.isfinite(p_values[pair])]
        adjusted = dict(zip(family, holm([p_values[pair] for pair in family]))) if family else {}
        corrected_level = 1 - (1 - ci) / max(len(family), 1)
        for pair, est in estimates.items():
            low, high = _clip(est.interval(ci), -span, span)
            c_low, c_high = _clip(est.interval(corrected_level), -span, span)
            comparisons.append({
                "arm": pair[0], "reference": pair[1], "metric": name, "difference": _num(est.value),
                "low": _num(low), "high": _num(high), "corrected_low": _num(c_low), "corrected_high": _num(c_high),
                "corrected_level": corrected_level, "family_size": len(family),
                "se": _num(est.se), "se_seed": _num(math.sqrt(est.var_seed)), "se_test": _num(math.sqrt(est.var_test)),
                "df": _num(est.df) if math.isfinite(est.df) else None, "seeds_paired": paired[pair],
                "p_value": _num(p_values[pair]), "p_holm": _num(adjusted.get(pair, math.nan)),
                "mcnemar_arm_only_correct": mcnemar[pair]["arm_only_correct"],
                "mcnemar_reference_only_correct": mcnemar[pair]["reference_only_correct"],
                "mcnemar_p": mcnemar[pair]["p_value"],
                "delong_auc_difference": _num(delong[pair]["difference"]), "delong_se": _num(delong[pair]["se"]),
                "delong_p": _num(delong[pair]["p_value"]),
                "collapsed_seeds_arm": len(arm_records[pair[0]]["collapsed_seeds"]),
                "collapsed_seeds_reference": len(arm_records[pair[1]]["collapsed_seeds"]),
                "verdict": verdict(c_low, c_high)})
    return {
        "n_test": n_test, "n_bootstrap": n_bootstrap, "ci_level": ci, "bootstrap_seed": seed,
        "references": list(references), "metrics": list(metrics),
        "interval": ("mean over seeds +- t quantile x sqrt(seed variance / seeds + test-image variance from a "
                     f"{'' if multilabel else 'class-stratified '}paired bootstrap), Welch-Satterthwaite df"),
        "correction": "Holm over the (arm, reference) comparisons of each metric; corrected interval at 1 - alpha/m",
        "paired_test": ("exact McNemar on the predictions of the seed-averaged probabilities" if not multilabel else
                        "McNemar not computed (multi-label: no single predicted class)")
                       + "; DeLong on the difference of the mean over seeds of AUROC (test images only)",
        "label_kind": "multi_hot" if multilabel else "class_index",
        "collapse_rule": ("not applied (multi-label: no single predicted class)" if multilabel else
                          f"a seed collapsed when one class receives >= {collapse_share:.0%} of its test predictions "
                          f"while it is < {collapse_label_share:.0%} of the test labels"),
        "arms": arm_records, "comparisons": comparisons, "caveats": caveats,
    }


def find_comparison(result: dict[str, Any], arm: str, reference: str, metric: str) -> dict[str, Any] | None:
    """The comparison record of (arm, reference, metric) in compare_arms' result, or None."""
    for record in result["comparisons"]:
        if (record["arm"], record["reference"], record["metric"]) == (arm, reference, metric):
            return record
    return None
