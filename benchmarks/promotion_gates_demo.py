"""The promotion gates on the image sets of tests/test_promotion.py: a dimmed, noisy generator
becomes the champion, then a copier (training images with ~2 grey levels of noise) is judged
against it. Prints both reports; README's "The model card and promotion" quotes the second.

    .venv/bin/python benchmarks/promotion_gates_demo.py [--store /tmp/promotion-demo]

Uses a fresh SQLite store in --store (deleted first) and the registry code train_gan runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", default="/tmp/promotion-demo", help="folder for the throwaway MLflow store")
    store = Path(parser.parse_args().store).resolve()
    shutil.rmtree(store, ignore_errors=True)
    store.mkdir(parents=True)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{store / 'mlflow.db'}"

    import mlflow

    from ganaug.config import GANConfig, PromoteConfig, flatten
    from ganaug.gan.generator import TrainedGenerator
    from ganaug.gan.train import build_networks
    from ganaug.tracking import mlflow_utils, pyfunc_generator, registry
    from test_promotion import DATA_HASH, EXTRACTOR, final_metrics, phantoms

    mlflow_utils.setup()
    cfg = dataclasses.replace(GANConfig(), latent_dim=8, base_channels=4, device="cpu")
    network, _ = build_networks(cfg, 28, 0)
    TrainedGenerator(network.eval(), dataclasses.asdict(cfg), ["normal"], [0], False, {}).save(store / "generator.pt")
    with mlflow.start_run():
        info = pyfunc_generator.log_generator(store / "generator.pt", 1, 28, 0, register=False)
    train = phantoms(150, seed=0)
    rng = np.random.default_rng(5)
    copier = np.clip(train[rng.integers(0, len(train), 120)] + rng.normal(0, 2, (120, 1, 28, 28)), 0, 255).astype(np.uint8)
    blurry = np.clip(phantoms(120, seed=2) * 0.8 + rng.normal(0, 20, (120, 1, 28, 28)), 0, 255).astype(np.uint8)
    meta = {"dataset_hash": DATA_HASH, "source": {"name": "phantom"}}
    for images in (blurry, copier):
        card = registry.model_card(final_metrics(images, train), flatten(cfg, "gan"), meta, ["normal"], EXTRACTOR, 28, {},
                                   {"device": "cpu"})
        registry.register_generator(info.model_uri, *card)
        print(registry.promote(PromoteConfig()).report(), flush=True)


if __name__ == "__main__":
    main()
