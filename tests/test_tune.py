"""GAN hyperparameter studies (`ganaug tune gan|show|apply`, `ganaug.tune`): the real code on a
tiny phantom project. The objective reads the validation split (never test), reports each
evaluation, prunes a clearly bad configuration, logs nested MLflow runs; a study resumes; 4
journal-file workers and 3 PostgreSQL workers share a study without losing a trial, and a
worker SIGKILLed mid-trial leaves its trial failed and retried."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import optuna
import pytest
from optuna.trial import TrialState
from ruamel.yaml import YAML

from conftest import REPO, prepared_project
from ganaug import cli
from ganaug.config import ConfigError, params_from_dict
from ganaug.tune import storage as tune_storage
from ganaug.tune.study import (EPOCHS_RUN_ATTR, LAUNCHED_WORKER_ENV, PARENT_RUN_ATTR, SETTINGS_ATTR, SURPLUS_ATTR,
                               StudyProgress, apply_command, is_surplus, open_study, run_worker, show, summary,
                               time_left)
from postgres_server import postgres_server  # noqa: F401  (the fixture)

pytestmark = pytest.mark.slow

TINY = {
    "data": {"image_size": 32, "phantom": {"n_images": 200}},
    "reference": {"epochs": 2},
    "gan": {"epochs": 2, "eval_every": 1, "n_eval": 30, "batch_size": 16, "base_channels": 4, "min_diversity": 0.0},
    "tune": {"gan_space": {"lr_g": {"low": 1.0e-4, "high": 0.9, "log": True}},
             "n_trials": 2, "warmup_epochs": 0, "startup_trials": 1, "heartbeat_s": 1},
}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A project with tiny params whose prepare and train_reference outputs exist."""
    with prepared_project(tmp_path_factory.mktemp("tune"), TINY) as root:
        yield root


def subprocess_env(root: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO / "src"), "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
            **extra}


# ---------------------------------------------------------------------------------------
# bad input: each fails before any trial, naming what is wrong


@pytest.mark.parametrize(("space", "fragment"), [
    ({"lr_gg": {"low": 1e-4, "high": 1e-3}}, "tune.gan_space.lr_gg: unknown gan key 'lr_gg'; did you mean 'lr_g'?"),
    ({"loss": {"choices": []}}, "tune.gan_space.loss.choices=[]: empty"),
    ({"lr_g": {"low": 1e-3, "high": 1e-4}}, "tune.gan_space.lr_g: low=0.001 >= high=0.0001"),
    ({"r1_gamma": {"low": 0.0, "high": 1.0, "log": True}}, "tune.gan_space.r1_gamma: log=true with low=0.0"),
    ({"loss": {"choices": ["hinge", "wasserstein"]}}, "tune.gan_space.loss.choices[1]='wasserstein'"),
    ({"latent_dim": {"low": 8, "high": 64.5}}, "tune.gan_space.latent_dim: gan.latent_dim is an integer"),
    ({"epochs": {"low": 1, "high": 5}}, "tune.gan_space.epochs: gan.epochs is fixed for a study"),
    ({"loss": {"low": 1, "high": 2}}, "tune.gan_space.loss: gan.loss is one of"),
    ({"augment": {"choices": ["ada"]}, "loss": {"choices": ["wgan_gp"]}}, "gan.augment=ada together with gan.loss=wgan_gp"),
])
def test_a_bad_search_space_is_refused_at_load_naming_the_key(space, fragment):
    with pytest.raises(ConfigError) as excinfo:
        params_from_dict({"tune": {"gan_space": space}})
    assert fragment in str(excinfo.value)


