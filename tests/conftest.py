"""Shared fixtures: tiny real configs (the real code on small inputs) and the shared data path."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ruamel.yaml import YAML
from scipy.ndimage import gaussian_filter

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def shared_file(name: str) -> Path:
    """A file of ../shared/data, or skip the test with the reason."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"{path} is absent (real data for tests lives in ../shared/data)")
    return path


def smooth_images(n: int, size: int, seed: int) -> np.ndarray:
    """(n, 1, size, size) uint8 blurred noise: image-like local structure."""
    rng = np.random.default_rng(seed)
    blurred = gaussian_filter(rng.random((n, 1, size, size)), sigma=(0, 0, 2, 2))
    low = blurred.min(axis=(2, 3), keepdims=True)
    high = blurred.max(axis=(2, 3), keepdims=True)
    return np.round(255 * (blurred - low) / (high - low)).astype(np.uint8)


@contextlib.contextmanager
def prepared_project(root: Path, params: dict[str, Any]) -> Iterator[Path]:
    """`root` as a tiny project (dvc.yaml marks its root, params.yaml holds `params`) with its
    prepare and train_reference outputs, entered: the working directory, with an MLflow store of
    its own; both are restored on exit."""
    from ganaug import cli

    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    with open(root / "params.yaml", "w") as f:
        YAML().dump(params, f)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        patch.chdir(root)
        assert cli.main(["prepare"]) == 0
        assert cli.main(["train-reference"]) == 0
        yield root


def dvc_project(root: Path, params: dict[str, Any], copy: tuple[str, ...] = ()) -> tuple[Callable[..., str], dict[str, str]]:
    """`root` as a fresh git + DVC project holding this repository's pipeline (src, bin, dvc.yaml,
    .gitignore, DVC's plot templates, and the `copy` paths) with `params` as its params.yaml, all
    committed. Returns `sh(*cmd)` (runs in root, asserts success, returns stdout + stderr) and the
    environment it uses (this Python's bin first on PATH, an MLflow store of the project's own)."""
    shutil.copytree(REPO / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copytree(REPO / "bin", root / "bin")  # dvc.yaml's stages run bin/ganaug
    for name in ("dvc.yaml", ".gitignore", *copy):
        (shutil.copytree if (REPO / name).is_dir() else shutil.copy)(REPO / name, root / name)
    with open(root / "params.yaml", "w") as f:
        YAML().dump(params, f)
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "t@example.com",
    }

    def sh(*cmd: str) -> str:
        done = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
        return done.stdout + done.stderr

    sh("git", "init", "-q")
    sh("dvc", "init", "-q")
    sh("dvc", "config", "core.analytics", "false")
    shutil.copytree(REPO / ".dvc" / "plots", root / ".dvc" / "plots", dirs_exist_ok=True)  # dvc.yaml's custom templates
    sh("git", "add", "-A")
    sh("git", "commit", "-qm", "tiny pipeline")
    return sh, env
