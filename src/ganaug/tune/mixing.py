"""The mixing study: how many synthetic images (and which filter, threshold and classifier
learning rate) to add to the real train split, with a fixed generator.

A trial takes, for every class the generator makes, the first round(synthetic_ratio x the largest
real train class) images of that class's seeded stream (`TrainedGenerator.sample_stream` with
synthesize.seed), through the filter when there is one (`quality.filters.draw_filtered`: the
first passing candidates): exactly the images the synthesize stage writes and the
`synthetic-<ratio>` arm trains on with the same params, so `tune apply mixing` reproduces the
trial in the pipeline. It trains one classifier per seed of tune.mixing_seeds on real train +
those images, selects each one's epoch on the real validation split as the arms do, and scores
it on that same validation split (tune.mixing_objective). The value is the mean over the seeds;
every trial uses the same seeds, so trials differ by their configuration only (paired, which
Optuna's WilcoxonPruner needs). The validation score is optimistic (it also chose the epoch), the
same for every trial: it ranks configurations, the final test evaluation measures the chosen one.

The final evaluation (`final_test`) is the only function here that sees the test split: the
chosen configuration, real-only and the real-only controls among evaluate.references (`balanced`,
`classic`), trained with the same seeds and classifier params, compared by
`ganaug.stats.compare.compare_arms` (the evaluate stage's statistics). A gain over real-only that
a control matches is not reported as "helped" (`final_verdict`): the brief's first rule.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import mlflow
import numpy as np
import optuna
import torch

from ganaug.classify.train import predict_proba, train_classifier
from ganaug.classify.augment import ClassicAugment
from ganaug.config import (ArmsConfig, ClassicAugmentConfig, ClassifierConfig, EvaluateConfig, SynthesizeConfig,
                           TuneConfig, flatten)
from ganaug.experiments.arms import REAL_FAMILIES, Arm, arm_training_set, parse_arm, train_options
from ganaug.gan.generator import TrainedGenerator
from ganaug.io import kill_point
from ganaug.quality.filters import FilterError, Scorer, draw_filtered
from ganaug.stats.compare import compare_arms, find_comparison
from ganaug.stats.metrics import BatchMetric, batch_balanced_accuracy, batch_macro_f1, batch_recall, compared_metrics
from ganaug.stats.report import unconfirmed_gains
from ganaug.tracking import runs
from ganaug.tracking.mlflow_utils import metric_key
from ganaug.tune.space import suggest_mixing
from ganaug.tune.storage import WORKER_ATTR, original_trial_number, worker_identity

RUN_ID_ATTR = "mlflow_run_id"  # trial user attribute: the trial's nested MLflow run
STOPPED_ATTR = "stopped"  # trial user attribute: why the trial stopped early (pruned, filter short of images)
FINAL_ATTR = "ganaug.final_test"  # study user attribute: the one test evaluation of the chosen trial
MIXED_ARM, REAL_ARM = "mixing", "real"  # arm ids of the final comparison


@dataclass(frozen=True)
class MixingData:
    """What every trial of a mixing study trains on and is scored against (no test split)."""

    train_images: np.ndarray  # (N, C, H, W) uint8: the real train split
    train_labels: np.ndarray  # (N,) int64 class indices
    val_images: np.ndarray  # (M, C, H, W) uint8: the real validation split (epoch selection and the objective)
    val_labels: np.ndarray  # (M,)
    class_names: list[str]
    device: torch.device
    dataset_hash: str

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def real_counts(self) -> list[int]:
        return np.bincount(self.train_labels, minlength=self.n_classes).tolist()

    @property
    def minority(self) -> int:
        """The class with the fewest real train images (the one synthetic images are meant to help)."""
        return int(np.argmin(self.real_counts))


@dataclass(frozen=True)
class MixingChoice:
    """One configuration of the study: what the synthesize stage and the mixed arm would use."""

    synthetic_ratio: float  # synthetic images per generated class / real train images of the largest class
    filter: str  # synthesize.filter
    filter_threshold: float  # synthesize.filter_threshold (unused when filter is none)
    classifier: ClassifierConfig  # classifier params (lr, weight_decay possibly searched), for both arms


def choice_of(sampled: dict[str, Any], classifier: ClassifierConfig, synthesize: SynthesizeConfig,
              default_ratio: float) -> MixingChoice:
    """The trial's values over the params' own (keys the space does not search keep them;
    synthetic_ratio defaults to `default_ratio`, the largest of arms.ratios)."""
    searched = {k: sampled[k] for k in ("lr", "weight_decay") if k in sampled}
    return MixingChoice(float(sampled.get("synthetic_ratio", default_ratio)), sampled.get("filter", synthesize.filter),
                        float(sampled.get("filter_threshold", synthesize.filter_threshold)),
                        dataclasses.replace(classifier, **searched))


def objective_metric(objective: str, minority: int) -> BatchMetric:
    """tune.mixing_objective as a batch metric (labels (B, N), proba (B, N, K)) -> (B,)."""
    if objective == "minority_recall":
        return lambda y, p: batch_recall(y, p, minority)
    return {"balanced_accuracy": batch_balanced_accuracy, "macro_f1": batch_macro_f1}[objective]


def compared_name(objective: str, class_names: list[str], minority: int) -> str:
    """tune.mixing_objective's name among `stats.metrics.compared_metrics`."""
    return f"recall_{metric_key(class_names[minority])}" if objective == "minority_recall" else objective


