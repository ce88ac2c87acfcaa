"""A study: opened (or resumed) with its settings checked, run by one or several workers
under a fixed total budget, summarised in its parent MLflow run, shown and applied.

Budget: `tune.n_trials` finished (COMPLETE or PRUNED) trials in total, across restarts and
workers. Each worker checks it before asking for a trial, counting the trials others are
running, rather than after each trial as `optuna.study.MaxTrialsCallback` does (with K workers
that overshoots by up to K - 1 trials); failed trials do not count: a killed one is retried.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import optuna  # noqa: E402
import pandas as pd  # noqa: E402
from optuna.trial import TrialState  # noqa: E402
from tqdm import tqdm  # noqa: E402

from ganaug.config import TuneConfig  # noqa: E402
from ganaug.progress import is_terminal  # noqa: E402
from ganaug.tune.space import params_to_gan, params_to_mixing, space_as_dict  # noqa: E402
from ganaug.tune.storage import (fail_dead_trials, open_storage, original_trial_number, redact,  # noqa: E402
                                 resolve_storage_url)

PARENT_RUN_ATTR = "mlflow_parent_run_id"  # study user attribute
SETTINGS_ATTR = "ganaug.settings"  # study user attribute: what the study searches and measures
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
SURPLUS_ATTR = "ganaug.surplus"  # trial user attribute: failed unrun, the budget was full (`run_worker`)
EPOCHS_RUN_ATTR = "epochs_run"  # GAN trial user attribute: epochs trained before it completed or was stopped
LAUNCHED_WORKER_ENV = "GANAUG_TUNE_LAUNCHED_WORKER"  # set by launch_workers: the workers share one terminal


@dataclass(frozen=True)
class StudyKind:
    """What differs between the GAN and the mixing study in the shared machinery below."""

    name: str  # gan | mixing: the `ganaug tune <name>` command
    direction: str  # minimize (GAN: a distance) | maximize (mixing: a validation score)
    decode: Callable[[dict[str, Any]], dict[str, Any]]  # a trial's stored params -> typed values
    section: str  # params section of the tag names (best.<section>.<key>) and of `apply`'s -S keys


GAN_STUDY = StudyKind("gan", "minimize", params_to_gan, "gan")
MIXING_STUDY = StudyKind("mixing", "maximize", params_to_mixing, "mixing")


def make_sampler(tune: TuneConfig, worker_index: int, multi_objective: bool = False) -> optuna.samplers.BaseSampler:
    """TPE (multivariate, constant liar for parallel workers) or GP, seeded by tune.seed and
    the worker's index (identical seeds would make parallel workers propose identical trials);
    NSGA-II (population tune.population) for a multi-objective study."""
    seed = tune.seed + 1000 * worker_index
    if multi_objective:
        return optuna.samplers.NSGAIISampler(population_size=tune.population, seed=seed)
    if tune.sampler == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=tune.startup_trials)
    return optuna.samplers.TPESampler(multivariate=True, constant_liar=True, seed=seed,
                                      n_startup_trials=tune.startup_trials)


def make_pruner(tune: TuneConfig, epochs: int) -> optuna.pruners.BasePruner:
    """The GAN study's pruner: median (after tune.startup_trials trials and tune.warmup_epochs epochs), Hyperband
    (resources = epochs, from tune.warmup_epochs) or none; none for a multi-objective study
    (Optuna's pruners are single-objective: `multi_objective_note` says so)."""
    if tune.multi_objective != "none":
        return optuna.pruners.NopPruner()
    if tune.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=tune.startup_trials, n_warmup_steps=tune.warmup_epochs)
    if tune.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=max(1, min(tune.warmup_epochs, epochs)), max_resource=epochs,
                                              reduction_factor=3)
    return optuna.pruners.NopPruner()


