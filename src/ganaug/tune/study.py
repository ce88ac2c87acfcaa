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
from optuna.trial import TrialState  # noqa: E402

from ganaug.config import TuneConfig  # noqa: E402
from ganaug.tune.space import params_to_gan, params_to_mixing, space_as_dict  # noqa: E402
from ganaug.tune.storage import fail_dead_trials, open_storage, redact, resolve_storage_url  # noqa: E402

PARENT_RUN_ATTR = "mlflow_parent_run_id"  # study user attribute
SETTINGS_ATTR = "ganaug.settings"  # study user attribute: what the study searches and measures
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass(frozen=True)
class StudyKind:
    """What differs between the GAN and the mixing study in the shared machinery below."""

    name: str  # gan | mixing: the `ganaug tune <name>` command
    direction: str  # minimize (GAN: a distance) | maximize (mixing: a validation score)
    decode: Callable[[dict[str, Any]], dict[str, Any]]  # a trial's stored params -> typed values
    section: str  # params section of the tag names (best.<section>.<key>) and of `apply`'s -S keys


GAN_STUDY = StudyKind("gan", "minimize", params_to_gan, "gan")
MIXING_STUDY = StudyKind("mixing", "maximize", params_to_mixing, "mixing")


def make_sampler(tune: TuneConfig, worker_index: int) -> optuna.samplers.BaseSampler:
    """TPE (multivariate, constant liar for parallel workers) or GP, seeded by tune.seed and
    the worker's index (identical seeds would make parallel workers propose identical trials)."""
    seed = tune.seed + 1000 * worker_index
    if tune.sampler == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=tune.startup_trials)
    return optuna.samplers.TPESampler(multivariate=True, constant_liar=True, seed=seed,
                                      n_startup_trials=tune.startup_trials)


def make_pruner(tune: TuneConfig, epochs: int) -> optuna.pruners.BasePruner:
    """Median (after tune.startup_trials trials and tune.warmup_epochs epochs), Hyperband
    (resources = epochs, from tune.warmup_epochs) or none."""
    if tune.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=tune.startup_trials, n_warmup_steps=tune.warmup_epochs)
    if tune.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=max(1, min(tune.warmup_epochs, epochs)), max_resource=epochs,
                                              reduction_factor=3)
    return optuna.pruners.NopPruner()


def study_settings(tune: TuneConfig, gan_fixed: dict[str, Any], dataset_hash: str, extractor: str) -> dict[str, Any]:
    """What makes trials of one study comparable: space, objective, fixed gan values, data, features."""
    return {"space": space_as_dict(tune.gan_space), "objective": tune.objective, "gan_fixed": gan_fixed,
            "dataset_hash": dataset_hash, "extractor": extractor, "epochs": gan_fixed.get("epochs")}


def open_study(name: str, storage: optuna.storages.BaseStorage, settings: dict[str, Any],
               sampler: optuna.samplers.BaseSampler, pruner: optuna.pruners.BasePruner,
               kind: StudyKind = GAN_STUDY) -> optuna.Study:
    """Create the study, or load it (`load_if_exists`) after checking that it optimises in the
    kind's direction and was made with the same settings; a mismatch raises ValueError naming
    what differs."""
    study = optuna.create_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner,
                                direction=kind.direction, load_if_exists=True)
    if study.directions != [optuna.study.StudyDirection[kind.direction.upper()]]:
        raise ValueError(f"study {name!r} exists with direction(s) {[d.name for d in study.directions]}: "
                         f"a {kind.name} study {kind.direction}s; use another --study name")
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
    """Trials that may still start: the budget minus finished and running ones (waiting
    retries are already among the failed: they run whatever this says, see `run_worker`)."""
    trials = study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING))
    return budget - len(trials)


def run_worker(study: optuna.Study, objective: Callable[[optuna.Trial], float], budget: int, timeout: float,
               max_retries: int, on_trial: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None = None) -> int:
    """Run trials one at a time until the budget is spent (or `timeout` seconds passed, 0 =
    none); returns how many this worker ran. Before each trial the trials of dead workers are
    failed and enqueued again; an enqueued retry runs even when the budget looks spent (it
    replaces a trial that was counted while running)."""
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
        study.optimize(objective, n_trials=1, callbacks=callbacks, gc_after_trial=True)
        ran += 1
    return ran