class SyntheticPool:
    """Every generated class's seeded stream, sampled once and cached as trials ask for more
    (a stream's image i does not depend on how many are asked for), with the filters' scorers."""

    def __init__(self, generator: TrainedGenerator, seed: int, batch_size: int, max_draws: float,
                 scorers: dict[str, Callable[[], Scorer]]):
        self.generator = generator
        self.seed, self.batch_size, self.max_draws = seed, batch_size, max_draws
        self._factories = scorers  # filter name -> builds its scorer (loaded only when a trial uses it)
        self._scorers: dict[str, Scorer] = {}
        self._streams: dict[int, np.ndarray] = {}  # class -> (n, C, H, W) uint8, its stream's first n images

    @property
    def classes(self) -> list[int]:
        return list(self.generator.trained_classes)

    def stream(self, class_index: int, start: int, n: int) -> np.ndarray:
        """Images [start, start + n) of the class's stream (synthesize's `sample_stream` call)."""
        have = self._streams.get(class_index)
        size = 0 if have is None else len(have)
        if start + n > size:
            more = self.generator.sample_stream(class_index, size, start + n - size, self.seed, self.batch_size)
            have = more if have is None else np.concatenate([have, more])
            self._streams[class_index] = have
        return have[start:start + n]

    def take(self, counts: dict[int, int], filter_name: str, threshold: float) -> tuple[np.ndarray, np.ndarray, dict[int, float]]:
        """(images (S, C, H, W) uint8, labels (S,), acceptance per class): counts[c] images of each
        class, class by class, the first of the stream or the first passing the filter."""
        counts = dict(sorted(counts.items()))
        if filter_name == "none":
            images = [self.stream(c, 0, n) for c, n in counts.items()]
            labels = [np.full(n, c, np.int64) for c, n in counts.items()]
            return np.concatenate(images), np.concatenate(labels), {c: 1.0 for c in counts}
        if filter_name not in self._scorers:
            self._scorers[filter_name] = self._factories[filter_name]()
        draw = draw_filtered(self.stream, counts, self._scorers[filter_name], threshold, self.max_draws, filter_name)
        acceptance = {c: float(draw.drawn_kept[draw.drawn_labels == c].mean()) for c in counts}
        return draw.images, draw.labels, acceptance


def synthetic_counts(real_counts: list[int], classes: list[int], ratio: float) -> dict[int, int]:
    """round(ratio x the largest real class) for every generated class (as arms.mixing_counts)."""
    wanted = int(round(ratio * max(real_counts)))
    if wanted < 1:
        raise ValueError(f"tune.mixing_space.synthetic_ratio: {ratio} x {max(real_counts)} real images of the largest "
                         "class rounds to 0 synthetic images; raise the ratio's lower bound")
    return {c: wanted for c in classes}


def mixed_training_set(choice: MixingChoice, data: MixingData, pool: SyntheticPool) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Real train + the choice's synthetic images, through the arms' own `arm_training_set`
    (the `synthetic-<ratio>` arm); info adds the filter's acceptance per class."""
    counts = synthetic_counts(data.real_counts, pool.classes, choice.synthetic_ratio)
    images, labels, acceptance = pool.take(counts, choice.filter, choice.filter_threshold)
    arm = Arm(f"synthetic-{choice.synthetic_ratio}", "synthetic", choice.synthetic_ratio, True, classic=False, balanced=False)
    train_images, train_labels, info = arm_training_set(arm, data.train_images, data.train_labels, images, labels)
    return train_images, train_labels, {**info, "acceptance": acceptance}


