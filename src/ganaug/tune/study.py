"""A study: opened (or resumed) with its settings checked, run by one or several workers
under a fixed total budget, summarised in its parent MLflow run, shown and applied.

Budget: `tune.n_trials` finished (COMPLETE or PRUNED) trials in total, across restarts and
workers. Each worker checks it before asking for a trial, counting the trials others are
running, rather than after each trial as `optuna.study.MaxTrialsCallback` does (with K workers
that overshoots by up to K - 1 trials); failed trials do not count: a killed one is retried.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import optuna  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from ganaug.config import TuneConfig  # noqa: E402
from ganaug.tune.space import params_to_gan, space_as_dict  # noqa: E402
from ganaug.tune.storage import fail_dead_trials, redact  # noqa: E402

PARENT_RUN_ATTR = "mlflow_parent_run_id"  # study user attribute
SETTINGS_ATTR = "ganaug.settings"  # study user attribute: what the study searches and measures
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


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
               sampler: optuna.samplers.BaseSampler, pruner: optuna.pruners.BasePruner) -> optuna.Study:
    """Create the study, or load it (`load_if_exists`) after checking that it minimises and was
    made with the same settings; a mismatch raises ValueError naming what differs."""
    study = optuna.create_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner,
                                direction="minimize", load_if_exists=True)
    if study.directions != [optuna.study.StudyDirection.MINIMIZE]:
        raise ValueError(f"study {name!r} exists with direction(s) {[d.name for d in study.directions]}: "
                         "a GAN study minimises; use another --study name")
    stored = study.user_attrs.get(SETTINGS_ATTR)
    if stored is None:
        study.set_user_attr(SETTINGS_ATTR, settings)
    elif stored != json.loads(json.dumps(settings)):
        differing = sorted(k for k in settings if json.dumps(stored.get(k), sort_keys=True) != json.dumps(settings[k], sort_keys=True))
        raise ValueError(f"study {name!r} exists with other settings ({', '.join(differing)} differ from params.yaml's): "
                         "use another --study name, or restore the params the study was made with")
    return study


def ensure_parent_run(study: optuna.Study, storage_url: str, tune: TuneConfig, tags: dict[str, str]) -> str:
    """The study's parent MLflow run (created once, its id kept as a study user attribute)."""
    run_id = study.user_attrs.get(PARENT_RUN_ATTR)
    if run_id is not None:
        return run_id
    with mlflow.start_run(run_name=f"tune-{study.study_name}", tags={**tags, "optuna.study": study.study_name}) as run:
        mlflow.log_params({"tune.study": study.study_name, "tune.storage": redact(storage_url), "tune.sampler": tune.sampler,
                           "tune.pruner": tune.pruner, "tune.objective": f"{tune.objective} (validation split)",
                           "tune.n_trials": tune.n_trials, "tune.seed": tune.seed, "tune.warmup_epochs": tune.warmup_epochs,
                           "tune.startup_trials": tune.startup_trials,
                           "tune.gan_space": json.dumps(space_as_dict(tune.gan_space))})
        study.set_user_attr(PARENT_RUN_ATTR, run.info.run_id)
        return run.info.run_id


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


def summary(study: optuna.Study) -> dict[str, Any]:
    trials = study.get_trials(deepcopy=False)
    counts = {state.name.lower(): sum(t.state == state for t in trials) for state in TrialState}
    finished = counts["complete"] + counts["pruned"]
    out: dict[str, Any] = {"study": study.study_name, "trials": len(trials), **counts,
                           "pruned_fraction": counts["pruned"] / finished if finished else 0.0}
    if counts["complete"]:
        best = study.best_trial
        out |= {"best_value": best.value, "best_trial": best.number, "best_params": params_to_gan(best.params)}
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


def log_study_summary(study: optuna.Study) -> None:
    """Parent run artifacts: optimisation history and param importances (PNG), all trials (CSV),
    summary (JSON); the best value as a metric (step = finished trials), best params as tags."""
    run_id = study.user_attrs.get(PARENT_RUN_ATTR)
    if run_id is None:
        return
    info = summary(study)
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
            client.set_tag(run_id, f"best.gan.{key}", json.dumps(value) if isinstance(value, list) else str(value))


class _quiet_experimental:
    """optuna.visualization.matplotlib warns that it is experimental on every call."""

    def __enter__(self):
        import warnings

        self._catch = warnings.catch_warnings()
        self._catch.__enter__()
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)

    def __exit__(self, *exc):
        return self._catch.__exit__(*exc)


def show(study: optuna.Study, top: int = 5) -> str:
    """`ganaug tune show gan`: the best trials, param importances and the pruned fraction."""
    info = summary(study)
    lines = [f"study {study.study_name}: {info['trials']} trials ({info['complete']} complete, {info['pruned']} pruned, "
             f"{info['fail']} failed, {info['running']} running, {info['waiting']} waiting); "
             f"pruned fraction {info['pruned_fraction']:.2f}"]
    complete = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.value)
    if not complete:
        return "\n".join([*lines, "no complete trial yet"])
    lines.append(f"best {min(top, len(complete))} trials (lower is better):")
    for t in complete[:top]:
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(params_to_gan(t.params).items()))
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


def apply_command(study: optuna.Study, trial_number: int | None = None) -> list[str]:
    """`dvc exp run` with the best (or the given) complete trial's params as `-S gan.<key>=<value>`,
    named `<study>-trial-<n>` (the DVC experiment name, which train_gan's MLflow run carries as
    its dvc.exp_name tag)."""
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
    command = ["dvc", "exp", "run", "--name", f"{study.study_name}-trial-{trial.number}"]
    for key, value in sorted(params_to_gan(trial.params).items()):
        command += ["-S", f"gan.{key}={_yaml_value(value)}"]
    return command


def _yaml_value(value: Any) -> str:
    """A value as `dvc exp run -S` parses it (YAML): lists in flow style, floats with repr."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ",".join(value) + "]"
    return repr(value) if isinstance(value, float) else str(value)


def launch_workers(argv: list[str], workers: int, env: dict[str, str] | None = None) -> int:
    """Run `workers` copies of this command (each with --workers 1 and its --worker-index) and
    wait for all; returns the worst exit status. Children are reaped as they exit, so a killed
    one is seen as gone by the others at once."""
    processes = []
    for index in range(workers):
        command = [sys.executable, "-m", "ganaug.cli", *argv, "--workers", "1", "--worker-index", str(index)]
        processes.append(subprocess.Popen(command, env=env))
    print(f"tune: {workers} workers started: {shlex.join(command[:-4])} --workers 1 --worker-index <i>")
    codes = [p.wait() for p in processes]
    return max(codes, key=abs)