def test_bad_storage_urls_are_refused_naming_them(tmp_path):
    with pytest.raises(ValueError, match="relative SQLite path"):
        tune_storage.resolve_storage_url("sqlite:///optuna.db", tmp_path)
    with pytest.raises(ValueError, match=r"postgresql\+psycopg2://"):
        tune_storage.resolve_storage_url("postgresql://me@db/studies", tmp_path)
    with pytest.raises(ValueError, match="expected null"):
        tune_storage.resolve_storage_url("optuna.db", tmp_path)
    assert tune_storage.resolve_storage_url("journal:j.log", tmp_path) == f"journal:{tmp_path / 'j.log'}"
    with pytest.raises(ValueError, match=r"Optuna storage 'postgresql\+psycopg2://me:\*\*\*@127.0.0.1:1/x' cannot be opened"):
        tune_storage.open_storage("postgresql+psycopg2://me:secret@127.0.0.1:1/x", 60, 1)


def test_a_study_with_other_settings_or_direction_is_refused():
    storage = optuna.storages.InMemoryStorage()
    sampler, pruner = optuna.samplers.RandomSampler(seed=0), optuna.pruners.NopPruner()
    open_study("s", storage, {"space": {"lr_g": {"low": 1}}, "objective": "fd_domain"}, sampler, pruner)
    with pytest.raises(ValueError, match=r"study 's' exists with other settings \(space differ"):
        open_study("s", storage, {"space": {"lr_g": {"low": 2}}, "objective": "fd_domain"}, sampler, pruner)
    optuna.create_study(study_name="up", storage=storage, direction="maximize")
    with pytest.raises(ValueError, match="study 'up' exists with direction"):
        open_study("up", storage, {}, sampler, pruner)


def test_missing_inputs_and_zero_workers_fail_before_any_trial(tmp_path, monkeypatch, capsys):
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    (tmp_path / "params.yaml").write_text("")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["tune", "gan", "--trials", "1"]) == 1
    err = capsys.readouterr().err
    assert "a GAN study needs the prepared data and the reference classifier" in err and "data/prepared" in err
    assert cli.main(["tune", "gan", "--workers", "0"]) == 1
    assert "--workers 0: expected at least 1 worker process" in capsys.readouterr().err
    assert cli.main(["tune", "show", "gan", "--storage", f"journal:{tmp_path / 'none.log'}"]) == 1
    assert "no study 'gan'" in capsys.readouterr().err
    assert not (tmp_path / "optuna.db").exists()


# ---------------------------------------------------------------------------------------
# the objective, in process


