"""Promotion on PneumoniaMNIST (README "The model card and promotion"): in a scratch clone of this
commit, at 28 px, the real stages train a weak generator (v1, promoted: no champion yet), then a
better one (v2, promoted past v1); a copier (v3) is refused by the memorisation gate; rollback
returns @champion to v1.

    .venv/bin/python benchmarks/promotion_pneumoniamnist.py [--work /tmp/promotion-pneumoniamnist]
        [--data ../shared/data/pneumoniamnist.npz] [--weak-epochs 2] [--better-epochs 12]

The copier is a network that returns training images (the normal class of the train split) with
Gaussian noise of 2 grey levels, judged by the evaluation train_gan runs on its last epoch
(`QualityEvaluator`: domain metrics with half-sample intervals and the memorisation audit, with
the project's reference classifier). Its version is registered from v2's logged model with the
card of that evaluation: the gates read only the card. The scratch project's MLflow store is
its own (mlflow.db in --work), so the versions are numbered from 1.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[1]
COPIER_NOISE = 2.0  # grey levels (uint8 scale) of the noise on each copied training image


def sh(work: Path, *argv: str, ok: tuple[int, ...] = (0,)) -> int:
    print(f"\n$ {' '.join(argv)}", flush=True)
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}", "PYTHONPATH": str(work / "src")}
    done = subprocess.run(argv, cwd=work, env=env)
    if done.returncode not in ok:
        sys.exit(f"{' '.join(argv)} exited {done.returncode}")
    return done.returncode


def set_params(work: Path, **sections: dict) -> None:
    yaml = YAML()
    params = yaml.load((work / "params.yaml").read_text())
    for section, values in sections.items():
        for key, value in values.items():
            node = params[section]
            *parents, leaf = key.split(".")
            for parent in parents:
                node = node[parent]
            node[leaf] = value
    with open(work / "params.yaml", "w") as f:
        yaml.dump(params, f)


def register_copier() -> None:
    """Run in the scratch project: v3 = v2's model with the card of a copier's final evaluation."""
    import mlflow
    import numpy as np
    import torch

    from ganaug.config import load_params
    from ganaug.data.packed import load_packed, read_meta
    from ganaug.device import describe
    from ganaug.stages import paths
    from ganaug.stages.train_gan import QualityEvaluator, select_training_data
    from ganaug.stages.train_reference import load_reference
    from ganaug.tracking import mlflow_utils, pyfunc_generator, registry

    class CopyingGenerator(torch.nn.Module):
        """G(z) = a training image picked by z, plus N(0, COPIER_NOISE) grey levels: it memorised its data."""

        def __init__(self, images: np.ndarray, latent_dim: int):
            super().__init__()
            self.images = torch.from_numpy(images).float()  # (N, 1, H, W) in [0, 255]
            self.latent_dim = latent_dim
            self.noise = torch.Generator().manual_seed(1)

        def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
            index = (z[:, 0].abs() * 1e6).long() % len(self.images)  # z is seeded noise: a fixed pick of images
            noise = torch.randn(self.images[index].shape, generator=self.noise)
            copies = (self.images[index] + COPIER_NOISE * noise).clamp(0, 255)
            return copies / 127.5 - 1  # (n, 1, H, W), G's range [-1, 1]

    params = load_params()
    cfg = params.gan
    meta = read_meta(paths.PREPARED)
    dataset = load_packed(paths.PREPARED, splits=("train",))
    data = select_training_data(dataset, cfg)
    cpu = torch.device("cpu")
    reference, extractor = load_reference(paths.REFERENCE, cpu)
    evaluator = QualityEvaluator(dataset, data, reference, extractor, cpu, None, meta["dataset_hash"], final_epoch=1)
    with torch.no_grad():
        final = evaluator(1, CopyingGenerator(data.images, cfg.latent_dim))
    mlflow_utils.setup()
    source = mlflow.MlflowClient().get_model_version(pyfunc_generator.REGISTERED_NAME, "2").source
    gan = {"gan.arch": f"copier (training images + N(0, {COPIER_NOISE:g}) grey levels)", "gan.mode": cfg.mode}
    card = registry.model_card(final, gan, meta, [dataset.class_names[c] for c in data.trained_classes], extractor,
                               dataset.train.images.shape[-1], {"epochs": 0, "steps": 0, "images_seen": 0, "train_seconds": 0},
                               describe(cpu))
    version = registry.register_generator(source, *card)
    print(f"registered the copier as v{version} (@challenger): memorisation_pixel_copy_rate "
          f"{final['memorisation_pixel_copy_rate']:.3f}, fd_domain {final['fd_domain']:.4g}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="/tmp/promotion-pneumoniamnist", help="scratch project (deleted first)")
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "pneumoniamnist.npz"))
    parser.add_argument("--weak-epochs", type=int, default=2, help="gan.epochs of v1")
    parser.add_argument("--better-epochs", type=int, default=12, help="gan.epochs of v2")
    parser.add_argument("--register-copier", action="store_true", help=argparse.SUPPRESS)  # internal: run in --work
    args = parser.parse_args()
    if args.register_copier:
        register_copier()
        return
    data = Path(args.data).resolve()
    if not data.is_file():
        sys.exit(f"{data}: no such file (PneumoniaMNIST .npz)")
    work = Path(args.work).resolve()
    shutil.rmtree(work, ignore_errors=True)
    subprocess.run(["git", "clone", "-q", str(ROOT), str(work)], check=True)
    (work / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=work, capture_output=True, text=True).stdout.strip()
    print(f"scratch clone of {commit} in {work}; data {data}")
    set_params(work, data={"source": "medmnist", "medmnist.path": str(data), "image_size": 28, "on_leakage": "drop"},
               reference={"epochs": 6}, gan={"epochs": args.weak_epochs, "eval_every": args.weak_epochs})
    for stage in ("prepare", "train-reference", "real-features", "train-gan"):
        sh(work, "bin/ganaug", stage)
    sh(work, "bin/ganaug", "promote")  # v1: no champion yet
    set_params(work, gan={"epochs": args.better_epochs, "eval_every": args.better_epochs})
    sh(work, "bin/ganaug", "train-gan")
    sh(work, "bin/ganaug", "promote")  # v2 against v1
    sh(work, ".venv/bin/python", "benchmarks/promotion_pneumoniamnist.py", "--register-copier")
    sh(work, "bin/ganaug", "promote", ok=(3,))  # v3, the copier, against v2: exit status 3
    sh(work, "bin/ganaug", "promote", "--rollback")  # @champion back to v1


if __name__ == "__main__":
    main()
