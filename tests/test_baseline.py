"""The committed baseline (dvc.lock, metrics/, plots/) belongs to the code at HEAD: `dvc status`
finds no stage whose command, git-tracked dependency (source, params.yaml) or git-tracked
output (the metrics and plots files) differs from what dvc.lock records.

Rule it keeps: after changing code that a stage depends on, or params.yaml, rerun the pipeline
(`make pipeline`) and commit dvc.lock, metrics/ and plots/ with the change. Outputs that live in
DVC's cache (data/prepared, models/…) are absent from a fresh clone and are not compared."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO


def git_tracked(paths: list[str]) -> set[str]:
    out = subprocess.run(["git", "ls-files", "--", *paths], cwd=REPO, capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip(f"not a git checkout ({out.stderr.strip()})")
    tracked = set(out.stdout.split())
    return {p for p in paths if p in tracked or any(t.startswith(p.rstrip("/") + "/") for t in tracked)}


def stale_entries(status: dict, tracked: set[str]) -> list[str]:
    """What in `dvc status --json` says the committed baseline was made by other code or params."""
    stale = []
    for stage, entries in status.items():
        for entry in entries:
            if entry == "changed command":
                stale.append(f"{stage}: command changed")
            elif isinstance(entry, dict):
                for kind in ("changed deps", "changed outs"):
                    for path, state in entry.get(kind, {}).items():
                        if path in tracked or isinstance(state, dict):  # params.yaml reports per section
                            stale.append(f"{stage}: {kind} {path} {state}")
    return stale


def test_committed_baseline_matches_the_code_at_head():
    lock = REPO / "dvc.lock"
    if not lock.is_file():
        pytest.skip("no dvc.lock committed")
    dvc = Path(sys.executable).with_name("dvc")
    out = subprocess.run([str(dvc) if dvc.exists() else "dvc", "status", "--json"], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout.strip().splitlines()[-1] or "{}")
    paths = sorted({p for entries in status.values() for e in entries if isinstance(e, dict)
                    for kind in ("changed deps", "changed outs") for p in e.get(kind, {})})
    stale = stale_entries(status, git_tracked(paths) if paths else set())
    assert not stale, ("dvc.lock, metrics/ or plots/ were made by other code or params than HEAD's: rerun "
                       "`make pipeline` and commit dvc.lock, metrics/ and plots/\n" + "\n".join(stale))


def test_stale_entries_ignore_outputs_that_live_in_the_cache():
    status = {"prepare": [{"changed deps": {"src/ganaug/data": "modified", "params.yaml": {"data": "modified"}}},
                          {"changed outs": {"data/prepared": "not in cache"}}, "changed command"],
              "train_gan": [{"changed deps": {"data/prepared": "deleted"}}, {"changed outs": {"metrics/gan.json": "modified"}}]}
    found = stale_entries(status, {"src/ganaug/data", "metrics/gan.json"})
    assert found == ["prepare: changed deps src/ganaug/data modified", "prepare: changed deps params.yaml {'data': 'modified'}",
                     "prepare: command changed", "train_gan: changed outs metrics/gan.json modified"]
    assert stale_entries({"train_gan": [{"changed deps": {"data/prepared": "deleted"}}]}, set()) == []