def test_study_scores_on_validation_logs_nested_runs_and_resumes(project, monkeypatch, capsys):
    """Two trials, then the same command with a budget of 3 resumes the study and runs one more.
    The npz arrays read during the study are train and val only."""
    read: list[str] = []
    original = np.lib.npyio.NpzFile.__getitem__

    def recording(self, key):
        read.append(key)
        return original(self, key)

    monkeypatch.setattr(np.lib.npyio.NpzFile, "__getitem__", recording)
    storage = f"journal:{project / 'resume.log'}"
    assert cli.main(["tune", "gan", "--study", "resume", "--storage", storage]) == 0
    assert read and not [k for k in read if k.startswith("test_")], f"a study read the test split: {read}"
    assert {k.split("_")[0] for k in read} == {"train", "val"}

    finished = (TrialState.COMPLETE, TrialState.PRUNED)  # lr_g spans [1e-4, 0.9]: the pruner may stop one
    study = optuna.load_study(study_name="resume", storage=tune_storage.open_storage(storage, 1, 1))
    assert len(study.trials) == 2 and all(t.state in finished for t in study.trials)
    parent = study.user_attrs[PARENT_RUN_ATTR]
    assert cli.main(["tune", "gan", "--study", "resume", "--storage", storage, "--trials", "3"]) == 0
    study = optuna.load_study(study_name="resume", storage=tune_storage.open_storage(storage, 1, 1))
    assert [t.number for t in study.trials] == [0, 1, 2]
    assert all(t.state in finished for t in study.trials) and study.trials[0].state == TrialState.COMPLETE
    assert study.user_attrs[PARENT_RUN_ATTR] == parent  # the same parent run after the resume

    client = mlflow.MlflowClient()
    for trial in study.trials:
        complete = trial.state == TrialState.COMPLETE
        assert set(trial.intermediate_values) == ({1, 2} if complete else {1})  # one value per evaluation epoch
        run = client.get_run(trial.user_attrs["mlflow_run_id"])
        assert run.data.tags["mlflow.parentRunId"] == parent
        assert run.data.tags["optuna.state"] == ("complete" if complete else "pruned")
        assert run.data.params["gan.seed"] == str(trial.number)  # tune.seed 0 + trial number
        assert float(run.data.params["gan.lr_g"]) == pytest.approx(trial.params["lr_g"])
        history = [m.value for m in client.get_metric_history(run.info.run_id, "fd_domain_val")]
        assert history == pytest.approx([trial.intermediate_values[e] for e in sorted(trial.intermediate_values)])
        if complete:
            assert run.data.metrics["objective"] == pytest.approx(trial.value)
    artifacts = {a.path for a in client.list_artifacts(parent)}
    assert {"optimization_history.png", "trials.csv", "summary.json"} <= artifacts
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert ("param_importances.png" in artifacts) == (len(complete) >= 2)
    parent_run = client.get_run(parent)
    assert parent_run.data.params["tune.sampler"] == "tpe" and "lr_g" in parent_run.data.params["tune.gan_space"]
    assert parent_run.data.metrics["best_value"] == pytest.approx(study.best_value)

    capsys.readouterr()
    assert cli.main(["tune", "show", "gan", "--study", "resume", "--storage", storage]) == 0
    shown = capsys.readouterr().out
    assert f"3 trials ({len(complete)} complete, {3 - len(complete)} pruned" in shown
    assert f"trial {study.best_trial.number}:" in shown
    command = apply_command(study)
    assert command[:5] == ["dvc", "exp", "run", "--name", f"resume-trial-{study.best_trial.number}"]
    assert command[5:] == ["-S", f"gan.lr_g={study.best_trial.params['lr_g']!r}"]


def test_a_clearly_bad_configuration_is_pruned_at_its_first_evaluation(project):
    """lr_g = 0.5 saturates G at once: its first validation FD is far above the good trial's,
    so the median pruner (1 startup trial, no warm-up) stops it after epoch 1."""
    storage = f"journal:{project / 'prune.log'}"
    study = optuna.create_study(study_name="prune", storage=tune_storage.open_storage(storage, 1, 1), direction="minimize")
    study.enqueue_trial({"lr_g": 2e-4})
    study.enqueue_trial({"lr_g": 0.5})
    assert cli.main(["tune", "gan", "--study", "prune", "--storage", storage]) == 0
    good, bad = optuna.load_study(study_name="prune", storage=tune_storage.open_storage(storage, 1, 1)).trials
    assert good.state == TrialState.COMPLETE and bad.state == TrialState.PRUNED
    assert set(bad.intermediate_values) == {1} and bad.intermediate_values[1] > good.intermediate_values[1]
    run = mlflow.MlflowClient().get_run(bad.user_attrs["mlflow_run_id"])
    assert run.data.tags["optuna.state"] == "pruned"


