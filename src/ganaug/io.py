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
_kill_point_hits: collections.Counter[str] = collections.Counter()


def kill_point(name: str) -> None:
    """Test hook (tests/test_kill.py): SIGKILL this process when GANAUG_TEST_KILL_AT is `name`,
    or `name@n` for the n-th time the point is reached. Points: `atomic_dir:<output name>`
    (files written, output not yet in place), `run_started:<stage>`, `gan_checkpoint_saved:<epoch>`,
    `train_gan_registered`, `tune_epoch:worker<i>` (each evaluated epoch of worker i's trials)."""
    wanted = os.environ.get(KILL_AT_VARIABLE)
    if not wanted or wanted.split("@")[0] != name:
        return
    _kill_point_hits[name] += 1
    if _kill_point_hits[name] == int(wanted.partition("@")[2] or 1):
        os.kill(os.getpid(), signal.SIGKILL)


def _temp_prefix(path: Path) -> str:
    return f".{path.name}.tmp-"


def process_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


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
