"""Stage `synthesize`: sample per-class counts from the trained generator and write the
synthetic set (packed) with a manifest: generator, seed, counts. A pure function of
(generator file, seed, counts)."""

from __future__ import annotations

import hashlib

import numpy as np

from ganaug.config import Params, SynthesizeConfig
from ganaug.data.packed import read_meta
from ganaug.gan.generator import TrainedGenerator
from ganaug.io import atomic_dir, write_json
from ganaug.stages import paths

SYNTHETIC_FILE = "synthetic.npz"
MANIFEST_FILE = "manifest.json"


def synthetic_counts(train_counts: list[int], trained_classes: list[int], target_ratio: float) -> dict[int, int]:
    """Raise each class the generator can produce to `target_ratio` x the largest real class."""
    target = int(round(target_ratio * max(train_counts)))
    return {c: max(0, target - train_counts[c]) for c in trained_classes}


def synthesize(generator: TrainedGenerator, train_counts: list[int], cfg: SynthesizeConfig) -> tuple[np.ndarray, np.ndarray, dict[int, int]]:
    counts = synthetic_counts(train_counts, generator.trained_classes, cfg.target_ratio)
    if sum(counts.values()) == 0:
        names = [generator.class_names[c] for c in generator.trained_classes]
        raise ValueError(
            f"synthesize.target_ratio={cfg.target_ratio}: classes {names} already have at least "
            f"{cfg.target_ratio} x the largest class ({max(train_counts)} images), so no synthetic "
            "image would be made; raise the ratio"
        )
    images, labels = generator.sample(counts, cfg.seed, cfg.batch_size)
    return images, labels, counts


def main(params: Params) -> None:
    cfg = params.synthesize
    meta = read_meta(paths.PREPARED)
    generator_file = paths.GAN / "generator.pt"
    generator = TrainedGenerator.load(generator_file)
    if generator.info.get("dataset_hash") != meta["dataset_hash"]:
        raise ValueError(f"{generator_file} was trained on another data set than {paths.PREPARED}; rerun train_gan")
    train_counts = [meta["counts"]["train"]["per_class"][name] for name in meta["class_names"]]
    images, labels, counts = synthesize(generator, train_counts, cfg)
    manifest = {
        "generator_file": str(generator_file),
        "generator_sha256": hashlib.sha256(generator_file.read_bytes()).hexdigest(),
        "generator_mlflow_run_id": generator.info.get("mlflow_run_id"),
        "dataset_hash": meta["dataset_hash"],
        "seed": cfg.seed,
        "target_ratio": cfg.target_ratio,
        "counts": {meta["class_names"][c]: n for c, n in counts.items()},
        "real_train_counts": dict(zip(meta["class_names"], train_counts)),
        "image_shape": list(images.shape[1:]),
        "filter": None,
    }
    with atomic_dir(paths.SYNTHETIC) as tmp:
        np.savez(tmp / SYNTHETIC_FILE, images=images, labels=labels)
        write_json(tmp / MANIFEST_FILE, manifest)
    print(f"wrote {len(images)} synthetic images {manifest['counts']} to {paths.SYNTHETIC}")


def load_synthetic(directory=paths.SYNTHETIC) -> tuple[np.ndarray, np.ndarray, dict]:
    import json

    path = directory / SYNTHETIC_FILE
    if not path.is_file():
        raise FileNotFoundError(f"synthetic set {str(path)!r} not found (run the synthesize stage)")
    with np.load(path) as npz:
        images, labels = npz["images"], npz["labels"]
    return images, labels, json.loads((directory / MANIFEST_FILE).read_text())
