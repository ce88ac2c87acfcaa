"""The MLflow store: a fresh SQLite store survives first use by several stages at once, and a
moved or copied project's store is refused with what to do. Damaged and foreign stores:
test_bad_input_files.py."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import traceback
from pathlib import Path

import mlflow
import pytest

from ganaug.tracking import mlflow_utils


def _log_one_run(uri: str, index: int, barrier, errors) -> None:
    """One 'stage': set up the store and log a run (runs in a forked process)."""
    try:
        os.environ["MLFLOW_TRACKING_URI"] = uri
        barrier.wait(timeout=60)  # all processes reach the fresh store together
        mlflow_utils.setup()
        with mlflow.start_run(run_name=f"stage-{index}"):
            mlflow.log_metric("index", index)
    except BaseException:  # reported to the parent, which fails the test with it
        errors.put(f"process {index}: {traceback.format_exc()}")
        raise


def test_four_processes_on_a_fresh_store_all_log_a_run(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    context = multiprocessing.get_context("fork")
    barrier, errors = context.Barrier(4), context.Queue()
    processes = [context.Process(target=_log_one_run, args=(uri, i, barrier, errors)) for i in range(4)]
    for p in processes:
        p.start()
    for p in processes:
        p.join(timeout=180)
    failures = [errors.get() for _ in range(errors.qsize())] if not errors.empty() else []
    assert all(p.exitcode == 0 for p in processes), "\n".join(failures)
    runs = mlflow.MlflowClient(uri).search_runs([mlflow.MlflowClient(uri).get_experiment_by_name("ganaug").experiment_id])
    assert sorted(r.data.metrics["index"] for r in runs) == [0, 1, 2, 3]


@pytest.fixture()
def store_uri(monkeypatch):
    """Point the stages at a store (MLFLOW_TRACKING_URI); forget it afterwards."""
    def point(db: Path) -> None:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    yield point
    mlflow.set_tracking_uri(None)


def test_a_moved_or_copied_projects_store_is_refused_with_what_to_do(tmp_path, store_uri):
    old = tmp_path / "old"
    store_uri(old / "mlflow.db")
    mlflow_utils.setup()  # the experiment's artifacts: old/mlartifacts, fixed at creation
    with mlflow.start_run():
        mlflow.log_text("x", "note.txt")  # old/mlartifacts now exists
    shutil.copytree(old, tmp_path / "copy")
    store_uri(tmp_path / "copy" / "mlflow.db")
    with pytest.raises(mlflow_utils.StoreError, match=(
            rf"copy/mlflow.db': experiment 'ganaug' keeps its artifacts in '{old / 'mlartifacts'}', outside "
            rf"'{tmp_path / 'copy'}' .*that folder exists: new runs would write into another copy of the project. "
            r"Start a fresh store .* or set MLFLOW_TRACKING_URI")):
        mlflow_utils.setup()
    old.rename(tmp_path / "moved")
    store_uri(tmp_path / "moved" / "mlflow.db")
    with pytest.raises(mlflow_utils.StoreError, match=rf"keeps its artifacts in '{old / 'mlartifacts'}'.*that folder does not exist"):
        mlflow_utils.setup()