def test_a_multi_objective_study_has_a_pareto_front_and_apply_asks_for_a_trial(project, capsys):
    """tune.multi_objective=copy_rate_pixel: every trial returns (validation FD, copy rate against
    the train split), nothing is reported for pruning (the configured median pruner is named as
    unused), the parent run holds the Pareto front (PNG and CSV), `tune show` lists it and
    `tune apply` refuses to pick a trial without --trial."""
    params = {**TINY, "tune": {**TINY["tune"], "multi_objective": "copy_rate_pixel", "population": 2, "n_trials": 3}}
    with open(project / "params_multi.yaml", "w") as f:
        YAML().dump(params, f)
    storage = f"journal:{project / 'multi.log'}"
    base = ["--params", "params_multi.yaml", "--study", "multi", "--storage", storage]
    capsys.readouterr()
    assert cli.main(["tune", "gan", *base]) == 0
    out = capsys.readouterr().out
    assert "samples with NSGA-II (population 2) and prunes nothing" in out and "tune.pruner=median not used" in out
    study = optuna.load_study(study_name="multi", storage=tune_storage.open_storage(storage, 1, 1))
    assert study.metric_names == ["fd_domain_val", "copy_rate_pixel"]
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 3 and all(len(t.values) == 2 and 0.0 <= t.values[1] <= 1.0 for t in complete)
    assert all(not t.intermediate_values for t in complete)  # no report: Optuna's pruners are single-objective
    assert all(t.user_attrs["epochs_run"] == 2 for t in complete)
    client = mlflow.MlflowClient()
    run = client.get_run(complete[0].user_attrs["mlflow_run_id"])
    assert run.data.metrics["copy_rate_pixel"] == pytest.approx(complete[0].values[1])
    assert run.data.metrics["objective"] == pytest.approx(complete[0].values[0])
    parent = study.user_attrs[PARENT_RUN_ATTR]
    artifacts = {a.path for a in client.list_artifacts(parent)}
    assert {"pareto_front.png", "pareto_front.csv", "trials.csv", "summary.json"} <= artifacts
    front = sorted(t.number for t in study.best_trials)
    assert client.get_run(parent).data.tags["pareto.trials"] == ",".join(
        str(t.number) for t in sorted(study.best_trials, key=lambda t: (t.values[0], t.number)))
    assert client.get_run(parent).data.params["tune.multi_objective"] == "copy_rate_pixel"

    assert cli.main(["tune", "show", "gan", *base[2:]]) == 0
    shown = capsys.readouterr().out
    assert "no pruning (multi-objective)" in shown
    assert f"Pareto front: {len(front)} of 3 complete trials (fd_domain_val, copy_rate_pixel" in shown
    for number in front:
        assert f"  trial {number}: fd_domain_val " in shown
    assert cli.main(["tune", "apply", "gan", *base[2:]]) == 1
    err = capsys.readouterr().err
    assert "is multi-objective" in err and "choose one with --trial N" in err
    assert cli.main(["tune", "apply", "gan", *base[2:], "--trial", str(front[0])]) == 0
    assert f"dvc exp run --name multi-trial-{front[0]} -S gan.lr_g=" in capsys.readouterr().out
    # the single-objective study of the same space is another study: refused under this name
    with pytest.raises(ValueError, match="exists with direction"):
        open_study("multi", tune_storage.open_storage(storage, 1, 1), {}, optuna.samplers.RandomSampler(),
                   optuna.pruners.NopPruner())


def test_show_reports_the_pruned_fraction_and_the_trial_epochs_pruning_saved():
    """10 epochs a trial: a complete one (10), one pruned at its epoch-4 report (attribute of older
    code absent: its last report counts), one stopped after 6 (attribute): 20 of 30 trial-epochs."""
    study = optuna.create_study(study_name="epochs", direction="minimize")
    study.set_user_attr(SETTINGS_ATTR, {"epochs": 10})
    dist = {"lr_g": optuna.distributions.FloatDistribution(1e-5, 1e-2, log=True)}
    study.add_trial(optuna.trial.create_trial(params={"lr_g": 2e-4}, distributions=dist, value=5.0,
                                              user_attrs={EPOCHS_RUN_ATTR: 10}))
    study.add_trial(optuna.trial.create_trial(params={"lr_g": 1e-2}, distributions=dist, state=TrialState.PRUNED,
                                              intermediate_values={2: 90.0, 4: 80.0}))
    study.add_trial(optuna.trial.create_trial(params={"lr_g": 5e-3}, distributions=dist, state=TrialState.PRUNED,
                                              intermediate_values={2: 70.0, 4: 60.0}, user_attrs={EPOCHS_RUN_ATTR: 6}))
    info = summary(study)
    assert info["pruned_fraction"] == pytest.approx(2 / 3)
    assert (info["trial_epochs_run"], info["trial_epochs_without_pruning"]) == (20, 30)
    assert info["trial_epochs_saved_fraction"] == pytest.approx(1 / 3)
    shown = show(study)
    assert "pruned fraction 0.67" in shown and "trial-epochs: 20 run of 30 without pruning (33 % saved)" in shown