def progress_line(study: optuna.Study, trial: optuna.trial.FrozenTrial, budget: int, started: float, timeout: float) -> str:
    """One line per finished trial: state, value, best so far, budget and time left."""
    finished = len(study.get_trials(deepcopy=False, states=FINISHED))
    try:
        best = f"{study.best_value:.4g} (trial {study.best_trial.number})"
    except ValueError:
        best = "none yet"
    value = f"{trial.value:.4g}" if trial.value is not None else "-"
    left = f", {max(0.0, timeout - (time.monotonic() - started)):.0f} s of --timeout left" if timeout else ""
    return f"tune: trial {trial.number} {trial.state.name.lower()} value={value}; best {best}; {finished}/{budget} trials{left}"


def trials_table(study: optuna.Study):
    """Every trial: number, state, value, params, duration, retry and run attributes (a DataFrame)."""
    return study.trials_dataframe(attrs=("number", "state", "value", "params", "duration", "user_attrs", "system_attrs"))


def summary(study: optuna.Study, kind: StudyKind = GAN_STUDY) -> dict[str, Any]:
    trials = study.get_trials(deepcopy=False)
    counts = {state.name.lower(): sum(t.state == state for t in trials) for state in TrialState}
    finished = counts["complete"] + counts["pruned"]
    out: dict[str, Any] = {"study": study.study_name, "trials": len(trials), **counts,
                           "pruned_fraction": counts["pruned"] / finished if finished else 0.0}
    if counts["complete"]:
        best = study.best_trial
        out |= {"best_value": best.value, "best_trial": best.number, "best_params": kind.decode(best.params)}
    return out


def importances(study: optuna.Study) -> dict[str, float]:
    """fANOVA importances of the params over complete trials ({} with fewer than 2 or one value)."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 2:
        return {}
    try:
        return dict(optuna.importance.get_param_importances(study))
    except (RuntimeError, ValueError):  # e.g. every complete trial has the same params
        return {}


def log_study_summary(study: optuna.Study, kind: StudyKind = GAN_STUDY) -> None:
    """Parent run artifacts: optimisation history and param importances (PNG), all trials (CSV),
    summary (JSON); the best value as a metric (step = finished trials), best params as tags."""
    run_id = study.user_attrs.get(PARENT_RUN_ATTR)
    if run_id is None:
        return
    info = summary(study, kind)
    client = mlflow.MlflowClient()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        trials_table(study).to_csv(out / "trials.csv", index=False)
        (out / "summary.json").write_text(json.dumps({**info, "importances": importances(study)}, indent=2, default=str))
        if info["complete"]:
            with _quiet_experimental():
                ax = optuna.visualization.matplotlib.plot_optimization_history(study)
                ax.figure.savefig(out / "optimization_history.png", dpi=100, bbox_inches="tight")
                plt.close(ax.figure)
                if importances(study):
                    ax = optuna.visualization.matplotlib.plot_param_importances(study)
                    ax.figure.savefig(out / "param_importances.png", dpi=100, bbox_inches="tight")
                    plt.close(ax.figure)
        client.log_artifacts(run_id, str(out))
    finished = info["complete"] + info["pruned"]
    client.log_metric(run_id, "pruned_fraction", info["pruned_fraction"], step=finished)
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
    """`ganaug tune show gan|mixing`: the best trials, param importances and the pruned fraction."""
    info = summary(study, kind)
    lines = [f"study {study.study_name}: {info['trials']} trials ({info['complete']} complete, {info['pruned']} pruned, "
             f"{info['fail']} failed, {info['running']} running, {info['waiting']} waiting); "
             f"pruned fraction {info['pruned_fraction']:.2f}"]
    higher = kind.direction == "maximize"
    complete = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.value,
                      reverse=higher)
    if not complete:
        return "\n".join([*lines, "no complete trial yet"])
    lines.append(f"best {min(top, len(complete))} trials ({'higher' if higher else 'lower'} is better):")
    for t in complete[:top]:
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(kind.decode(t.params).items()))
        lines.append(f"  trial {t.number}: {t.value:.4g}  {params}")
    found = importances(study)
    if found:
        lines.append("param importances (fANOVA): " + ", ".join(f"{k} {v:.2f}" for k, v in found.items()))
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return "[" + ",".join(map(str, value)) + "]"
    return str(value)


def chosen_trial(study: optuna.Study, trial_number: int | None = None) -> optuna.trial.FrozenTrial:
    """The best complete trial, or complete trial `trial_number`; ValueError naming the study otherwise."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise ValueError(f"study {study.study_name!r} has no complete trial to apply")
    if trial_number is None:
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
        processes.append(subprocess.Popen(command, env=env))
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
