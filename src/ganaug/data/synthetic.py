"""The synthetic pool as written by the synthesize stage: synthetic.npz (images (N, C, H, W)
uint8, labels (N,) int64, class by class, each class in its stream order) and manifest.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

SYNTHETIC_FILE = "synthetic.npz"
MANIFEST_FILE = "manifest.json"


def load_synthetic(directory: str | Path) -> tuple[np.ndarray, np.ndarray, dict]:
    """(images, labels, manifest) of a synthesize output folder."""
    directory = Path(directory)
    path = directory / SYNTHETIC_FILE
    if not path.is_file():
        raise FileNotFoundError(f"synthetic set {str(path)!r} not found (run the synthesize stage)")
    with np.load(path) as npz:
        images, labels = npz["images"], npz["labels"]
    return images, labels, json.loads((directory / MANIFEST_FILE).read_text())
