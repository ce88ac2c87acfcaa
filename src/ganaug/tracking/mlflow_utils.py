"""MLflow set-up shared by every stage: an absolute tracking URI, lineage tags, batched metrics.

DVC experiment runs can execute in temporary copies of the repository under
`.dvc/tmp/exps/`; a relative `sqlite:///mlflow.db` would be created there and lost, so the
store is always resolved to the real project root. A SQLite store is created once, under a
file lock beside it (`mlflow.db.lock`), so stages starting together on a fresh store do not
race to create MLflow's tables.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from urllib.request import url2pathname

import filelock
import mlflow
import sqlalchemy.exc
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

EXPERIMENT = "ganaug"
_DVC_TEMP_MARKER = os.sep + os.path.join(".dvc", "tmp", "exps") + os.sep
SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database file
STORE_LOCK_TIMEOUT_S = 600  # creating MLflow's tables takes seconds; minutes mean a hung holder


def project_root(start: str | Path | None = None) -> Path:
    """The directory holding dvc.yaml (walking up from `start`), outside any DVC temp copy."""
    here = Path(start or os.getcwd()).resolve()
    text = str(here) + os.sep
    if _DVC_TEMP_MARKER in text:  # <root>/.dvc/tmp/exps/<run>/...: the real root is <root>
        return Path(text.split(_DVC_TEMP_MARKER)[0])
    for candidate in (here, *here.parents):
        if (candidate / "dvc.yaml").is_file():
            return candidate
    return here


def tracking_uri() -> str:
    """`MLFLOW_TRACKING_URI` if set (it must be absolute), else SQLite at the project root."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
            raise ValueError(
                f"MLFLOW_TRACKING_URI={uri!r} is a relative SQLite path; DVC experiment runs execute in "
                "temporary copies, so use an absolute one (sqlite:////abs/path/mlflow.db)"
            )
        return uri
    return f"sqlite:///{project_root() / 'mlflow.db'}"


class StoreError(ValueError):
    """The MLflow store cannot be used as it is; the message names the file and what to do."""


