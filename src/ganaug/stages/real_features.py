"""Stage `real_features`: pytorch-fid Inception pool3 features of the real *train* split,
computed once per dataset version and kept as a DVC output (`data/real_features/`), for the
FID, KID and Inception-space manifold metrics of train_gan. (The domain-feature statistics,
from the reference classifier, are train_reference's output.)

Without local Inception weights (`quality.inception_weights`, or pytorch-fid's file in the
torch hub cache) the stage writes only `meta.json` saying so, and the Inception metrics are
skipped downstream. Weights are never downloaded.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from ganaug.config import Params, QualityConfig
from ganaug.data.packed import load_packed, read_meta
from ganaug.device import describe, pick_device
from ganaug.io import atomic_dir, write_json
from ganaug.quality.inception import FID_EXTRACTOR, FID_FEATURE_DIM, find_inception_weights, inception_features, load_fid_inception
from ganaug.stages import paths

INCEPTION_FILE = "inception_train.npy"  # (N_train, 2048) float32, train-split order
META_FILE = "meta.json"


def real_inception_features(cfg: QualityConfig, images: np.ndarray) -> tuple[np.ndarray | None, dict]:
    """(features or None, description) of `images` with the configured local Inception weights."""
    weights = find_inception_weights(cfg.inception_weights)
    if weights is None:
        return None, {"available": False, "reason": "no local pytorch-fid Inception weights (quality.inception_weights is null "
                                                    "and the torch hub cache has none)"}
    device = pick_device(cfg.device)
    features = inception_features(load_fid_inception(weights, device), images, cfg.batch_size, device,
                                  mixed_precision=cfg.precision == "bf16")
    return features, {
        "available": True, "extractor": FID_EXTRACTOR, "dim": FID_FEATURE_DIM, "n": int(len(features)),
        "weights_file": str(weights), "weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
        "device": describe(device), "precision": cfg.precision if device.type == "cuda" else "fp32",
    }


def load_real_inception(directory: Path, dataset_hash: str) -> np.ndarray | None:
    """The stage's train-split Inception features, or None when it ran without weights.
    Refuses features of another dataset version."""
    meta_path = directory / META_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(f"{str(meta_path)!r} not found (run the real_features stage)")
    meta = json.loads(meta_path.read_text())
    if meta["dataset_hash"] != dataset_hash:
        raise ValueError(f"{directory} holds features of another data set than {paths.PREPARED}; rerun real_features")
    if not meta["inception"]["available"]:
        return None
    return np.load(directory / INCEPTION_FILE)


def main(params: Params) -> None:
    cfg = params.quality
    meta = read_meta(paths.PREPARED)
    train = load_packed(paths.PREPARED).train  # the train split only: the reference set of every quality metric
    features, inception = real_inception_features(cfg, train.images)
    with atomic_dir(paths.REAL_FEATURES) as tmp:
        if features is not None:
            np.save(tmp / INCEPTION_FILE, features)
        write_json(tmp / META_FILE, {"dataset_hash": meta["dataset_hash"], "split": "train", "inception": inception})
    if features is None:
        print(f"wrote {paths.REAL_FEATURES}: {inception['reason']}; FID/KID in Inception features will be skipped")
    else:
        print(f"wrote {paths.REAL_FEATURES}: Inception pool3 features of {len(features)} train images")
