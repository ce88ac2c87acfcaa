"""MLflow set-up shared by every stage: an absolute tracking URI, lineage tags, batched metrics,
and what makes the UI readable: the experiment opens in MLflow 3's training view, runs get short
unique names, class names become valid metric keys, data sets are logged as run inputs.

DVC experiment runs can execute in temporary copies of the repository under
`.dvc/tmp/exps/`; a relative `sqlite:///mlflow.db` would be created there and lost, so the
store is always resolved to the real project root. A SQLite store is created once, under a
file lock beside it (`mlflow.db.lock`), so stages starting together on a fresh store do not
race to create MLflow's tables.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sqlite3
import subprocess
import time
import unicodedata
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from urllib.request import url2pathname

import filelock
import mlflow
import sqlalchemy.exc
import mlflow.data
import mlflow.system_metrics
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from ganaug.config import TrackingConfig

EXPERIMENT = "ganaug"
# MLflow 3's UI opens an experiment without this tag in its GenAI view (traces, an assistant);
# "custom_model_development" is the value its experiment-type selector writes for model training.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"
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
            return client.create_experiment(experiment, artifact_location=artifacts,
                                            tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND})
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
                exp_id = mlflow.create_experiment(experiment, tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND})
            except mlflow.exceptions.MlflowException:  # created concurrently by another stage
                exp_id = mlflow.get_experiment_by_name(experiment).experiment_id
    mark_model_training(exp_id)
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


def mark_model_training(experiment_id: str) -> None:
    """Tag the experiment as model training (also one created before this tag existed)."""
    client = MlflowClient()
    if client.get_experiment(experiment_id).tags.get(EXPERIMENT_KIND_TAG) != MODEL_TRAINING_KIND:
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)


def system_metrics(cfg: TrackingConfig) -> dict[str, bool]:
    """`mlflow.start_run`'s `log_system_metrics` for a training run (tracking.system_metrics), with
    the sampling interval set (tracking.system_metrics_interval; one sample per logged step).
    MLflow samples CPU, memory, disk and network with psutil (GPU with pynvml, when installed)
    in a daemon thread that `end_run` stops and joins: the `with` block's exit, also on an error.
    A run shorter than one interval records none."""
    if cfg.system_metrics:
        mlflow.system_metrics.set_system_metrics_sampling_interval(cfg.system_metrics_interval)
        mlflow.system_metrics.set_system_metrics_samples_before_logging(1)
    return {"log_system_metrics": cfg.system_metrics}


_UNSAFE_IN_KEY = re.compile(r"[^A-Za-z0-9_-]+")


def metric_key(name: str) -> str:
    """A class (or other free-text) name as part of an MLflow metric or param key.

    MLflow accepts letters, digits, `_ - . / :` and spaces; MedMNIST's names hold commas and
    parentheses ("normal, benign"). Accents are dropped, and every run of other characters
    (dots and slashes too: they mean nesting to DVC and to MLflow's chart groups) becomes one
    `_`: "normal, benign" -> "normal_benign"."""
    ascii_name = unicodedata.normalize("NFKD", str(name)).encode("ascii", "ignore").decode()
    key = _UNSAFE_IN_KEY.sub("_", ascii_name).strip("_")
    if not key:
        raise ValueError(f"name {name!r} has no letter or digit to make a metric key from")
    return key


def inputs_digest(inputs: Any, length: int = 6) -> str:
    """A short digest of a run's inputs (config, data hashes, …) as JSON: equal inputs, equal digest."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:length]


def unique_run_name(base: str, inputs: Any) -> str:
    """`<base>-<digest of inputs>`, with `-2`, `-3`… when the experiment already holds that name
    (a forced rerun of the same inputs): runs of different inputs never share a name."""
    name = f"{base}-{inputs_digest(inputs)}"
    taken = {run.info.run_name for run in
             mlflow.search_runs(filter_string=f"attributes.run_name LIKE '{name}%'", output_format="list")}
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name}-{n}"
    return candidate


DATASET_DIGEST_CHARS = 16  # MLflow keeps at most 36 characters of a dataset digest


def log_dataset(images: Any, labels: Any, name: str, source: str, digest: str | None, context: str,
                **tags: str) -> None:
    """Log arrays as an input of the active run (the runs table's Dataset column): `digest` is
    the content hash the data carries (meta.json), or None to let MLflow hash the arrays."""
    with warnings.catch_warnings():  # a local path matches MLflow's local source class twice: harmless
        warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted in multiple ways")
        dataset = mlflow.data.from_numpy(images, targets=labels, source=source, name=name,
                                         digest=digest[:DATASET_DIGEST_CHARS] if digest else None)
    mlflow.log_input(dataset, context=context, tags=tags or None)


def log_split(data_meta: dict[str, Any], split: str, images: Any, labels: Any, context: str, **tags: str) -> None:
    """One split of the prepared data set as a run input: named `<source>-<split>`, digest = the
    split's content hash from meta.json, source = data/prepared."""
    log_dataset(images, labels, f"{data_meta['source'].get('name')}-{split}", "data/prepared",
                data_meta["content_hash"][split], context, **tags)


_INTERVAL_BOUND = re.compile(r"^(?P<metric>.+)_ci_(?P<side>low|high)(?P<suffix>_.+)?$")  # x_ci_low, x_ci_low_<class>


def split_intervals(metrics: dict[str, float]) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """(metrics without interval bounds, one row per interval): `x_ci_low`/`x_ci_high` (also a
    class's `x_ci_low_<class>`) would each be a one-point chart in MLflow; as rows
    (metric, value, ci_low, ci_high) they form one table."""
    values, rows = {}, {}
    for key, value in metrics.items():
        bound = _INTERVAL_BOUND.match(key)
        if bound is None:
            values[key] = value
            continue
        metric = bound["metric"] + (bound["suffix"] or "")
        rows.setdefault(metric, {"metric": metric, "value": None, "ci_low": None, "ci_high": None})[f"ci_{bound['side']}"] = value
    for metric, row in rows.items():
        row["value"] = values.get(metric)
    return values, [rows[m] for m in sorted(rows)]


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
    for variable, tag in (("GANAUG_TUNE_STUDY", "tune.study"), ("GANAUG_TUNE_TRIAL", "tune.trial")):
        if os.environ.get(variable):  # set by `ganaug tune apply --run`: the study and trial these params came from
            tags[tag] = os.environ[variable]
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
