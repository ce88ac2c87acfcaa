"""Data sources behind one interface: `SOURCES[name](data_config) -> PackedDataset`.

Every source returns uint8 (N, 1, H, W) images at `data.image_size`, split into
train / val / test, with class names and a record of where the images came from.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.model_selection import train_test_split

from ganaug.config import DataConfig
from ganaug.data import phantom
from ganaug.data.packed import SPLITS, PackedDataset, Split

MULTILABEL_FINDINGS = ("consolidation", "interstitial", "cardiomegaly", "effusion")


class DataSourceError(ValueError):
    """A data source is missing, unreadable or has the wrong layout; the message names it."""


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """Squash-resize uint8 (N, C, h, w) to (N, C, size, size) with antialiased bilinear."""
    if images.shape[-2:] == (size, size):
        return images
    out = []
    for start in range(0, len(images), 512):  # bounded memory for large sets
        batch = torch.from_numpy(images[start : start + 512]).float()
        batch = F.interpolate(batch, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out.append(batch.round().clamp(0, 255).to(torch.uint8).numpy())
    return np.concatenate(out)


def stratified_split(
    images: np.ndarray, labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int
) -> dict[str, Split]:
    """Stratified train/val/test split (on class index, or on the label combination if multi-hot;
    combinations too rare to split are pooled)."""
    strata = labels.astype(str) if labels.ndim == 1 else np.array(["".join(map(str, row)) for row in labels])
    if labels.ndim == 2:
        strata = _pool_rare_strata(strata, min_count=6)
    index = np.arange(len(images))
    held_out = val_fraction + test_fraction
    if held_out == 0:
        raise DataSourceError("data.val_fraction and data.test_fraction are both 0: a validation and a test split are needed")
    train_idx, rest_idx = train_test_split(index, test_size=held_out, stratify=strata, random_state=seed)
    val_share = val_fraction / held_out
    val_idx, test_idx = train_test_split(
        rest_idx, train_size=val_share, stratify=strata[rest_idx], random_state=seed
    )
    return {
        name: Split(images[np.sort(idx)], labels[np.sort(idx)])
        for name, idx in (("train", train_idx), ("val", val_idx), ("test", test_idx))
    }


def _pool_rare_strata(strata: np.ndarray, min_count: int) -> np.ndarray:
    values, counts = np.unique(strata, return_counts=True)
    rare = set(values[counts < min_count])
    pooled = np.array(["rare" if s in rare else s for s in strata])
    if 0 < (pooled == "rare").sum() < min_count:  # too few even pooled: join the largest stratum
        values, counts = np.unique(pooled[pooled != "rare"], return_counts=True)
        pooled[pooled == "rare"] = values[np.argmax(counts)]
    return pooled


def load_phantom(cfg: DataConfig) -> PackedDataset:
    """The embedded procedural chest-radiograph set (offline, deterministic for data.seed)."""
    pcfg = cfg.phantom
    generated = phantom.generate_phantoms(
        n=pcfg.n_images,
        size=cfg.image_size,
        seed=cfg.seed,
        class_fractions=pcfg.class_fractions,
        cardiomegaly_rate=pcfg.cardiomegaly_rate,
        effusion_rate=pcfg.effusion_rate,
        severity_range=tuple(pcfg.severity_range),
        progress=True,
    )
    if pcfg.label_mode == "binary":
        class_names = ["normal", "pneumonia"]
        labels = (generated.finding > 0).astype(np.int64)
    elif pcfg.label_mode == "three_class":
        class_names = list(phantom.FINDINGS)
        labels = generated.finding.astype(np.int64)
    else:  # multilabel: consolidation (bacterial), interstitial (viral), cardiomegaly, effusion
        class_names = list(MULTILABEL_FINDINGS)
        onehot = np.eye(len(phantom.FINDINGS), dtype=np.uint8)[generated.finding][:, 1:]
        labels = np.concatenate([onehot, generated.extras.astype(np.uint8)], axis=1)
    splits = stratified_split(generated.images, labels, cfg.val_fraction, cfg.test_fraction, cfg.seed)
    source = {
        "name": "phantom",
        "generator": "ganaug.data.phantom",
        "seed": cfg.seed,
        "n_images": pcfg.n_images,
        "class_fractions": pcfg.class_fractions,
        "cardiomegaly_rate": pcfg.cardiomegaly_rate,
        "effusion_rate": pcfg.effusion_rate,
        "severity_range": pcfg.severity_range,
        "label_mode": pcfg.label_mode,
    }
    preprocessing = {"image_size": cfg.image_size, "rendered_at": cfg.image_size, "split": "stratified", "split_seed": cfg.seed}
    return PackedDataset(splits, class_names, source, preprocessing)


def _medmnist_local_file(cfg: DataConfig) -> Path:
    """The configured .npz, or one downloaded by the medmnist package when no path is given."""
    mcfg = cfg.medmnist
    if mcfg.path is not None:
        path = Path(mcfg.path).expanduser()
        if not path.is_file():
            raise DataSourceError(
                f"data.medmnist.path={mcfg.path!r}: file not found (expected a MedMNIST .npz with "
                "train/val/test _images and _labels arrays)"
            )
        return path
    import medmnist

    if mcfg.flag not in medmnist.INFO:
        raise DataSourceError(f"data.medmnist.flag={mcfg.flag!r}: not a MedMNIST flag (known: {', '.join(sorted(medmnist.INFO))})")
    root = Path.home() / ".medmnist"
    root.mkdir(parents=True, exist_ok=True)
    data_class = getattr(medmnist, medmnist.INFO[mcfg.flag]["python_class"])
    try:
        data_class(split="train", download=True, size=mcfg.size, root=str(root))
    except Exception as exc:  # medmnist raises bare RuntimeError / URLError on no network
        raise DataSourceError(
            f"could not download MedMNIST {mcfg.flag!r} at size {mcfg.size} ({exc}); "
            "set data.medmnist.path to a local .npz instead"
        ) from exc
    suffix = "" if mcfg.size == 28 else f"_{mcfg.size}"
    return root / f"{mcfg.flag}{suffix}.npz"


def _medmnist_class_names(flag: str, n_classes: int) -> list[str]:
    import medmnist

    names = medmnist.INFO.get(flag, {}).get("label")
    if names and len(names) == n_classes:
        return [names[str(i)] for i in range(n_classes)]
    return [f"class_{i}" for i in range(n_classes)]


def load_medmnist(cfg: DataConfig) -> PackedDataset:
    """A MedMNIST `.npz` (official keys), keeping its official train/val/test split."""
    path = _medmnist_local_file(cfg)
    try:
        npz = np.load(path)
    except Exception as exc:
        raise DataSourceError(f"{str(path)!r} is not a readable .npz file: {exc}") from exc
    with npz:
        expected = [f"{s}_{k}" for s in SPLITS for k in ("images", "labels")]
        missing = [k for k in expected if k not in npz.files]
        if missing:
            raise DataSourceError(
                f"{str(path)!r} lacks MedMNIST arrays {missing} (expected keys {expected}, found {sorted(npz.files)})"
            )
        raw = {s: (npz[f"{s}_images"], npz[f"{s}_labels"]) for s in SPLITS}
    splits: dict[str, Split] = {}
    n_label_cols = None
    for name, (images, labels) in raw.items():
        if images.dtype != np.uint8 or images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] != 3):
            raise DataSourceError(
                f"{str(path)!r}: {name}_images has shape {images.shape} dtype {images.dtype}; "
                "expected uint8 (N, H, W) grayscale or (N, H, W, 3)"
            )
        if labels.ndim != 2 or len(labels) != len(images):
            raise DataSourceError(
                f"{str(path)!r}: {name}_labels has shape {labels.shape}; expected ({len(images)}, K)"
            )
        if n_label_cols is None:
            n_label_cols = labels.shape[1]
        if labels.shape[1] != n_label_cols:
            raise DataSourceError(f"{str(path)!r}: label widths differ between splits")
        if images.ndim == 4:  # RGB MedMNIST flags: luminance, so the data stays one channel
            images = np.round(images @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)
        images = resize_images(images[:, None], cfg.image_size)
        labels = labels[:, 0].astype(np.int64) if n_label_cols == 1 else labels.astype(np.uint8)
        splits[name] = Split(images, labels)
    n_classes = int(max(s.labels.max() for s in splits.values()) + 1) if n_label_cols == 1 else n_label_cols
    source = {
        "name": "medmnist",
        "flag": cfg.medmnist.flag,
        "path": str(path.resolve()),
        "file_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }
    native = raw["train"][0].shape[1]
    preprocessing = {
        "image_size": cfg.image_size,
        "native_size": int(native),
        "resize": "none" if native == cfg.image_size else "squash, bilinear antialiased",
        "split": "official MedMNIST split",
    }
    return PackedDataset(splits, _medmnist_class_names(cfg.medmnist.flag, n_classes), source, preprocessing)


SOURCES: dict[str, Callable[[DataConfig], PackedDataset]] = {
    "phantom": load_phantom,
    "medmnist": load_medmnist,
}


def check_classes(dataset: PackedDataset) -> None:
    """Every class must have images in every split: an empty class is an error, not a warning."""
    for name, split in dataset.splits.items():
        if len(split) == 0:
            raise DataSourceError(f"split {name!r} is empty (source {dataset.source.get('name')!r})")
        for class_name, count in zip(dataset.class_names, split.class_counts(dataset.n_classes)):
            if count == 0:
                raise DataSourceError(
                    f"class {class_name!r} has no images in the {name} split of source "
                    f"{dataset.source.get('name')!r}; every class needs images in train, val and test"
                )


def cross_split_duplicates(dataset: PackedDataset) -> dict[str, int]:
    """Exact pixel duplicates shared between splits (counted by image hash)."""
    hashes = {
        name: {hashlib.sha1(img.tobytes()).hexdigest() for img in split.images}
        for name, split in dataset.splits.items()
    }
    return {
        f"{a}-{b}": len(hashes[a] & hashes[b])
        for i, a in enumerate(SPLITS)
        for b in SPLITS[i + 1 :]
    }