def sqlite_store_path(uri: str) -> Path | None:
    """The database file of an absolute `sqlite:///` URI; None for a server or another database."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///").split("?")[0])


def _what_to_do(db: Path) -> str:
    return (f"expected an MLflow SQLite store; move {db.name} aside to start a fresh store, "
            "or set MLFLOW_TRACKING_URI to the store you mean")


def check_sqlite_header(db: Path) -> None:
    """Refuse a file that is not an SQLite database. No file, or an empty one, is fine: MLflow
    creates a fresh store."""
    if not db.is_file() or db.stat().st_size == 0:
        return
    with db.open("rb") as f:
        header = f.read(len(SQLITE_HEADER))
    if header != SQLITE_HEADER:
        raise StoreError(f"MLflow store {str(db)!r} is not an SQLite database (it starts with {header[:8]!r}); {_what_to_do(db)}")


def check_sqlite_file(db: Path) -> None:
    """Refuse a file that is not an SQLite database, a damaged one, or one without MLflow's
    tables, before MLflow opens it (MLflow would fail with a traceback, or add its tables to
    someone else's database). Call it under the store lock: a store being created has only
    part of its tables."""
    check_sqlite_header(db)
    if not db.is_file() or db.stat().st_size == 0:
        return
    try:
        # read-only; waits out other stages' writes (a busy store is not a damaged one)
        with contextlib.closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=STORE_LOCK_TIMEOUT_S)) as connection:
            tables = {name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as exc:  # e.g. truncated: "database disk image is malformed"
        raise StoreError(f"MLflow store {str(db)!r} is a damaged SQLite database, or cannot be read ({exc}); "
                         f"{_what_to_do(db)}") from exc
    if tables and not {"experiments", "runs"} <= tables:
        raise StoreError(f"MLflow store {str(db)!r} is an SQLite database without MLflow's tables "
                         f"(it has {sorted(tables)[:5]}); {_what_to_do(db)}")


def check_artifact_root(artifact_location: str, db: Path, experiment: str) -> None:
    """Refuse a local artifact root outside the store's folder. MLflow fixes an experiment's
    artifact location when it is created, so a moved or copied project's store keeps sending
    artifacts to the old absolute path."""
    parsed = urlparse(artifact_location)
    if parsed.scheme not in ("", "file"):  # an object store or an artifact server: not tied to this folder
        return
    root = Path(url2pathname(parsed.path)).resolve()
    home = db.parent.resolve()
    if root.is_relative_to(home):
        return
    state = "exists: new runs would write into another copy of the project" if root.exists() else "does not exist"
    raise StoreError(
        f"MLflow store {str(db)!r}: experiment {experiment!r} keeps its artifacts in {str(root)!r}, outside {str(home)!r} "
        f"(was the project moved or copied? MLflow fixes the artifact location when the experiment is created); "
        f"that folder {state}. Start a fresh store (move {db.name} and mlartifacts/ aside) or set MLFLOW_TRACKING_URI "
        "to the store you mean"
    )


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _open_sqlite_store(uri: str, db: Path, experiment: str) -> str:
    """Create or upgrade the store and create the experiment, once, under a lock beside the
    database: several stages starting on a fresh store would otherwise create MLflow's tables
    concurrently and fail (`duplicate column name`, `table … already exists`)."""
    check_sqlite_header(db)  # before the lock file is made beside it
    db.parent.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(f"{db}.lock", timeout=STORE_LOCK_TIMEOUT_S)
    try:
        with lock:
            check_sqlite_file(db)
            client = MlflowClient(uri)  # the first client of a fresh store creates MLflow's tables
            found = client.get_experiment_by_name(experiment)
            if found is not None:
                check_artifact_root(found.artifact_location, db, experiment)
                return found.experiment_id
            artifacts = (db.parent / "mlartifacts").as_uri()  # beside the database, at an absolute path
            return client.create_experiment(experiment, artifact_location=artifacts)
    except filelock.Timeout as exc:
        raise StoreError(f"MLflow store {str(db)!r}: another process has held {lock.lock_file!r} for "
                         f"{STORE_LOCK_TIMEOUT_S} s; is a stage hung? Remove the lock file if no stage runs") from exc
    except (sqlalchemy.exc.DatabaseError, mlflow.exceptions.MlflowException) as exc:
        raise StoreError(f"MLflow store {str(db)!r} cannot be opened: {_first_line(exc)}") from exc


def setup(experiment: str = EXPERIMENT) -> str:
    """Point MLflow at the store and select the experiment; returns the experiment id.
    A SQLite store is checked first: not a database, not MLflow's, or an artifact root
    outside its folder (a moved project) raise `StoreError` naming the file."""
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    db = sqlite_store_path(uri)
    if db is not None:
        exp_id = _open_sqlite_store(uri, db, experiment)
    else:
        found = mlflow.get_experiment_by_name(experiment)
        if found is not None:
            exp_id = found.experiment_id
        else:
            try:
                exp_id = mlflow.create_experiment(experiment)
            except mlflow.exceptions.MlflowException:  # created concurrently by another stage
                exp_id = mlflow.get_experiment_by_name(experiment).experiment_id
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


def _git_commit(root: Path) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _git_dirty(root: Path) -> str:
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True, timeout=10)
        return "true" if out.stdout.strip() else "false"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def lineage_tags(stage: str, data_meta: dict[str, Any] | None = None, **extra: str) -> dict[str, str]:
    """Tags linking a run to its inputs: git commit, DVC stage and experiment, data hashes."""
    root = Path(os.environ.get("DVC_ROOT") or os.getcwd())
    tags = {
        "git.commit": _git_commit(root),
        "git.dirty": _git_dirty(root),
        "dvc.stage": stage,
        "dvc.exp_name": os.environ.get("DVC_EXP_NAME", "workspace"),
        "ganaug.stage": stage,
    }
    if data_meta is not None:
        tags["data.dataset_hash"] = data_meta["dataset_hash"]
        tags["data.source"] = str(data_meta["source"].get("name"))
        for split, digest in data_meta["content_hash"].items():
            tags[f"data.hash.{split}"] = digest
    tags.update({k: str(v) for k, v in extra.items()})
    return tags


def log_step_metrics(records: Iterable[dict[str, float]], keys: Iterable[str], step_key: str = "step", prefix: str = "") -> None:
    """Log per-step values with one `log_batch` call per 1000 metrics (not one call each)."""
    run = mlflow.active_run()
    assert run is not None, "log_step_metrics needs an active MLflow run"
    client, now, batch = MlflowClient(), int(time.time() * 1000), []
    keys = list(keys)
    for record in records:
        for key in keys:
            batch.append(Metric(prefix + key, float(record[key]), now, int(record[step_key])))
            if len(batch) == 1000:
                client.log_batch(run.info.run_id, metrics=batch)
                batch = []
    if batch:
        client.log_batch(run.info.run_id, metrics=batch)
