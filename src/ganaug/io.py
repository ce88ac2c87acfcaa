"""Atomic file and directory writes: a failed or killed stage leaves no half-written output.

A temporary sibling is named `.<name>.tmp-<pid>-<random>`; a `kill -9` leaves it behind, and
the next write of the same path removes it (`remove_stale_temps`) unless its process is alive.
"""

from __future__ import annotations

import collections
import contextlib
import glob
import json
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np


def _umask() -> int:
    """The process's umask (reading it means setting it: set it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


KILL_AT_VARIABLE = "GANAUG_TEST_KILL_AT"
KILL_ONCE_VARIABLE = "GANAUG_TEST_KILL_ONCE"
_kill_point_hits: collections.Counter[str] = collections.Counter()


def kill_point(name: str) -> None:
    """Test hook (tests/test_kill.py): SIGKILL this process when GANAUG_TEST_KILL_AT is `name`,
    or `name@n` for the n-th time the point is reached; `prefix:*` matches every point
    `prefix:<anything>`. With GANAUG_TEST_KILL_ONCE set to a file path, only the first process
    to get there (and create that file) is killed: e.g. whichever of several study workers
    evaluates an epoch first. Points: `atomic_dir:<output name>` (files written, output not yet
    in place), `run_started:<stage>`, `gan_checkpoint_saved:<epoch>`, `train_gan_registered`,
    `tune_epoch:worker<i>` (each evaluated epoch of worker i's GAN trials), `tune_seed:worker<i>`
    (each classifier seed of worker i's mixing trials)."""
    wanted = os.environ.get(KILL_AT_VARIABLE)
    if not wanted:
        return
    point = wanted.split("@")[0]
    if point != name and not (point.endswith(":*") and name.startswith(point[:-1])):
        return
    _kill_point_hits[point] += 1
    if _kill_point_hits[point] != int(wanted.partition("@")[2] or 1):
        return
    once = os.environ.get(KILL_ONCE_VARIABLE)
    if once:
        try:
            os.close(os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:  # another process was killed here already
            return
    os.kill(os.getpid(), signal.SIGKILL)


def _temp_prefix(path: Path) -> str:
    return f".{path.name}.tmp-"


def process_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this machine (a zombie, killed and not yet reaped
    by its parent, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):  # no /proc (not Linux) or the process just went
        return True
    return state != "Z"


def remove_stale_temps(path: str | Path) -> list[Path]:
    """Remove the temporary siblings of `path` (`.<name>.tmp-<pid>-*`) whose process is gone,
    left by a killed write; returns what was removed. Those of a live process are kept."""
    path = Path(path)
    removed = []
    for stale in path.parent.glob(f"{glob.escape(_temp_prefix(path))}*"):
        pid = stale.name.removeprefix(_temp_prefix(path)).split("-")[0]
        if pid.isdigit() and process_alive(int(pid)):
            continue
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)
        removed.append(stale)
    return removed


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it replaces `path`, on error it vanishes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    tmp = Path(tempfile.mkdtemp(prefix=f"{_temp_prefix(path)}{os.getpid()}-", dir=path.parent))
    try:
        tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it 0700; outputs follow the umask like mkdir
        yield tmp
        kill_point(f"atomic_dir:{path.name}")
        if path.exists():
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling file path; on success it replaces `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    fd, name = tempfile.mkstemp(prefix=f"{_temp_prefix(path)}{os.getpid()}-", dir=path.parent, suffix=path.suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        tmp.chmod(0o666 & ~_umask())  # mkstemp makes it 0600; outputs follow the umask like open()
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_json(path: str | Path, obj: Any) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n")