# ---------------------------------------------------------------------------------------
# the study's progress bar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_time_left_is_the_pace_so_far_capped_by_the_timeout():
    assert time_left(budget=10, finished=0, finished_at_start=0, elapsed=5.0, timeout=0) is None  # no pace yet
    assert time_left(budget=10, finished=0, finished_at_start=0, elapsed=5.0, timeout=60) == 55.0
    assert time_left(budget=10, finished=4, finished_at_start=2, elapsed=60.0, timeout=0) == pytest.approx(180.0)
    assert time_left(budget=10, finished=4, finished_at_start=2, elapsed=60.0, timeout=100) == pytest.approx(40.0)
    assert time_left(budget=10, finished=12, finished_at_start=0, elapsed=60.0, timeout=0) == 0.0


def test_a_trial_that_other_workers_left_no_room_for_fails_unrun_and_does_not_count(monkeypatch):
    """Two workers each saw one trial left and both started one (the race a loaded machine showed
    with three PostgreSQL workers): the higher-numbered trial is surplus and fails before the
    objective runs, so the study finishes exactly its budget."""
    study = optuna.create_study(study_name="race", sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda trial: trial.suggest_float("x", 0.0, 1.0), n_trials=1)
    other = study.ask()  # another worker's trial, started first and still running
    assert not is_surplus(study, other, budget=2) and is_surplus(study, other, budget=1)
    reads = iter([1, 0])  # this worker's read of the budget came before the other trial started; then it sees none
    monkeypatch.setattr("ganaug.tune.study.budget_left", lambda study, budget: next(reads))
    ran: list[int] = []
    run_worker(study, lambda trial: ran.append(trial.number) or trial.suggest_float("x", 0.0, 1.0), budget=2,
               timeout=0, max_retries=0)
    assert ran == []  # nothing was trained
    mine = study.trials[-1]
    assert mine.number == 2 and mine.state == TrialState.FAIL and mine.user_attrs[SURPLUS_ATTR] is True
    study.tell(other, 0.5)
    assert len(study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))) == 2  # the budget, not 3


def _trials_up_to(study: optuna.Study, bar: StudyProgress) -> None:
    run_worker(study, lambda trial: trial.suggest_float("x", 0.0, 1.0), budget=bar.budget, timeout=0, max_retries=0,
               on_trial=bar.trial_finished)


def test_the_study_bar_shows_trials_best_and_time_left_on_a_terminal_only(monkeypatch, capsys):
    monkeypatch.delenv(LAUNCHED_WORKER_ENV, raising=False)
    study = optuna.create_study(study_name="bar", sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda trial: trial.suggest_float("x", 0.0, 1.0), n_trials=1)  # a resumed study: 1 of 3 done
    terminal = Terminal()
    with StudyProgress(study, budget=3, timeout=0, stream=terminal) as bar:
        assert bar.enabled
        _trials_up_to(study, bar)
    drawn = terminal.getvalue()
    best = f"best {study.best_value:.4g} (trial {study.best_trial.number})"
    assert "study bar: 1/3 trials" in drawn and "time left: estimated after the first trial" in drawn
    assert "study bar: 3/3 trials" in drawn and best in drawn and "~0m00s left" in drawn
    assert "tune: trial 2 complete" in drawn  # the trial lines go above the bar
    assert "tune: trial" not in capsys.readouterr().out

    log = io.StringIO()  # not a terminal (CI, a log file): no bar, the lines alone
    with StudyProgress(study, budget=5, timeout=0, stream=log) as bar:
        assert not bar.enabled
        _trials_up_to(study, bar)
    assert log.getvalue() == ""
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[-1].startswith("tune: trial 4 complete") and lines[-1].endswith("5/5 trials")

    monkeypatch.setenv(LAUNCHED_WORKER_ENV, "1")  # workers started by --workers share one terminal: no bars
    assert not StudyProgress(study, budget=5, timeout=0, stream=Terminal()).enabled