def train_seed(images: np.ndarray, labels: np.ndarray, data: MixingData, cfg: ClassifierConfig, seed: int,
               desc: str, balance: str = "none", augment_config: ClassicAugmentConfig | None = None) -> torch.nn.Module:
    """One classifier on (images, labels), its epoch selected on the real validation split
    (balance and augment_config as `experiments.arms.train_options` gives them for a control)."""
    augment = ClassicAugment(augment_config) if augment_config is not None else None
    result = train_classifier(images, labels, data.val_images, data.val_labels, data.n_classes, cfg.arch, cfg.epochs,
                              cfg.batch_size, cfg.lr, cfg.weight_decay, cfg.patience, seed, data.device,
                              schedule=cfg.schedule, select=cfg.select, balance=balance, augment=augment, desc=desc)
    return result.model


def run_trial(trial: optuna.Trial, study: optuna.Study, tune: TuneConfig, classifier: ClassifierConfig,
              synthesize: SynthesizeConfig, default_ratio: float, data: MixingData, pool: SyntheticPool,
              parent_run_id: str, worker_index: int = 0) -> float:
    """Train tune.mixing_seeds classifiers on the trial's mix and return their mean validation
    score (higher is better); raises `optuna.TrialPruned` when the pruner stops it between
    seeds or the filter cannot find enough images."""
    trial.set_user_attr(WORKER_ATTR, worker_identity())  # fail_dead_trials reads it
    sampled = suggest_mixing(trial, tune.mixing_space, synthesize.filter)
    choice = choice_of(sampled, classifier, synthesize, default_ratio)
    number = original_trial_number(study, trial)
    metric = objective_metric(tune.mixing_objective, data.minority)
    key = f"val_{tune.mixing_objective}"
    tags = {"mlflow.parentRunId": parent_run_id, "optuna.study": study.study_name, "optuna.trial": str(trial.number),
            "optuna.retry_of": str(number) if number != trial.number else "", "data.dataset_hash": data.dataset_hash}
    with runs.start_run("tune_mixing_trial", runs.input_key(study=study.study_name, trial=number, parent=parent_run_id),
                        run_name=f"{study.study_name}-trial-{trial.number}", tags=tags) as run:
        trial.set_user_attr(RUN_ID_ATTR, run.info.run_id)
        mlflow.log_params({**{f"mixing.{k}": v for k, v in sampled.items()}, **flatten(choice.classifier, "classifier"),
                           "synthesize.filter": choice.filter, "tune.objective": key, "tune.trial": trial.number,
                           "tune.mixing_seeds": str(list(tune.mixing_seeds))})
        try:
            images, labels, info = mixed_training_set(choice, data, pool)
        except FilterError as exc:  # a threshold too strict for this generator: a clearly bad configuration
            reason = str(exc).split(";")[0]
            trial.set_user_attr(STOPPED_ATTR, reason)
            mlflow.set_tags({"optuna.state": "pruned", "optuna.reason": reason})
            raise optuna.TrialPruned(reason) from exc
        synthetic = info["train_counts"]["synthetic"]
        mlflow.log_params({f"n_train_synthetic_{metric_key(data.class_names[c])}": n for c, n in synthetic.items() if n}
                          | {"n_train_images": len(images)})
        if choice.filter != "none":
            mlflow.log_metrics({f"filter_acceptance_{metric_key(data.class_names[c])}": a for c, a in info["acceptance"].items()})
        values: list[float] = []
        for step, seed in enumerate(tune.mixing_seeds):
            kill_point(f"tune_seed:worker{worker_index}")  # tests: SIGKILL one worker mid-trial
            model = train_seed(images, labels, data, choice.classifier, seed, f"trial {trial.number} seed {seed}")
            proba = predict_proba(model, data.val_images, data.device)  # (M, K)
            values.append(float(metric(data.val_labels[None], proba[None])[0]))
            mean = float(np.mean(values))
            mlflow.log_metrics({key: values[-1], f"{key}_running_mean": mean}, step=step)
            # wilcoxon pairs each seed's value with the best trial's same seed; median compares running means
            trial.report(values[-1] if tune.mixing_pruner == "wilcoxon" else mean, step=step)
            if trial.should_prune():
                reason = f"{key} running mean {mean:.4g} after {step + 1} of {len(tune.mixing_seeds)} seeds"
                mlflow.set_tags({"optuna.state": "pruned", "optuna.reason": reason})
                raise optuna.TrialPruned(reason)
        mlflow.log_metric("objective", mean)
        mlflow.set_tags({"optuna.state": "complete", "optuna.reason": f"{key}={mean:.4g}"})
        return mean


