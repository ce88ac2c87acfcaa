"""MLflow set-up shared by every stage: an absolute tracking URI, lineage tags, batched metrics.

DVC experiment runs can execute in temporary copies of the repository under
`.dvc/tmp/exps/`; a relative `sqlite:///mlflow.db` would be created there and lost, so the
store is always resolved to the real project root.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

EXPERIMENT = "ganaug"
_DVC_TEMP_MARKER = os.sep + os.path.join(".dvc", "tmp", "exps") + os.sep


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


def setup(experiment: str = EXPERIMENT) -> str:
    """Point MLflow at the store and select the experiment; returns the experiment id."""
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    found = mlflow.get_experiment_by_name(experiment)
    if found is not None:
        exp_id = found.experiment_id
    else:
        artifacts = None
        if uri.startswith("sqlite:"):  # keep artifacts beside the database, at an absolute path
            artifacts = (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri()
        try:
            exp_id = mlflow.create_experiment(experiment, artifact_location=artifacts)
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