def multi_objective_note(tune: TuneConfig, objectives: list[str]) -> str:
    """What a multi-objective study does instead of the configured sampler and pruner."""
    unused = [f"tune.{key}={getattr(tune, key)}" for key, default in (("sampler", "tpe"), ("pruner", "none"))
              if getattr(tune, key) != default]
    return (f"tune: a multi-objective study (minimises {' and '.join(objectives)}) samples with NSGA-II "
            f"(population {tune.population}) and prunes nothing: Optuna's pruners are single-objective"
            + (f" ({', '.join(unused)} not used)" if unused else ""))


def study_settings(tune: TuneConfig, gan_fixed: dict[str, Any], dataset_hash: str, extractor: str) -> dict[str, Any]:
    """What makes trials of one study comparable: space, objective(s), fixed gan values, data, features."""
    settings = {"space": space_as_dict(tune.gan_space), "objective": tune.objective, "gan_fixed": gan_fixed,
                "dataset_hash": dataset_hash, "extractor": extractor, "epochs": gan_fixed.get("epochs")}
    if tune.multi_objective != "none":  # absent otherwise: single-objective studies made before the key stay loadable
        settings |= {"multi_objective": tune.multi_objective, "population": tune.population}
    return settings


def open_study(name: str, storage: optuna.storages.BaseStorage, settings: dict[str, Any],
               sampler: optuna.samplers.BaseSampler, pruner: optuna.pruners.BasePruner,
               kind: StudyKind = GAN_STUDY, objectives: list[str] | None = None) -> optuna.Study:
    """Create the study, or load it (`load_if_exists`) after checking that it optimises in the
    kind's direction (each of `objectives`, their names stored as the study's metric names) and
    was made with the same settings; a mismatch raises ValueError naming what differs."""
    directions = [kind.direction] * (len(objectives) if objectives else 1)
    study = optuna.create_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner,
                                directions=directions, load_if_exists=True)
    if study.directions != [optuna.study.StudyDirection[d.upper()] for d in directions]:
        raise ValueError(f"study {name!r} exists with direction(s) {[d.name for d in study.directions]}: "
                         f"this {kind.name} study {kind.direction}s {len(directions)} objective(s); "
                         "use another --study name")
    if objectives and len(objectives) > 1 and study.metric_names is None:
        with _quiet_experimental():
            study.set_metric_names(objectives)
    stored = study.user_attrs.get(SETTINGS_ATTR)
    if stored is None:
        study.set_user_attr(SETTINGS_ATTR, settings)
    elif stored != json.loads(json.dumps(settings)):
        differing = sorted(k for k in settings if json.dumps(stored.get(k), sort_keys=True) != json.dumps(settings[k], sort_keys=True))
        raise ValueError(f"study {name!r} exists with other settings ({', '.join(differing)} differ from params.yaml's): "
                         "use another --study name, or restore the params the study was made with")
    return study


def ensure_parent_run(study: optuna.Study, storage_url: str, tune: TuneConfig, tags: dict[str, str],
                      logged: dict[str, Any] | None = None) -> str:
    """The study's parent MLflow run (created once, its id kept as a study user attribute);
    `logged`: the study's own params (default: the GAN study's pruner, objective and space)."""
    run_id = study.user_attrs.get(PARENT_RUN_ATTR)
    if run_id is not None:
        return run_id
    if logged is None:
        logged = {"tune.pruner": tune.pruner, "tune.objective": f"{tune.objective} (validation split)",
                  "tune.multi_objective": tune.multi_objective,
                  "tune.warmup_epochs": tune.warmup_epochs, "tune.gan_space": json.dumps(space_as_dict(tune.gan_space))}
    with mlflow.start_run(run_name=f"tune-{study.study_name}", tags={**tags, "optuna.study": study.study_name}) as run:
        mlflow.log_params({"tune.study": study.study_name, "tune.storage": redact(storage_url), "tune.sampler": tune.sampler,
                           "tune.n_trials": tune.n_trials, "tune.seed": tune.seed,
                           "tune.startup_trials": tune.startup_trials, **logged})
        study.set_user_attr(PARENT_RUN_ATTR, run.info.run_id)
        return run.info.run_id


