"""Where `data.near_duplicate_threshold` comes from: the leakage check's similarity on real sets.

For each set (read through its `prepare` source at 64 px, PneumoniaMNIST at 28 px, the default
phantoms), prints as one JSON line per set:
- `closest_distinct`: the highest centred thumbnail correlation between two images of the set
  that are not pixel-identical (the whole pool, all pairs): a threshold above it flags nothing
  that is merely similar anatomy;
- `copies_min` / `copies_p5`: for 60 images, the correlation between the image and a lightly
  changed copy of it (JPEG q60 re-encode, Gaussian blur sigma 0.8 px, Gaussian noise sigma 8,
  gamma 0.8): a threshold below these catches such copies.

    .venv/bin/python benchmarks/near_duplicate_threshold.py [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from ganaug.config import params_from_dict
from ganaug.data.leakage import centred, image_hashes, thumbnails
from ganaug.data.sources import SOURCES

REPO = Path(__file__).resolve().parents[1]


def changed_copies(pixels: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    image = Image.fromarray(pixels)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=60)
    noise = np.random.default_rng(seed).normal(0, 8, pixels.shape)
    return {
        "jpeg_q60": np.asarray(Image.open(buffer)),
        "blur_0.8": np.asarray(image.filter(ImageFilter.GaussianBlur(0.8))),
        "noise_8": np.clip(pixels + noise, 0, 255).astype(np.uint8),
        "gamma_0.8": np.round(255 * (pixels / 255) ** 0.8).astype(np.uint8),
    }


def measure(name: str, images: np.ndarray) -> dict:
    thumbs = thumbnails(images)
    mean = thumbs.mean(dim=0)
    features = centred(thumbs, mean)
    hashes = np.array(image_hashes(images))
    closest = -1.0
    for start in range(0, len(features), 2048):
        sims = features[start : start + 2048] @ features.T
        same = hashes[start : start + 2048, None] == hashes[None, :]  # identical pixels (and the diagonal)
        sims[same] = -1
        closest = max(closest, float(sims.max()))
    rng = np.random.default_rng(0)
    scores: dict[str, list[float]] = {}
    for i in rng.choice(len(images), size=min(60, len(images)), replace=False):
        original = centred(thumbnails(images[i : i + 1]), mean)
        for kind, copy in changed_copies(images[i, 0], int(i)).items():
            scores.setdefault(kind, []).append(float(centred(thumbnails(copy[None, None]), mean) @ original.T))
    return {
        "set": name,
        "images": len(images),
        "closest_distinct": round(closest, 4),
        "copies_min": {k: round(min(v), 4) for k, v in scores.items()},
        "copies_p5": {k: round(float(np.percentile(v, 5)), 4) for k, v in scores.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    args = parser.parse_args()
    data = Path(args.data)
    sets = {
        "phantom (default params)": {},
        "kaggle chest_xray_224 (train + test)": {"source": "folders", "folders": {
            "root": str(data / "chest_xray_224"), "label_rule": "kaggle_binary", "splits": "ignore"}},
        "nih1000_64": {"source": "nih", "nih": {
            "csv": str(data / "nih1000_64" / "Data_Entry_2017.csv"), "images": str(data / "nih1000_64")}},
        "pneumoniamnist (28 px)": {"source": "medmnist", "image_size": 28, "medmnist": {
            "path": str(data / "pneumoniamnist.npz")}},
    }
    for name, raw in sets.items():
        cfg = params_from_dict({"data": raw}).data
        if cfg.source != "phantom" and not any(Path(p).exists() for p in _paths(raw)):
            print(json.dumps({"set": name, "skipped": "data not found"}))
            continue
        print(json.dumps(measure(name, SOURCES[cfg.source](cfg).images)), flush=True)


def _paths(raw: dict) -> list[str]:
    section = raw.get(raw["source"], {})
    return [v for k, v in section.items() if k in ("root", "csv", "path")]


if __name__ == "__main__":
    main()
