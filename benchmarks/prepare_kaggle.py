"""Time `prepare` on the Kaggle 224 px pneumonia training set (5216 JPEGs) at 64 px.

The train folder's NORMAL / PNEUMONIA are linked into a temporary class-folder tree, so
`prepare` reads exactly those 5216 images, labels them with the kaggle_binary rule, splits them
patient-aware (duplicates kept together), runs the leakage check and writes the packed set.
Prints one JSON line: the end-to-end seconds of each repeat (read + preprocess + split + leakage
+ write), the read-and-preprocess part alone, images per second, workers, machine.

    .venv/bin/python benchmarks/prepare_kaggle.py [--root ../shared/data/chest_xray_224]
        [--size 64] [--workers 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from ganaug.config import params_from_dict
from ganaug.data.build import build_dataset
from ganaug.data.packed import save_packed
from ganaug.data.sources import SOURCES

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", default=str(REPO.parent / "shared" / "data" / "chest_xray_224"))
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    train = Path(args.root) / "train"
    if not train.is_dir():
        raise SystemExit(f"{train} not found (the Kaggle 224 px set, see ../shared/data/README.md)")
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "kaggle_train"
        tree.mkdir()
        for class_dir in ("NORMAL", "PNEUMONIA"):
            os.symlink(train / class_dir, tree / class_dir)
        cfg = params_from_dict({"data": {
            "source": "folders", "image_size": args.size, "workers": args.workers,
            "folders": {"root": str(tree), "label_rule": "kaggle_binary"},
        }}).data
        start = time.perf_counter()
        raw = SOURCES["folders"](cfg)
        read_seconds = time.perf_counter() - start
        totals = []
        for repeat in range(args.repeats):
            start = time.perf_counter()
            dataset = build_dataset(cfg)
            save_packed(dataset, Path(tmp) / f"prepared_{repeat}")
            totals.append(time.perf_counter() - start)
    n = len(raw.images)
    print(json.dumps({
        "benchmark": "prepare_kaggle_train",
        "images": n,
        "image_size": args.size,
        "workers": args.workers,
        "prepare_seconds": [round(t, 2) for t in totals],
        "prepare_seconds_median": round(statistics.median(totals), 2),
        "read_preprocess_seconds": round(read_seconds, 2),
        "images_per_second": round(n / statistics.median(totals), 1),
        "split_counts": {k: len(v) for k, v in dataset.splits.items()},
        "duplicate_images_kept_together": dataset.extra["split"]["duplicate_images_kept_together"],
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }))


if __name__ == "__main__":
    main()
