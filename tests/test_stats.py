"""The statistics of the arms' comparison (ganaug.stats): metrics against scikit-learn, the
interval's parts against closed forms and scipy, Holm by hand, McNemar against scipy's binomial
test, collapse detection, and the interval's coverage by simulation with 3 seeds per arm."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.stats import binom, binomtest, norm, ttest_ind
from sklearn.metrics import balanced_accuracy_score, f1_score, recall_score, roc_auc_score

from ganaug.stats.collapse import collapse_record, collapsed_seeds
from ganaug.stats.compare import (
    SeedMetric,
    arm_estimate,
    compare_arms,
    comparison_pairs,
    difference_estimate,
    find_comparison,
    holm,
    interaction_variance,
    mcnemar_exact,
    seed_metrics,
    stratified_resamples,
    verdict,
)
from ganaug.stats.metrics import (
    batch_accuracy,
    batch_balanced_accuracy,
    batch_macro_f1,
    batch_recall,
    batch_roc_auc,
    compared_metrics,
)

NAMES = ["normal", "pneumonia"]


def random_predictions(n=300, k=2, seed=0, skill=1.0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + skill * np.eye(k)[labels]
    logits = np.round(logits, 1)  # ties, which the rank AUC must average like sklearn
    proba = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return labels, proba


# ---------------------------------------------------------------------------------- metrics


@pytest.mark.parametrize("k", [2, 3])
def test_batch_metrics_equal_sklearn(k):
    labels, proba = random_predictions(k=k)
    pred = proba.argmax(1)
    one = (labels[None], proba[None])
    assert batch_accuracy(*one)[0] == pytest.approx((pred == labels).mean())
    assert batch_balanced_accuracy(*one)[0] == pytest.approx(balanced_accuracy_score(labels, pred))
    assert batch_recall(*one, 0)[0] == pytest.approx(recall_score(labels, pred, labels=[0], average=None)[0])
    assert batch_macro_f1(*one)[0] == pytest.approx(f1_score(labels, pred, average="macro", labels=range(k), zero_division=0))
    expected_auc = roc_auc_score(labels, proba[:, 1]) if k == 2 else roc_auc_score(labels, proba, multi_class="ovr")
    assert batch_roc_auc(*one)[0] == pytest.approx(expected_auc)


def test_macro_f1_of_a_class_never_predicted_is_zero_like_sklearn():
    labels = np.array([0, 0, 1, 1, 2, 2])
    proba = np.eye(3)[[0, 1, 1, 1, 0, 0]]  # class 2 never predicted
    expected = f1_score(labels, proba.argmax(1), average="macro", labels=range(3), zero_division=0)
    assert batch_macro_f1(labels[None], proba[None])[0] == pytest.approx(expected)


def test_batch_metrics_on_many_resamples_match_one_by_one():
    labels, proba = random_predictions()
    index = np.random.default_rng(1).integers(0, len(labels), (5, len(labels)))
    np.testing.assert_allclose(batch_roc_auc(labels[index], proba[index]), [roc_auc_score(labels[i], proba[i][:, 1]) for i in index])
    np.testing.assert_allclose(batch_macro_f1(labels[index], proba[index]),
                               [f1_score(labels[i], proba[i].argmax(1), average="macro") for i in index])


def test_compared_metrics_name_the_minority_recall():
    metrics = compared_metrics(1, ["normal", "pneumonia, viral"])
    assert list(metrics) == ["balanced_accuracy", "accuracy", "macro_f1", "roc_auc", "recall_pneumonia_viral"]
    labels, proba = random_predictions()
    assert metrics["recall_pneumonia_viral"](labels[None], proba[None])[0] == pytest.approx(
        recall_score(labels, proba.argmax(1), labels=[1], average=None)[0])


# ---------------------------------------------------------------------------------- interval parts


def test_stratified_resamples_keep_every_class_count():
    labels = np.array([0] * 7 + [1] * 20 + [2] * 3)
    np.random.default_rng(0).shuffle(labels)
    index = stratified_resamples(labels, 50, np.random.default_rng(1))
    assert index.shape == (50, 30)
    for row in index:
        np.testing.assert_array_equal(np.bincount(labels[row], minlength=3), [7, 20, 3])


def test_test_part_of_a_paired_accuracy_difference_matches_the_closed_form():
    """One seed per arm: the difference of accuracies is the mean of d_i = right_arm_i - right_ref_i;
    under class-stratified resampling its variance is sum_c (n_c / N)^2 var_c(d) / n_c."""
    rng = np.random.default_rng(3)
    labels = np.repeat([0, 1], [120, 180])
    right_ref = rng.random(300) < 0.7
    right_arm = np.where(rng.random(300) < 0.8, right_ref, rng.random(300) < 0.8)  # correlated with the reference
    as_proba = lambda right: np.eye(2)[np.where(right, labels, 1 - labels)]  # noqa: E731
    index = stratified_resamples(labels, 8000, rng)
    scored = seed_metrics(labels, {"arm": {"s0": as_proba(right_arm)}, "ref": {"s0": as_proba(right_ref)}},
                          {"accuracy": batch_accuracy}, index)
    est = difference_estimate(scored["arm"]["accuracy"], scored["ref"]["accuracy"], len(labels))
    d = right_arm.astype(float) - right_ref
    closed = sum((np.sum(labels == c) / 300) ** 2 * d[labels == c].var() / np.sum(labels == c) for c in (0, 1))
    assert est.value == pytest.approx(d.mean())
    assert est.var_seed == 0 and est.var_test == pytest.approx(closed, rel=0.06)


def test_interaction_variance_is_the_seed_specific_part_of_the_test_variance():
    """resampled[s] = u + v_s (u shared by the seeds, v_s each seed's own): the interaction of the
    seed mean is var(v)/S and the arm's test part is var(u)."""
    rng = np.random.default_rng(4)
    shared, own = rng.normal(0, 0.03, 20000), rng.normal(0, 0.05, (3, 20000))
    resampled = 0.8 + shared + own
    assert interaction_variance(resampled) == pytest.approx(0.05**2 / 3, rel=0.05)
    est = arm_estimate(SeedMetric(np.array([0.7, 0.8, 0.9]), resampled), n_test=300)
    assert est.var_test == pytest.approx(0.03**2, rel=0.05)
    assert est.var_seed == pytest.approx(np.var([0.7, 0.8, 0.9], ddof=1) / 3)


def test_without_test_variance_the_difference_is_welchs_t_interval():
    """Resamples that do not move (no test-image variance): the interval and p-value are exactly
    Welch's t test of the per-seed values (scipy)."""
    arm, ref = np.array([0.81, 0.86, 0.78]), np.array([0.70, 0.79, 0.74, 0.72])
    constant = lambda v: SeedMetric(v, np.repeat(v[:, None], 50, axis=1))  # noqa: E731
    est = difference_estimate(constant(arm), constant(ref), n_test=500)
    welch = ttest_ind(arm, ref, equal_var=False)
    assert est.p_value() == pytest.approx(welch.pvalue)
    low, high = est.interval(0.95)
    expected = welch.confidence_interval(0.95)
    assert (low, high) == (pytest.approx(expected.low), pytest.approx(expected.high))


def test_paired_seeds_use_the_per_seed_differences():
    arm, ref = np.array([0.81, 0.86, 0.78]), np.array([0.75, 0.80, 0.73])
    constant = lambda v: SeedMetric(v, np.repeat(v[:, None], 50, axis=1))  # noqa: E731
    est = difference_estimate(constant(arm), constant(ref), n_test=500, paired_seeds=True)
    d = arm - ref
    assert est.var_seed == pytest.approx(d.var(ddof=1) / 3) and est.df == pytest.approx(2)


def test_holm_matches_a_hand_computed_example():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> monotone 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm([0.02]) == pytest.approx([0.02])


@pytest.mark.parametrize(("b", "c"), [(12, 3), (5, 5), (0, 7), (0, 0)])
def test_mcnemar_exact_equals_scipys_binomial_test(b, c):
    # images: b only the arm gets right, c only the reference, 10 both, 4 neither
    labels = np.zeros(b + c + 14, dtype=int)
    arm_right = np.array([1] * b + [0] * c + [1] * 10 + [0] * 4, dtype=bool)
    ref_right = np.array([0] * b + [1] * c + [1] * 10 + [0] * 4, dtype=bool)
    as_proba = lambda right: np.eye(2)[np.where(right, 0, 1)]  # noqa: E731
    result = mcnemar_exact(labels, as_proba(arm_right), as_proba(ref_right))
    assert (result["arm_only_correct"], result["reference_only_correct"]) == (b, c)
    expected = binomtest(b, b + c, 0.5).pvalue if b + c else 1.0
    assert result["p_value"] == pytest.approx(expected)
    if b + c:
        assert result["p_value"] == pytest.approx(min(1.0, 2 * binom.cdf(min(b, c), b + c, 0.5)))


def test_verdict_only_when_corrected_interval_excludes_zero():
    assert verdict(0.01, 0.2) == "helped" and verdict(-0.2, -0.01) == "hurt"
    assert verdict(-0.01, 0.2) == "no clear difference" and verdict(math.nan, 0.1) == "not computed"


def test_each_pair_of_references_is_compared_once():
    pairs = comparison_pairs(["real", "balanced", "classic", "synthetic-0.5"], ["real", "balanced"])
    assert pairs == [("balanced", "real"), ("classic", "real"), ("synthetic-0.5", "real"),
                     ("classic", "balanced"), ("synthetic-0.5", "balanced")]


# ---------------------------------------------------------------------------------- compare_arms


def model(labels, accuracy, rng, k=2):
    """A model right on a random `accuracy` share of the images, with soft probabilities."""
    right = rng.random(len(labels)) < accuracy
    pred = np.where(right, labels, (labels + 1) % k)
    return np.eye(k)[pred] * 0.7 + 0.3 / k + rng.normal(0, 0.01, (len(labels), k)).clip(0)


def test_identical_arms_differ_by_zero():
    labels, proba = random_predictions()
    arms = {"real": {"seed0": proba, "seed1": proba}, "balanced": {"seed0": proba, "seed1": proba}}
    result = compare_arms(labels, arms, ["real"], compared_metrics(0, NAMES), n_bootstrap=200)
    assert len(result["comparisons"]) == 5
    for record in result["comparisons"]:
        assert record["difference"] == 0 and record["low"] == 0 == record["high"]
        assert record["p_value"] == 1 and record["verdict"] == "no clear difference"
    json.dumps(result, allow_nan=False)  # JSON-able, no NaN


def test_a_clear_gain_is_helped_a_clear_loss_hurt_and_intervals_nest():
    rng = np.random.default_rng(5)
    labels = np.repeat([0, 1], [150, 250])
    arms = {"real": {f"seed{s}": model(labels, a, rng) for s, a in enumerate([0.70, 0.72, 0.68])},
            "balanced": {f"seed{s}": model(labels, a, rng) for s, a in enumerate([0.71, 0.69, 0.70])},
            "synthetic-1.0": {f"seed{s}": model(labels, a, rng) for s, a in enumerate([0.90, 0.92, 0.91])},
            "synthetic_only": {f"seed{s}": model(labels, a, rng) for s, a in enumerate([0.50, 0.52, 0.49])}}
    result = compare_arms(labels, arms, ["real", "balanced"], compared_metrics(0, NAMES), n_bootstrap=400)
    gain = find_comparison(result, "synthetic-1.0", "real", "balanced_accuracy")
    loss = find_comparison(result, "synthetic_only", "balanced", "accuracy")
    assert gain["verdict"] == "helped" and loss["verdict"] == "hurt"
    assert find_comparison(result, "real", "balanced", "accuracy") is None  # once per pair: balanced - real
    assert find_comparison(result, "balanced", "real", "accuracy")["verdict"] == "no clear difference"
    assert result["comparisons"][0]["family_size"] == 5 and result["comparisons"][0]["corrected_level"] == pytest.approx(0.99)
    for record in result["comparisons"]:
        assert record["corrected_low"] <= record["low"] <= record["difference"] <= record["high"] <= record["corrected_high"]
        assert (record["p_value"] < 0.05) == (record["low"] > 0 or record["high"] < 0)  # p agrees with the interval
        if record["verdict"] in ("helped", "hurt"):
            assert record["p_holm"] < 0.05  # corrected interval excludes 0 => Holm rejects
    arm = result["arms"]["synthetic-1.0"]["metrics"]["accuracy"]
    assert arm["low"] < arm["mean"] < arm["high"] and set(arm["per_seed"]) == {"seed0", "seed1", "seed2"}
    assert arm["mean"] == pytest.approx(np.mean(list(arm["per_seed"].values())))


def test_seed_variance_widens_the_interval():
    rng = np.random.default_rng(6)
    labels = np.repeat([0, 1], [200, 200])
    steady = {f"seed{s}": model(labels, 0.75, rng) for s in range(3)}
    noisy = {f"seed{s}": model(labels, a, rng) for s, a in enumerate([0.95, 0.55, 0.75])}
    metrics = {"accuracy": batch_accuracy}
    other = {f"seed{s}": model(labels, 0.75, rng) for s in range(3)}
    narrow = compare_arms(labels, {"real": steady, "b": other}, ["real"], metrics, n_bootstrap=300)["comparisons"][0]
    wide = compare_arms(labels, {"real": steady, "b": noisy}, ["real"], metrics, n_bootstrap=300)["comparisons"][0]
    assert wide["se_seed"] > 3 * wide["se_test"] and wide["high"] - wide["low"] > 0.3
    assert narrow["high"] - narrow["low"] < 0.25 * (wide["high"] - wide["low"])


# ---------------------------------------------------------------------------------- collapse


def test_collapse_rule():
    labels = np.repeat([0, 1], [100, 100])
    all_one = np.eye(2)[np.r_[np.ones(199, int), 0]]
    assert collapse_record(labels, all_one) == {"collapsed": True, "top_class": 1, "predicted_share": 0.995, "label_share": 0.5}
    rng = np.random.default_rng(7)
    assert not collapse_record(labels, model(labels, 0.8, rng))["collapsed"]
    lopsided = np.repeat([0, 1], [8, 192])  # 96 % one class: predicting it always is not flagged
    assert not collapse_record(lopsided, np.eye(2)[np.ones(200, int)])["collapsed"]
    assert collapsed_seeds(labels, {"s0": model(labels, 0.8, rng), "s1": all_one}) == ["s1"]


def test_compare_arms_counts_collapsed_seeds():
    rng = np.random.default_rng(8)
    labels = np.repeat([0, 1], [100, 200])
    collapsed = np.eye(2)[np.ones(300, int)] * 0.9 + 0.05
    arms = {"real": {"seed0": model(labels, 0.8, rng), "seed1": collapsed, "seed2": model(labels, 0.8, rng)},
            "balanced": {f"seed{s}": model(labels, 0.8, rng) for s in range(3)}}
    result = compare_arms(labels, arms, ["real"], compared_metrics(0, NAMES), n_bootstrap=200)
    assert result["arms"]["real"]["collapsed_seeds"] == ["seed1"] and result["arms"]["balanced"]["collapsed_seeds"] == []
    assert any("1 of 3 seeds collapsed" in c for c in result["caveats"])
    record = find_comparison(result, "balanced", "real", "accuracy")
    assert (record["collapsed_seeds_arm"], record["collapsed_seeds_reference"]) == (0, 1)


def test_intervals_stay_in_the_metrics_range():
    """Two seeds that disagree wildly: t with 1 df reaches far past [0, 1]; the interval is clipped."""
    rng = np.random.default_rng(9)
    labels = np.repeat([0, 1], [100, 100])
    arms = {"real": {"s0": model(labels, 0.95, rng), "s1": model(labels, 0.05, rng)},
            "b": {"s0": model(labels, 0.9, rng), "s1": model(labels, 0.1, rng)}}
    result = compare_arms(labels, arms, ["real"], {"accuracy": batch_accuracy}, n_bootstrap=100)
    arm = result["arms"]["real"]["metrics"]["accuracy"]
    assert (arm["low"], arm["high"]) == (0.0, 1.0)
    record = result["comparisons"][0]
    assert (record["corrected_low"], record["corrected_high"]) == (-1.0, 1.0) and record["verdict"] == "no clear difference"


# ---------------------------------------------------------------------------------- coverage


def simulate_two_arms(rng, n_per_class=(100, 200), seeds=3, tau=0.25, thresholds=((0.5, 1.2), (0.3, 1.2))):
    """A population with a known difference. Model s of an arm is right on image i when
    0.5 z_i + 0.5 w_ai + sqrt(0.5) e_si < c_{arm, class} + alpha_s: z an image effect shared by
    both arms (pairing by image matters), w the arm's own image effect, e seed-by-image noise,
    alpha ~ N(0, tau^2) the seed effect. P(right | class) = Phi(c / sqrt(1 + tau^2)), so the true
    balanced accuracy of an arm is the mean of that over the classes."""
    labels = np.repeat(np.arange(2), n_per_class)
    z = rng.normal(size=len(labels))
    arms = {}
    for name, c in zip(("arm", "ref"), thresholds):
        w = rng.normal(size=len(labels))
        arms[name] = {}
        for s in range(seeds):
            latent = 0.5 * z + 0.5 * w + math.sqrt(0.5) * rng.normal(size=len(labels))
            right = latent < np.asarray(c)[labels] + rng.normal(0, tau)
            arms[name][f"seed{s}"] = np.eye(2)[np.where(right, labels, 1 - labels)] * 0.8 + 0.1
    truth = [np.mean(norm.cdf(np.asarray(c) / math.sqrt(1 + tau**2))) for c in thresholds]
    return labels, arms, truth[0] - truth[1], truth[0]


def test_interval_coverage_with_three_seeds_and_naive_undercoverage():
    """200 simulated experiments, 3 seeds per arm: the 95 % interval of the difference covers the
    true difference about 95 % of the time; an interval over test images only (seeds fixed, the
    old paired bootstrap) misses it far more often, because seed variance is ignored."""
    rng = np.random.default_rng(11)
    repeats, covered, covered_arm, covered_naive = 200, 0, 0, 0
    for _ in range(repeats):
        labels, arms, true_difference, true_arm = simulate_two_arms(rng)
        index = stratified_resamples(labels, 200, rng)
        scored = seed_metrics(labels, arms, {"ba": batch_balanced_accuracy}, index)
        est = difference_estimate(scored["arm"]["ba"], scored["ref"]["ba"], len(labels))
        low, high = est.interval(0.95)
        covered += low <= true_difference <= high
        arm_low, arm_high = arm_estimate(scored["arm"]["ba"], len(labels)).interval(0.95)
        covered_arm += arm_low <= true_arm <= arm_high
        naive = scored["arm"]["ba"].resampled.mean(0) - scored["ref"]["ba"].resampled.mean(0)
        naive_low, naive_high = np.quantile(naive, [0.025, 0.975])
        covered_naive += naive_low <= true_difference <= naive_high
    assert 0.88 <= covered / repeats <= 0.99, covered / repeats
    assert 0.85 <= covered_arm / repeats <= 0.99, covered_arm / repeats  # per-arm band: one df-2 seed part
    assert covered_naive / repeats < 0.8, covered_naive / repeats
