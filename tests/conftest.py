"""Shared fixtures: tiny real configs (the real code on small inputs) and the shared data path."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
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
