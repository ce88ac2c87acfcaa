"""`ganaug quality --real A --fake B`: every quality metric for any two image sets, as a table
and a JSON file.

A set is a packed dataset directory (`data/prepared`: its train split by default, or val; the
test split is refused, it is for the final classifier comparison only), a synthetic-set
directory (`data/synthetic`), or any `.npz` holding `images` uint8 (N, 1, H, W) and optionally
`labels` (N,).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ganaug.classify.train import extract_features, predict_proba
from ganaug.data.packed import ARRAYS_FILE, META_FILE, load_packed
from ganaug.device import pick_device
from ganaug.io import write_json
from ganaug.quality.inception import (
    FID_EXTRACTOR,
    find_inception_weights,
    inception_features,
    inception_score,
    load_fid_inception,
    load_inception_fc,
)
from ganaug.quality.suite import FeatureSet, feature_metrics, label_fidelity, memorisation, pixel_metrics, ssim_likeness
from ganaug.tracking.mlflow_utils import metric_key


def load_image_set(path: str | Path, split: str = "train") -> tuple[np.ndarray, np.ndarray | None, list[str] | None]:
    """(images (N, C, H, W) uint8, labels (N,) or None, class names or None) from a set path."""
    path = Path(path)
    if (path / META_FILE).is_file() and (path / ARRAYS_FILE).is_file():
        if split not in ("train", "val"):
            raise ValueError(f"split {split!r}: quality is measured against the train or val split; the test split is kept for the final comparison")
        dataset = load_packed(path)
        chosen = dataset.splits[split]
        return chosen.images, (None if chosen.multilabel else chosen.labels), dataset.class_names
    npz_path = path / "synthetic.npz" if path.is_dir() else path
    if not npz_path.is_file():
        raise FileNotFoundError(f"{str(path)!r}: expected a packed dataset directory, a synthetic-set directory or an .npz file")
    with np.load(npz_path) as npz:
        if "images" not in npz.files:
            raise ValueError(f"{str(npz_path)!r} has no 'images' array (found {sorted(npz.files)})")
        images = npz["images"]
        labels = npz["labels"] if "labels" in npz.files else None
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"{str(npz_path)!r}: images must be uint8 (N, 1, H, W); got {images.dtype} {images.shape}")
    return images, labels, None


def quality_report(real: np.ndarray, fake: np.ndarray, real_labels: np.ndarray | None, fake_labels: np.ndarray | None,
                   class_names: list[str] | None, reference: torch.nn.Module | None, extractor: str | None,
                   inception: torch.nn.Module | None, device: torch.device, n_bootstrap: int = 100, seed: int = 0,
                   inception_fc: np.ndarray | None = None) -> dict[str, float]:
    """All metrics of `fake` against `real`, with bootstrap intervals (fake set resampled).
    When both sets are labelled, real images of classes the fake set lacks are left out
    (a minority-class generator is compared with that class only)."""
    if real.shape[1:] != fake.shape[1:]:
        raise ValueError(f"real images {real.shape[1:]} and fake images {fake.shape[1:]} differ in shape")
    if real_labels is not None and fake_labels is not None:
        keep = np.isin(real_labels, np.unique(fake_labels))
        if not keep.any():
            raise ValueError("the real set has none of the fake set's classes")
        real, real_labels = real[keep], real_labels[keep]
    out = pixel_metrics(real, fake, seed=seed, with_ci=True, n_bootstrap=n_bootstrap)
    if real_labels is not None and fake_labels is not None:
        out |= ssim_likeness(fake, fake_labels, real, real_labels)
    else:
        out |= ssim_likeness(fake, np.zeros(len(fake), np.int64), real, np.zeros(len(real), np.int64))
    if reference is not None:
        real_f, fake_f = extract_features(reference, real, device), extract_features(reference, fake, device)
        out |= feature_metrics(FeatureSet("domain", extractor, real_f, fake_f), with_ci=True, n_bootstrap=n_bootstrap, seed=seed)
        audit, _ = memorisation(fake, real, fake_f, real_f, extractor)
        out |= audit
        if real_labels is not None and fake_labels is not None and class_names is not None:
            for c in sorted(set(np.unique(fake_labels)) & set(np.unique(real_labels))):
                rf, ff = real_f[real_labels == c], fake_f[fake_labels == c]
                if len(rf) > 5 and len(ff) > 5 and len(np.unique(fake_labels)) > 1:
                    out |= {f"{k}_{metric_key(class_names[c])}": v for k, v in feature_metrics(FeatureSet("domain", extractor, rf, ff), seed=seed).items()}
            out |= label_fidelity(predict_proba(reference, fake, device).argmax(1), fake_labels, class_names)
    if inception is not None:
        real_i, fake_i = (inception_features(inception, x, 64, device) for x in (real, fake))
        out |= feature_metrics(FeatureSet("inception", FID_EXTRACTOR, real_i, fake_i), with_ci=True, n_bootstrap=n_bootstrap, seed=seed)
        if inception_fc is not None:
            out["inception_score"], out["inception_score_std"] = inception_score(fake_i, inception_fc, splits=min(10, len(fake_i)))
    out["n_real"], out["n_fake"] = float(len(real)), float(len(fake))
    return out


def as_table(report: dict[str, float]) -> pd.DataFrame:
    rows = []
    for key, value in report.items():
        if key.endswith(("_ci_low", "_ci_high")):
            continue
        low, high = report.get(f"{key}_ci_low"), report.get(f"{key}_ci_high")
        rows.append({"metric": key, "value": f"{value:.4g}", "95% CI": "" if low is None else f"[{low:.4g}, {high:.4g}]"})
    return pd.DataFrame(rows)


def main(args: argparse.Namespace) -> int:
    from ganaug.stages.train_reference import load_reference

    device = pick_device("auto")
    real, real_labels, class_names = load_image_set(args.real, args.real_split)
    fake, fake_labels, fake_names = load_image_set(args.fake, "train")
    reference, extractor = None, None
    if Path(args.reference, "model.pt").is_file():
        reference, extractor = load_reference(Path(args.reference), device)
    else:
        print(f"no reference classifier at {args.reference}: domain-feature metrics skipped")
    weights = find_inception_weights(args.inception_weights)
    inception = load_fid_inception(weights, device) if weights else None
    inception_fc = load_inception_fc(weights) if weights else None
    if inception is None:
        print("no local pytorch-fid Inception weights: fid_inception / kid_inception skipped")
    report = quality_report(real, fake, real_labels, fake_labels, class_names or fake_names, reference, extractor,
                            inception, device, n_bootstrap=args.n_bootstrap, inception_fc=inception_fc)
    print(as_table(report).to_string(index=False))
    write_json(args.json, {"real": str(args.real), "fake": str(args.fake), "extractor": extractor, "metrics": report})
    print(f"wrote {args.json}")
    return 0