def with_overrides(tune: TuneConfig, trials: int | None = None, timeout: float | None = None,
                   storage: str | None = None) -> TuneConfig:
    """The tune section with the command line's --trials, --timeout and --storage (None: unchanged)."""
    overrides = {"n_trials": trials, "timeout": timeout, "storage": storage}
    return dataclasses.replace(tune, **{k: v for k, v in overrides.items() if v is not None})


def load_existing(tune: TuneConfig, name: str, root: Path, kind: StudyKind = GAN_STUDY) -> optuna.Study:
    """The study `name` in tune.storage (for show and apply); ValueError listing the studies there."""
    url = resolve_storage_url(tune.storage, root)
    storage = open_storage(url, tune.heartbeat_s, tune.max_retries)
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        raise ValueError(f"no study {name!r} in {redact(url)} (studies there: {', '.join(names) or 'none'}); "
                         f"run `bin/ganaug tune {kind.name}` first") from None


def budget_left(study: optuna.Study, budget: int) -> int:
    """Trials that may still start: the budget minus finished, running and waiting ones. A
    waiting trial (a dead worker's trial enqueued again) runs whatever this says (`run_worker`)
    and will finish in place of the failed one: counted here, so that between the failure and
    the retry's start no other worker takes its place in the budget with a new trial."""
    trials = study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING, TrialState.WAITING))
    return budget - len(trials)


class SurplusTrial(Exception):
    """A new trial that workers starting at the same moment left no room for in the budget."""


def is_surplus(study: optuna.Study, trial: optuna.Trial, budget: int) -> bool:
    """True for a new trial (not a retry) whose lower-numbered trials that finished, run or wait
    already fill the budget. Trial numbers are given out one at a time by the storage, so when
    several workers each saw one trial left and started one, all but the lowest number are surplus."""
    if original_trial_number(study, trial) != trial.number:
        return False
    states = (*FINISHED, TrialState.RUNNING, TrialState.WAITING)
    return sum(t.number < trial.number for t in study.get_trials(deepcopy=False, states=states)) >= budget


def run_worker(study: optuna.Study, objective: Callable[[optuna.Trial], float], budget: int, timeout: float,
               max_retries: int, on_trial: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None = None) -> int:
    """Run trials one at a time until the budget is spent (or `timeout` seconds passed, 0 =
    none); returns how many this worker ran. Before each trial the trials of dead workers are
    failed and enqueued again; an enqueued retry runs even when the budget looks spent (it
    replaces a trial that was counted while running). A trial that another worker's, started at
    the same moment, left no room for (`is_surplus`) fails at once, marked SURPLUS_ATTR, before
    the objective runs: failed trials do not count, so the budget is not overrun."""
    def guarded(trial: optuna.Trial) -> float:
        if is_surplus(study, trial, budget):
            trial.set_user_attr(SURPLUS_ATTR, True)
            raise SurplusTrial(f"other workers' trials filled the budget of {budget} first; nothing was trained")
        return objective(trial)

    started, ran = time.monotonic(), 0
    while True:
        fail_dead_trials(study, max_retries)
        if timeout and time.monotonic() - started >= timeout:
            print(f"tune: --timeout {timeout:g} s reached: no new trial")
            break
        waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        if not waiting and budget_left(study, budget) <= 0:
            break
        callbacks = [on_trial] if on_trial is not None else []
        study.optimize(guarded, n_trials=1, callbacks=callbacks, gc_after_trial=True, catch=(SurplusTrial,))
        ran += 1
    return ran


def progress_line(study: optuna.Study, trial: optuna.trial.FrozenTrial, budget: int, started: float, timeout: float) -> str:
    """One line per finished trial: state, value, best so far, budget and time left."""
    finished = len(study.get_trials(deepcopy=False, states=FINISHED))
    value = "-" if trial.values is None else "/".join(f"{v:.4g}" for v in trial.values)
    left = f", {max(0.0, timeout - (time.monotonic() - started)):.0f} s of --timeout left" if timeout else ""
    return (f"tune: trial {trial.number} {trial.state.name.lower()} value={value}; best {best_so_far(study)}; "
            f"{finished}/{budget} trials{left}")


