"""Where a study lives, and what happens to the trials of a worker that died.

- default: SQLite at `<project root>/optuna.db` (an absolute path, like the MLflow store: DVC
  experiments run in temporary copies);
- `journal:<file>`: Optuna's `JournalFileBackend`, for several worker processes on one machine;
- `postgresql+psycopg2://…` (or any SQLAlchemy URL): several machines.

Killed workers. An RDB storage gets Optuna's heartbeat (`heartbeat_interval`, grace 2x) and
`RetryHeartbeatStaleTrialCallback` (RetryFailedTrialCallback's name since Optuna 4.9): a
RUNNING trial silent for the grace period is failed and enqueued again with the same params. Optuna 5.0's `JournalStorage` has no heartbeat (optuna/optuna#6615
asks for it), so for every storage `fail_dead_trials` also checks each RUNNING trial's
worker (host, pid and process start time, a trial user attribute): on this host, a worker that
no longer exists (or is a zombie) means the trial is failed and retried at once, through the
same callback.
"""

from __future__ import annotations

import os
import socket
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import TrialState

JOURNAL_PREFIX = "journal:"
WORKER_ATTR = "ganaug.worker"  # trial user attribute: {"host", "pid", "started"} of the process running it


def retry_callback(max_retries: int) -> RetryHeartbeatStaleTrialCallback:
    """Enqueue a failed (stale) trial again with its params, at most `max_retries` times."""
    with warnings.catch_warnings():  # experimental since Optuna 2.8, the supported spelling since 4.9
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RetryHeartbeatStaleTrialCallback(max_retry=max_retries)


def default_storage(root: Path) -> str:
    return f"sqlite:///{root / 'optuna.db'}"


def resolve_storage_url(storage: str | None, root: Path) -> str:
    """The storage as an absolute URL (`journal:` paths absolute too); a relative SQLite path
    is refused (it would land in a DVC experiment's temporary copy)."""
    if storage is None:
        return default_storage(root)
    if storage.startswith(JOURNAL_PREFIX):
        path = Path(storage.removeprefix(JOURNAL_PREFIX)).expanduser()
        if not str(path).strip():
            raise ValueError(f"storage {storage!r}: expected journal:<file>")
        return JOURNAL_PREFIX + str(path if path.is_absolute() else root / path)
    if storage.startswith("sqlite:///") and not storage.startswith("sqlite:////"):
        raise ValueError(f"storage {storage!r} is a relative SQLite path: use an absolute one (sqlite:////abs/optuna.db)")
    if storage.startswith(("postgresql://", "postgres://")):
        raise ValueError(f"storage {redact(storage)!r}: SQLAlchemy 2.1 reads postgresql:// as the psycopg 3 driver, which "
                         "is not installed; write postgresql+psycopg2://user@host[:port]/database")
    if "://" not in storage:
        raise ValueError(f"storage {storage!r}: expected null (SQLite at the project root), journal:<file>, "
                         "sqlite:////abs/path.db or a database URL such as postgresql+psycopg2://user@host/db")
    return storage


def redact(url: str) -> str:
    """The URL without its password (for messages and MLflow params)."""
    if "://" in url and "@" in url.split("://", 1)[1]:
        scheme, rest = url.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        return f"{scheme}://{credentials.split(':', 1)[0]}:***@{host}" if ":" in credentials else url
    return url


def open_storage(url: str, heartbeat_s: int, max_retries: int) -> optuna.storages.BaseStorage:
    """An Optuna storage for `url` (from `resolve_storage_url`); a storage that cannot be opened
    raises ValueError naming it."""
    retry = retry_callback(max_retries)
    try:
        if url.startswith(JOURNAL_PREFIX):
            path = Path(url.removeprefix(JOURNAL_PREFIX))
            path.parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(JournalFileBackend(str(path)))
        return RDBStorage(url, heartbeat_interval=heartbeat_s, grace_period=2 * heartbeat_s,
                          failed_trial_callback=retry, engine_kwargs=_engine_kwargs(url))
    except Exception as exc:  # SQLAlchemy, the driver or the file system: one line naming the storage
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ValueError(f"Optuna storage {redact(url)!r} cannot be opened: {first}") from exc


def _engine_kwargs(url: str) -> dict[str, Any]:
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 60}}  # several local workers wait for SQLite's write lock
    return {"pool_pre_ping": True}


def process_start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc/<pid>/stat field 22): tells a
    reused pid from the worker that had it; None where /proc is absent."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def worker_identity() -> dict[str, Any]:
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "started": process_start_time(pid)}


def worker_gone(worker: dict[str, Any]) -> bool:
    """True when `worker` ran on this host and its process no longer runs (gone, a zombie, or
    its pid now belongs to another process). Other hosts' workers: the heartbeat decides."""
    if not isinstance(worker, dict) or worker.get("host") != socket.gethostname():
        return False
    pid = worker.get("pid")
    if not isinstance(pid, int):
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":  # killed, not yet reaped by its parent
        return True
    started = worker.get("started")
    return started is not None and fields[19] != started


def fail_dead_trials(study: optuna.Study, max_retries: int) -> list[int]:
    """Fail the RUNNING trials whose worker died on this host and enqueue each again (same
    params, as the heartbeat's callback does); returns their numbers."""
    retry = retry_callback(max_retries)
    storage = study._storage
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not worker_gone(trial.user_attrs.get(WORKER_ATTR)):
            continue
        try:
            if not storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
                continue
        except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError):  # another worker failed it first
            continue
        retry(study, storage.get_trial(trial._trial_id))
        failed.append(trial.number)
    if failed:
        print(f"tune: trial(s) {failed} of a worker that died were failed and enqueued again")
    return failed


def original_trial_number(study: optuna.Study, trial: optuna.Trial) -> int:
    """The number of the trial this one retries (itself when it is not a retry)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        history = RetryHeartbeatStaleTrialCallback.retry_history(study._storage.get_trial(trial._trial_id))
    return history[0] if history else trial.number  # the first failed trial of a chain of retries