def make_pruner(tune: TuneConfig) -> optuna.pruners.BasePruner:
    """tune.mixing_pruner over seeds (steps 0..S-1): median of running means from the second seed
    (after tune.startup_trials trials), Wilcoxon against the best trial, or none."""
    if tune.mixing_pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=tune.startup_trials, n_warmup_steps=1)
    if tune.mixing_pruner == "wilcoxon":
        return optuna.pruners.WilcoxonPruner(p_threshold=0.1, n_startup_steps=2)
    return optuna.pruners.NopPruner()


def final_references(evaluate: EvaluateConfig) -> list[str]:
    """The arms the chosen configuration is compared with: real-only first, then the real-only
    controls (balanced, classic) among evaluate.references, each trained on the same seeds."""
    return [REAL_ARM] + [r for r in evaluate.references if r in REAL_FAMILIES and r != REAL_ARM]


def final_verdict(result: dict[str, Any], comparison: dict[str, Any]) -> str:
    """The verdict of `comparison` (mixing - real-only, a record of `result`), unless it helped
    there but not against a control: then "helped (not against balanced)"
    (`stats.report.unconfirmed_gains`), so a gain that class balance or classic augmentation gives
    without synthetic images is never "helped"."""
    missed = unconfirmed_gains(result).get((comparison["arm"], comparison["metric"]))
    return f"helped (not against {', '.join(missed)})" if missed and comparison["verdict"] == "helped" \
        else comparison["verdict"]


def final_test(choice: MixingChoice, data: MixingData, pool: SyntheticPool, test_images: np.ndarray,
               test_labels: np.ndarray, seeds: list[int], evaluate: EvaluateConfig, objective: str,
               arms_cfg: ArmsConfig) -> dict[str, Any]:
    """The chosen configuration, real-only and the controls of `final_references` (balanced:
    arms.balance; classic: arms.classic), one classifier per seed each (same seeds, same classifier
    params, epochs selected on validation), predicted once on the test split and compared with
    `compare_arms` (evaluate.n_bootstrap, evaluate.ci, evaluate.seed, Holm over every comparison).
    Returns {"comparison": the objective's mixing - real record, "controls": {control: the
    mixing - control record}, "verdict": `final_verdict`, "result": compare_arms' whole record,
    "train_counts"}."""
    images, labels, info = mixed_training_set(choice, data, pool)
    references = final_references(evaluate)
    training = {ref: (data.train_images, data.train_labels, train_options(parse_arm(ref, arms_cfg), arms_cfg))
                for ref in references}
    training[MIXED_ARM] = (images, labels, {"balance": "none", "augment_config": None})
    arms: dict[str, dict[str, np.ndarray]] = {arm: {} for arm in training}
    for seed in seeds:
        for arm, (x, y, options) in training.items():
            model = train_seed(x, y, data, choice.classifier, seed, f"final {arm} seed {seed}", **options)
            arms[arm][f"seed{seed}"] = predict_proba(model, test_images, data.device)  # (N_test, K)
    result = compare_arms(test_labels, arms, references, compared_metrics(data.minority, data.class_names),
                          evaluate.n_bootstrap, evaluate.ci, evaluate.seed)
    name = compared_name(objective, data.class_names, data.minority)
    comparison = find_comparison(result, MIXED_ARM, REAL_ARM, name)
    assert comparison is not None, f"compare_arms returned no {MIXED_ARM} vs {REAL_ARM} record for {name}"
    return {"comparison": comparison, "controls": {ref: find_comparison(result, MIXED_ARM, ref, name) for ref in references[1:]},
            "verdict": final_verdict(result, comparison), "result": result,
            "train_counts": {part: {data.class_names[c]: int(n) for c, n in counts.items()}
                             for part, counts in info["train_counts"].items()}}
