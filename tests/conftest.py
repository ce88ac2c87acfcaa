"""Shared fixtures: tiny real configs (the real code on small inputs) and the shared data path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
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