# ---------------------------------------------------------------------------------------
# several workers sharing a study; one of them SIGKILLed mid-trial


def check_shared_study(study: optuna.Study, budget: int, killed_worker_trials: int = 1) -> None:
    """Every trial number once, none lost: the budget finished, the killed trial failed and
    retried (same params), nothing left running or waiting."""
    trials = study.get_trials()
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    states = [t.state for t in trials]
    assert TrialState.RUNNING not in states and TrialState.WAITING not in states, states
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == budget, states
    surplus = [t for t in trials if t.user_attrs.get(SURPLUS_ATTR)]  # workers that started at the same moment
    assert all(t.state == TrialState.FAIL and not t.params for t in surplus), states
    failed = [t for t in trials if t.state == TrialState.FAIL and t not in surplus]
    assert len(failed) == killed_worker_trials, states
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == failed[0].number]
    assert len(retries) == 1 and retries[0].params == failed[0].params and retries[0] in finished
    # the retry trains with the killed trial's seed and closed its MLflow run as KILLED
    client = mlflow.MlflowClient()
    retry_run = client.get_run(retries[0].user_attrs["mlflow_run_id"])
    assert retry_run.data.params["gan.seed"] == str(failed[0].number)
    assert client.get_run(failed[0].user_attrs["mlflow_run_id"]).info.status == "KILLED"


def run_workers(project: Path, storage: str, study: str, workers: int, budget: int) -> subprocess.CompletedProcess:
    """`ganaug tune gan --workers K`; the first worker to evaluate an epoch SIGKILLs itself (any
    worker: on a fast machine one worker may run every trial before another has imported torch)."""
    done = subprocess.run(
        [sys.executable, "-m", "ganaug.cli", "tune", "gan", "--study", study, "--storage", storage,
         "--trials", str(budget), "--workers", str(workers)],
        cwd=project, env=subprocess_env(project, GANAUG_TEST_KILL_AT="tune_epoch:*",
                                        GANAUG_TEST_KILL_ONCE=str(project / f"killed-{study}")),
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 1, f"expected a worker's SIGKILL to fail the command:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert len(re.findall(r"tune: worker \d+ was killed by signal 9", done.stdout)) == 1, done.stdout[-3000:]
    return done


def test_four_journal_workers_share_a_study_and_retry_a_killed_workers_trial(project):
    storage = f"journal:{project / 'shared.log'}"
    # a budget above the worker count: under load, three workers could otherwise take every trial
    # before worker 0 (the one that kills itself) has opened the study
    done = run_workers(project, storage, "journal4", workers=4, budget=6)
    assert "of a worker that died were failed and enqueued again" in done.stdout
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    study = optuna.load_study(study_name="journal4", storage=tune_storage.open_storage(storage, 1, 1))
    check_shared_study(study, budget=6)
    pids = {t.user_attrs[tune_storage.WORKER_ATTR]["pid"] for t in study.trials}
    assert len(pids) >= 2  # the killed worker's trial was retried by another process


def test_three_postgresql_workers_share_a_study_and_retry_a_killed_workers_trial(project, postgres_server):  # noqa: F811
    url = postgres_server.create_database("tune_study")
    run_workers(project, url, "pg3", workers=3, budget=4)
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    study = optuna.load_study(study_name="pg3", storage=tune_storage.open_storage(url, 1, 1))
    check_shared_study(study, budget=4)
    assert json.loads(json.dumps(study.user_attrs["ganaug.settings"]))["objective"] == "fd_domain"
