"""Runs that survive a `kill -9`: each stage's run carries a key of its inputs and the process
that owns it, so a rerun of the same stage on the same inputs marks the runs a killed process
left RUNNING as KILLED (or resumes one, as train_gan does from its checkpoint); a run whose
process is still alive (another queued `dvc exp` worker) or lives on another host is never
touched. A resumed run logs what its checkpoint recorded but the store lacks.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import time
from collections.abc import Iterable, Iterator
from typing import Any

import mlflow
from mlflow.entities import Metric, RunStatus
from mlflow.tracking import MlflowClient

from ganaug.io import kill_point, process_alive
from ganaug.tracking import mlflow_utils
from ganaug.tracking.mlflow_utils import EXPERIMENT

STAGE_TAG = "ganaug.stage"  # set by mlflow_utils.lineage_tags
INPUT_KEY_TAG = "ganaug.input_key"
OWNER_HOST_TAG = "ganaug.owner.host"
OWNER_PID_TAG = "ganaug.owner.pid"


def input_key(**inputs: Any) -> str:
    """A short hash of what a run is a function of (params, data hashes, seed, arm)."""
    return mlflow_utils.inputs_digest(inputs, length=16)


def owner_tags() -> dict[str, str]:
    return {OWNER_HOST_TAG: socket.gethostname(), OWNER_PID_TAG: str(os.getpid())}


def owner_is_gone(tags: dict[str, str]) -> bool:
    """True when the run's owning process is known to be dead: same host, no such pid.
    Unknown owners (older runs, other hosts) count as alive."""
    pid = tags.get(OWNER_PID_TAG, "")
    return tags.get(OWNER_HOST_TAG) == socket.gethostname() and pid.isdigit() and not process_alive(int(pid))


def close_stale_runs(stage: str, key: str, keep: str | None = None) -> list[str]:
    """Mark KILLED the RUNNING runs of `stage` with input key `key` (except `keep`) whose
    process is gone; returns their ids."""
    experiment = mlflow.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        return []
    client = MlflowClient()
    found = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`{STAGE_TAG}` = '{stage}' AND tags.`{INPUT_KEY_TAG}` = '{key}' AND attributes.status = 'RUNNING'",
    )
    closed = []
    for run in found:
        if run.info.run_id != keep and owner_is_gone(run.data.tags):
            client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.KILLED))
            closed.append(run.info.run_id)
    if closed:
        print(f"{stage}: marked {len(closed)} run(s) of a killed earlier attempt as KILLED: {', '.join(closed)}")
    return closed


@contextlib.contextmanager
def start_run(stage: str, key: str, run_id: str | None = None, **kwargs: Any) -> Iterator[mlflow.ActiveRun]:
    """`mlflow.start_run` (new, or resuming `run_id`) after closing this stage's stale runs of
    the same inputs; the run is tagged with `key` and its owning process."""
    close_stale_runs(stage, key, keep=run_id)
    tags = {**kwargs.pop("tags", {}), STAGE_TAG: stage, INPUT_KEY_TAG: key, **owner_tags()}
    with mlflow.start_run(run_id=run_id, tags=tags, **kwargs) as run:
        kill_point(f"run_started:{stage}")
        yield run


def log_missing_metrics(run_id: str, records: Iterable[dict[str, float]], step_key: str, skip: Iterable[str] = ()) -> int:
    """Log each record's values at step `record[step_key]` that the run's history lacks
    (a kill between a checkpoint and its logging); returns how many were logged."""
    records = list(records)
    keys = sorted({k for r in records for k in r} - {step_key, *skip})
    client = MlflowClient()
    logged = {k: {m.step for m in client.get_metric_history(run_id, k)} for k in keys}
    now = int(time.time() * 1000)
    missing = [Metric(k, float(r[k]), now, int(r[step_key])) for r in records for k in keys
               if k in r and int(r[step_key]) not in logged[k]]
    for start in range(0, len(missing), 1000):  # log_batch takes at most 1000 metrics
        client.log_batch(run_id, metrics=missing[start:start + 1000])
    return len(missing)


def logged_image_steps(run_id: str, key: str) -> set[int]:
    """Steps at which `mlflow.log_image(..., key=key, step=...)` logged an image in the run."""
    pattern = re.compile(rf"^{re.escape(key)}[+%]step[+%](\d+)[+%]")
    names = (a.path.rsplit("/", 1)[-1] for a in MlflowClient().list_artifacts(run_id, "images"))
    return {int(m.group(1)) for m in map(pattern.match, names) if m}