def best_so_far(study: optuna.Study) -> str:
    """The best value and its trial (a multi-objective study: the size of its Pareto front)."""
    if len(study.directions) > 1:
        front = study.best_trials
        return f"Pareto front of {len(front)} trial(s)" if front else "none yet"
    try:
        return f"{study.best_value:.4g} (trial {study.best_trial.number})"
    except ValueError:
        return "none yet"


def time_left(budget: int, finished: int, finished_at_start: int, elapsed: float, timeout: float) -> float | None:
    """Seconds left in the budget: the trials still to run at this worker's pace so far, capped by
    what is left of `timeout` (0 = none); None while no trial has finished here (no pace yet)."""
    left_of_timeout = max(0.0, timeout - elapsed) if timeout else None
    done_here = finished - finished_at_start
    if done_here <= 0:
        return left_of_timeout
    estimate = max(0, budget - finished) * elapsed / done_here
    return estimate if left_of_timeout is None else min(estimate, left_of_timeout)


class StudyProgress:
    """A one-line bar for a study on a terminal: finished trials / budget, the best value so far and
    the time left in the budget (`time_left`); the per-trial lines (`progress_line`) are written
    above it. Not a terminal (CI, a log file) or a worker started by `--workers` (they share one
    terminal): no bar, the per-trial lines alone, which say the same. The GAN's epoch and step
    bars open below it while a trial trains."""

    def __init__(self, study: optuna.Study, budget: int, timeout: float, stream: Any = None):
        self.budget, self.timeout = budget, timeout
        self.started = time.monotonic()
        self.finished_at_start = len(study.get_trials(deepcopy=False, states=FINISHED))
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = is_terminal(self.stream) and not os.environ.get(LAUNCHED_WORKER_ENV)
        self.bar = tqdm(total=budget, initial=min(self.finished_at_start, budget), desc=f"study {study.study_name}",
                        unit="trial", file=self.stream, leave=True, dynamic_ncols=True, disable=not self.enabled,
                        bar_format="{desc}: {n_fmt}/{total_fmt} trials |{bar}|{postfix}")
        self.bar.set_postfix_str(self.postfix(study), refresh=True)

    def postfix(self, study: optuna.Study) -> str:
        finished = len(study.get_trials(deepcopy=False, states=FINISHED))
        left = time_left(self.budget, finished, self.finished_at_start, time.monotonic() - self.started, self.timeout)
        shown = "time left: estimated after the first trial" if left is None else f"~{_duration(left)} left"
        return f"best {best_so_far(study)}; {shown}"

    def trial_finished(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """The `run_worker` callback: the trial's line, then the bar redrawn."""
        line = progress_line(study, trial, self.budget, self.started, self.timeout)
        if not self.enabled:
            print(line, flush=True)
            return
        self.bar.write(line, file=self.stream)
        self.bar.n = min(len(study.get_trials(deepcopy=False, states=FINISHED)), self.budget)
        self.bar.set_postfix_str(self.postfix(study), refresh=True)

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> StudyProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def trials_table(study: optuna.Study):
    """Every trial: number, state, value, params, duration, retry and run attributes (a DataFrame)."""
    return study.trials_dataframe(attrs=("number", "state", "value", "params", "duration", "user_attrs", "system_attrs"))


def is_multi_objective(study: optuna.Study) -> bool:
    return len(study.directions) > 1


def value_names(study: optuna.Study) -> list[str]:
    """The names of a study's values (its metric names; "value" for a study made without them)."""
    names = study.metric_names
    return list(names) if names else (["value"] if not is_multi_objective(study) else
                                      [f"value {i}" for i in range(len(study.directions))])


def trial_epochs(study: optuna.Study) -> dict[str, Any] | None:
    """The compute pruning saved in a GAN study: epochs its finished trials trained against the
    epochs they would have trained without pruning (every trial to the study's `epochs`).
    A trial's epochs: its EPOCHS_RUN_ATTR attribute, else (trials of older code) the study's epochs
    for a complete trial and its last reported epoch for a pruned one. None without a
    per-trial epoch budget (the mixing study)."""
    epochs = study.user_attrs.get(SETTINGS_ATTR, {}).get("epochs")
    if not epochs:
        return None
    run = 0
    finished = study.get_trials(deepcopy=False, states=FINISHED)
    for t in finished:
        if EPOCHS_RUN_ATTR in t.user_attrs:
            run += int(t.user_attrs[EPOCHS_RUN_ATTR])
        elif t.state == TrialState.COMPLETE:
            run += int(epochs)
        else:
            run += max(t.intermediate_values, default=0)
    without = len(finished) * int(epochs)
    return {"trial_epochs_run": run, "trial_epochs_without_pruning": without,
            "trial_epochs_saved_fraction": 1 - run / without if without else 0.0}


def pareto_front(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """A multi-objective study's non-dominated complete trials, by their first value."""
    return sorted(study.best_trials, key=lambda t: (t.values[0], t.number))


def summary(study: optuna.Study, kind: StudyKind = GAN_STUDY) -> dict[str, Any]:
    trials = study.get_trials(deepcopy=False)
    counts = {state.name.lower(): sum(t.state == state for t in trials) for state in TrialState}
    finished = counts["complete"] + counts["pruned"]
    out: dict[str, Any] = {"study": study.study_name, "trials": len(trials), **counts,
                           "pruned_fraction": counts["pruned"] / finished if finished else 0.0}
    out |= trial_epochs(study) or {}
    if not counts["complete"]:
        return out
    if is_multi_objective(study):
        names = value_names(study)
        out["pareto_front"] = [{"trial": t.number, **dict(zip(names, t.values)), "params": kind.decode(t.params)}
                               for t in pareto_front(study)]
    else:
        best = study.best_trial
        out |= {"best_value": best.value, "best_trial": best.number, "best_params": kind.decode(best.params)}
    return out


def importances(study: optuna.Study) -> dict[str, float]:
    """PED-ANOVA importances (Optuna 5.0's default evaluator) of the params over complete trials
    ({} with fewer than 2 or one value); a multi-objective study: for its first value (minimised)."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 2:
        return {}
    target = (lambda t: t.values[0]) if is_multi_objective(study) else None
    try:
        with warnings.catch_warnings():  # "computes the importances of params to achieve low target values": wanted
            warnings.filterwarnings("ignore", message="PedAnovaImportanceEvaluator computes", category=UserWarning)
            return dict(optuna.importance.get_param_importances(study, target=target))
    except (RuntimeError, ValueError):  # e.g. every complete trial has the same params
        return {}


def log_study_summary(study: optuna.Study, kind: StudyKind = GAN_STUDY) -> None:
    """Parent run artifacts: optimisation history (a multi-objective study: the Pareto front) and
    param importances (PNG), all trials (CSV), summary (JSON); the best value as a metric (step =
    finished trials), best params as tags (a multi-objective study: the front's size)."""
    run_id = study.user_attrs.get(PARENT_RUN_ATTR)
    if run_id is None:
        return
    info = summary(study, kind)
    multi = is_multi_objective(study)
    client = mlflow.MlflowClient()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        trials_table(study).to_csv(out / "trials.csv", index=False)
        (out / "summary.json").write_text(json.dumps({**info, "importances": importances(study)}, indent=2, default=str))
        if info["complete"]:
            with _quiet_experimental():
                if multi:
                    ax = optuna.visualization.matplotlib.plot_pareto_front(study, target_names=value_names(study))
                    ax.figure.savefig(out / "pareto_front.png", dpi=100, bbox_inches="tight")
                    plt.close(ax.figure)
                    pd.DataFrame([{k: v for k, v in row.items() if k != "params"} | row["params"]
                                  for row in info["pareto_front"]]).to_csv(out / "pareto_front.csv", index=False)
                else:
                    ax = optuna.visualization.matplotlib.plot_optimization_history(study)
                    ax.figure.savefig(out / "optimization_history.png", dpi=100, bbox_inches="tight")
                    plt.close(ax.figure)
                if importances(study):
                    target = (lambda t: t.values[0]) if multi else None
                    warnings.filterwarnings("ignore", message="PedAnovaImportanceEvaluator computes", category=UserWarning)
                    ax = optuna.visualization.matplotlib.plot_param_importances(
                        study, target=target, target_name=value_names(study)[0])
                    ax.figure.savefig(out / "param_importances.png", dpi=100, bbox_inches="tight")
                    plt.close(ax.figure)
        client.log_artifacts(run_id, str(out))
    finished = info["complete"] + info["pruned"]
    client.log_metric(run_id, "pruned_fraction", info["pruned_fraction"], step=finished)
    if "trial_epochs_saved_fraction" in info:
        client.log_metric(run_id, "trial_epochs_run", info["trial_epochs_run"], step=finished)
        client.log_metric(run_id, "trial_epochs_saved_fraction", info["trial_epochs_saved_fraction"], step=finished)
    if "pareto_front" in info:
        client.log_metric(run_id, "pareto_front_size", len(info["pareto_front"]), step=finished)
        client.set_tag(run_id, "pareto.trials", ",".join(str(row["trial"]) for row in info["pareto_front"]))
    if "best_value" in info:
        client.log_metric(run_id, "best_value", info["best_value"], step=finished)
        client.set_tag(run_id, "best.trial", str(info["best_trial"]))
        for key, value in info["best_params"].items():
            client.set_tag(run_id, f"best.{kind.section}.{key}", json.dumps(value) if isinstance(value, list) else str(value))


@contextlib.contextmanager
def _quiet_experimental() -> Iterator[None]:
    """optuna.visualization.matplotlib warns that it is experimental on every call."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def show(study: optuna.Study, top: int = 5, kind: StudyKind = GAN_STUDY) -> str:
    """`ganaug tune show gan|mixing`: the best trials (a multi-objective study: its Pareto front),
    param importances, the pruned fraction and (GAN) the trial-epochs pruning saved."""
    info = summary(study, kind)
    multi = is_multi_objective(study)
    lines = [f"study {study.study_name}: {info['trials']} trials ({info['complete']} complete, {info['pruned']} pruned, "
             f"{info['fail']} failed, {info['running']} running, {info['waiting']} waiting); "
             + ("no pruning (multi-objective)" if multi else f"pruned fraction {info['pruned_fraction']:.2f}")]
    if "trial_epochs_run" in info and not multi:
        lines.append(f"trial-epochs: {info['trial_epochs_run']} run of {info['trial_epochs_without_pruning']} without "
                     f"pruning ({100 * info['trial_epochs_saved_fraction']:.0f} % saved)")
    higher = kind.direction == "maximize"
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return "\n".join([*lines, "no complete trial yet"])
    if multi:
        names = value_names(study)
        front = pareto_front(study)
        lines.append(f"Pareto front: {len(front)} of {len(complete)} complete trials ({', '.join(names)}; "
                     f"{'higher' if higher else 'lower'} is better on each); `tune apply --trial N` takes one:")
        for t in front:
            values = ", ".join(f"{n} {v:.4g}" for n, v in zip(names, t.values))
            params = ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(kind.decode(t.params).items()))
            lines.append(f"  trial {t.number}: {values}  {params}")
    else:
        ranked = sorted(complete, key=lambda t: t.value, reverse=higher)
        lines.append(f"best {min(top, len(ranked))} trials ({'higher' if higher else 'lower'} is better):")
        for t in ranked[:top]:
            params = ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(kind.decode(t.params).items()))
            lines.append(f"  trial {t.number}: {t.value:.4g}  {params}")
    found = importances(study)
    if found:
        lines.append(f"param importances (PED-ANOVA{', for ' + value_names(study)[0] if multi else ''}): "
                     + ", ".join(f"{k} {v:.2f}" for k, v in found.items()))
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return "[" + ",".join(map(str, value)) + "]"
    return str(value)


def chosen_trial(study: optuna.Study, trial_number: int | None = None) -> optuna.trial.FrozenTrial:
    """The best complete trial, or complete trial `trial_number` (a multi-objective study has no
    single best: `trial_number` is required); ValueError naming the study otherwise."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise ValueError(f"study {study.study_name!r} has no complete trial to apply")
    if trial_number is None:
        if is_multi_objective(study):
            front = [t.number for t in pareto_front(study)]
            raise ValueError(f"study {study.study_name!r} is multi-objective ({', '.join(value_names(study))}): it has "
                             f"no single best trial; choose one with --trial N (its Pareto front: trials "
                             f"{', '.join(map(str, front))}; `bin/ganaug tune show gan --study {study.study_name}` "
                             "lists their values)")
        trial = study.best_trial
    else:
        found = [t for t in complete if t.number == trial_number]
        if not found:
            raise ValueError(f"study {study.study_name!r} has no complete trial {trial_number} "
                             f"(complete: {sorted(t.number for t in complete)})")
        trial = found[0]
    return trial


def apply_command(study: optuna.Study, trial_number: int | None = None,
                  overrides: Callable[[dict[str, Any]], list[tuple[str, Any]]] | None = None) -> list[str]:
    """`dvc exp run` with the best (or the given) complete trial's params as `-S <key>=<value>`
    (default: `gan.<key>` for each GAN param; `overrides` maps a trial's params to params keys
    and values), named `<study>-trial-<n>` (the DVC experiment name, which the stages' MLflow
    runs carry as their dvc.exp_name tag)."""
    trial = chosen_trial(study, trial_number)
    if overrides is None:
        settings = [(f"gan.{key}", value) for key, value in sorted(params_to_gan(trial.params).items())]
    else:
        settings = overrides(trial.params)
    command = ["dvc", "exp", "run", "--name", f"{study.study_name}-trial-{trial.number}"]
    for key, value in settings:
        command += ["-S", f"{key}={_yaml_value(value)}"]
    return command


def _yaml_value(value: Any) -> str:
    """A value as `dvc exp run -S` parses it (YAML): lists in flow style, floats with repr."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ",".join(_yaml_value(v) for v in value) + "]"
    return repr(value) if isinstance(value, float) else str(value)


def launch_workers(argv: list[str], workers: int, env: dict[str, str] | None = None) -> int:
    """Run `workers` copies of this command (each with --workers 1 and its --worker-index) and
    wait for all; returns 1 when any of them failed (each named), else 0. Children are reaped as they exit, so a killed
    one is seen as gone by the others at once."""
    processes = []
    for index in range(workers):
        command = [sys.executable, "-m", "ganaug.cli", *argv, "--workers", "1", "--worker-index", str(index)]
        processes.append(subprocess.Popen(command, env={**(env if env is not None else os.environ), LAUNCHED_WORKER_ENV: "1"}))
    print(f"tune: {workers} workers started: {shlex.join(command[:-4])} --workers 1 --worker-index <i>")
    codes: list[int | None] = [None] * workers
    while None in codes:  # reap each child as it exits (not in order): a killed one is no zombie for the others
        codes = [code if code is not None else process.poll() for code, process in zip(codes, processes)]
        if None in codes:
            time.sleep(0.2)
    for index, code in enumerate(codes):
        if code:
            how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
            print(f"tune: worker {index} {how}; its running trial is failed and retried by the others or the next run")
    return 1 if any(codes) else 0
