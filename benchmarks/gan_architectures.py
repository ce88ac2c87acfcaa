"""GAN architectures x DiffAugment at an equal training budget: quality and training speed.

For each prepared data set given (a `ganaug prepare` output directory: dataset.npz + meta.json):

1. trains the reference classifier on its *train* split (params.yaml `reference` settings,
   early stopping on val), as the train_reference stage does: its penultimate features define
   the Fréchet distance, its predictions the label fidelity;
2. for each architecture (--archs) and augmentation (--augments), trains a class-conditional
   GAN on the train split (dcgan runs its conditional variant, so every architecture sees the
   same images and labels) for the same number of real images through D (--kimg, rounded up
   to whole epochs), timing the optimisation steps only (no evaluation during training);
3. samples --n-eval images in the train split's class proportions (fixed seed, from the EMA
   of G when gan.ema_kimg > 0) and measures them against the *train* split (never val or
   test): `fd_domain` (all classes pooled), `ssim_real_fake` (same-class random pairs, mean
   over classes), `label_fidelity` (share the reference classifier assigns to the intended
   class, overall and per class), plus the rest of `feature_metrics` in the JSON.

Writes <out>/gan_architectures.json and <out>/gan_architectures.md (table + device) and
prints the table. A run that diverges (GANDivergenceError) is reported as such.

    .venv/bin/python benchmarks/gan_architectures.py PREPARED_DIR [PREPARED_DIR ...] \\
        [--kimg 50] [--archs dcgan cgan acgan] [--augments none diffaugment] [--device auto] \\
        [--set gan.optimizer=rmsprop --set gan.lr_g=1e-4 ...] [--out benchmarks/results/gan_architectures]

`--set section.key=value` overrides params.yaml defaults (validated like params.yaml); the
benchmark itself sets gan.arch, gan.mode=conditional, gan.augment and gan.epochs.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ruamel.yaml import YAML

from ganaug.classify.train import extract_features, predict_proba, train_classifier
from ganaug.config import GANConfig, flatten, params_from_dict, to_dict
from ganaug.data.packed import PackedDataset, load_packed, read_meta
from ganaug.device import describe, pick_device
from ganaug.gan import GANS
from ganaug.gan.generator import TrainedGenerator
from ganaug.gan.train import EpochReport, GANDivergenceError, training_loop
from ganaug.io import atomic_file, write_json
from ganaug.quality.suite import FeatureSet, feature_metrics, label_fidelity, pixel_metrics
from ganaug.stages.train_reference import extractor_name

SAMPLE_SEED = 20_240_601


def cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({len(os.sched_getaffinity(0))} cores)"
    return platform.processor() or platform.machine()


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """['gan.lr_g=1e-4', ...] -> {'gan': {'lr_g': 0.0001}} (values read as YAML, like `dvc exp run -S`)."""
    raw: dict[str, Any] = {}
    yaml = YAML(typ="safe", pure=True)
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or "." not in key:
            raise SystemExit(f"--set {pair!r}: expected section.key=value, e.g. gan.lr_g=1e-4")
        *sections, name = key.split(".")
        node = raw
        for section in sections:
            node = node.setdefault(section, {})
        node[name] = yaml.load(value)
    return raw


def gan_config(base: dict[str, Any], arch: str, augment: str, epochs: int) -> GANConfig:
    """params.yaml defaults + --set overrides + this run's arch/augment/epochs, validated."""
    gan = {**base.get("gan", {}), "arch": arch, "mode": "conditional", "augment": augment, "epochs": epochs,
           "eval_every": epochs}
    return params_from_dict({**base, "gan": gan}).gan


def epochs_for_budget(n_train: int, cfg: GANConfig, kimg: float) -> tuple[int, int]:
    """(epochs, real images through D) for at least kimg * 1000 images, as the loop counts them."""
    batch = min(cfg.batch_size, n_train // cfg.n_critic)
    per_epoch = (n_train // (batch * cfg.n_critic)) * batch * cfg.n_critic
    epochs = max(1, math.ceil(kimg * 1000 / per_epoch))
    return epochs, epochs * per_epoch


def eval_counts(train_labels: np.ndarray, n_classes: int, n_eval: int) -> dict[int, int]:
    share = np.bincount(train_labels, minlength=n_classes) / len(train_labels)
    return {c: max(2, int(round(n_eval * s))) for c, s in enumerate(share)}


def quality(generator: TrainedGenerator, dataset: PackedDataset, reference: torch.nn.Module, extractor: str,
            real_features: np.ndarray, n_eval: int, device: torch.device) -> dict[str, float]:
    """Generated vs real *train* images: domain-feature metrics, SSIM, label fidelity."""
    fake, fake_labels = generator.sample(eval_counts(dataset.train.labels, dataset.n_classes, n_eval), SAMPLE_SEED)
    fake_features = extract_features(reference, fake, device)
    out = feature_metrics(FeatureSet("domain", extractor, real_features, fake_features), seed=0)
    pixels = [pixel_metrics(dataset.train.of_class(c), fake[fake_labels == c], seed=c) for c in range(dataset.n_classes)]
    for key in ("ssim_real_fake", "ms_ssim_real_fake"):
        out[key] = float(np.mean([p[key] for p in pixels]))
    predicted = predict_proba(reference, fake, device).argmax(1)
    return out | label_fidelity(predicted, fake_labels, dataset.class_names)


def run_dataset(path: Path, args: argparse.Namespace, base: dict[str, Any], device: torch.device) -> list[dict[str, Any]]:
    meta = read_meta(path)
    if meta["label_kind"] != "class_index":
        raise SystemExit(f"{path}: multi-label data set; this benchmark needs class indices")
    dataset = load_packed(path)
    name = f"{meta['source'].get('name')} {dataset.image_shape[-1]} px, {'/'.join(dataset.class_names)}"
    ref_cfg = params_from_dict(base).reference
    print(f"== {name}: train {len(dataset.train)} images {dict(zip(dataset.class_names, dataset.train.class_counts(dataset.n_classes)))}")
    start = time.perf_counter()
    ref = train_classifier(dataset.train.images, dataset.train.labels, dataset.val.images, dataset.val.labels,
                           dataset.n_classes, ref_cfg.arch, ref_cfg.epochs, ref_cfg.batch_size, ref_cfg.lr,
                           ref_cfg.weight_decay, ref_cfg.patience, ref_cfg.seed, device)
    val_accuracy = float((predict_proba(ref.model, dataset.val.images, device).argmax(1) == dataset.val.labels).mean())
    real_features = extract_features(ref.model, dataset.train.images, device)
    extractor = extractor_name(ref_cfg.arch, meta["dataset_hash"])
    print(f"   reference classifier: val accuracy {val_accuracy:.3f} ({time.perf_counter() - start:.0f} s)")

    rows = []
    for arch in args.archs:
        for augment in args.augments:
            probe = gan_config(base, arch, augment, 1)
            epochs, images = epochs_for_budget(len(dataset.train), probe, args.kimg)
            cfg = gan_config(base, arch, augment, epochs)
            row: dict[str, Any] = {"data": name, "path": str(path), "dataset_hash": meta["dataset_hash"], "arch": arch, "augment": augment,
                                   "epochs": epochs, "kimg": images / 1000, "reference_val_accuracy": val_accuracy,
                                   "gan": to_dict(cfg)}
            seconds = {"train": 0.0}

            def on_epoch_end(report: EpochReport) -> None:
                seconds["train"] += report.train_seconds

            work = Path(tempfile.mkdtemp(prefix="gan_bench_"))
            try:
                result = training_loop(dataset.train.images, dataset.train.labels, dataset.n_classes, cfg,
                                       work / "checkpoint.pt", device, on_epoch_end=on_epoch_end)
                generator = TrainedGenerator(result.generator, to_dict(cfg), dataset.class_names,
                                             list(range(dataset.n_classes)), True, {})
                row |= {"status": "ok", "train_seconds": seconds["train"], "images_per_second": images / seconds["train"]}
                row |= quality(generator, dataset, ref.model, extractor, real_features, args.n_eval, device)
                if result.augment_p is not None:
                    row["augment_p"] = result.augment_p
            except GANDivergenceError as exc:
                row |= {"status": f"diverged: {exc}"}
            finally:
                shutil.rmtree(work, ignore_errors=True)
            print(f"   {arch:6s} {augment:12s} {format_row(row)}")
            rows.append(row)
    return rows


def _fmt(row: dict[str, Any], key: str, spec: str) -> str:
    return format(row[key], spec) if key in row else "–"


def format_row(row: dict[str, Any]) -> str:
    if row["status"] != "ok":
        return row["status"].split(";")[0]
    return (f"{row['images_per_second']:.0f} img/s, fd_domain {row['fd_domain']:.3f}, ssim {row['ssim_real_fake']:.3f}, "
            f"label fidelity {row['label_fidelity']:.3f}")


def markdown(rows: list[dict[str, Any]], device_info: dict[str, str], command: str) -> str:
    lines = [
        "| data | arch | augment | kimg | images/s (training) | fd_domain ↓ | ssim_real_fake | label_fidelity | per class |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        per_class = ", ".join(f"{k.removeprefix('label_fidelity_')} {v:.2f}" for k, v in r.items()
                              if k.startswith("label_fidelity_"))
        status = "" if r["status"] == "ok" else f" ({r['status'].split(';')[0]})"
        lines.append(f"| {r['data']} | {r['arch']}{status} | {r['augment']} | {r['kimg']:.1f} | {_fmt(r, 'images_per_second', '.0f')} | "
                     f"{_fmt(r, 'fd_domain', '.3f')} | {_fmt(r, 'ssim_real_fake', '.3f')} | {_fmt(r, 'label_fidelity', '.3f')} | {per_class} |")
    where = ", ".join(f"{k} {v}" for k, v in device_info.items())
    return "\n".join(lines) + f"\n\nDevice: {where}.\nCommand: `{command}`\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("prepared", nargs="+", type=Path, help="prepared data set directories (dataset.npz + meta.json)")
    parser.add_argument("--kimg", type=float, default=50.0, help="real images through D per run, in thousands")
    parser.add_argument("--archs", nargs="+", default=["dcgan", "cgan", "acgan"])
    parser.add_argument("--augments", nargs="+", default=["none", "diffaugment"], choices=["none", "diffaugment", "ada"])
    parser.add_argument("--n-eval", type=int, default=1000, help="generated images per quality evaluation")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/gan_architectures"))
    args = parser.parse_args(argv)
    base = parse_overrides(args.overrides)
    params_from_dict(base)  # fail on a bad --set before any training
    unknown = set(args.archs) - set(GANS)
    if unknown:
        raise SystemExit(f"--archs {sorted(unknown)}: expected some of {sorted(GANS)}")
    device = pick_device(args.device, "--device")
    device_info = {**describe(device), "cpu": cpu_name(), "torch": torch.__version__}
    print(f"device: {device_info}; overrides: {flatten(base) or 'none'}; gan.arch values: {args.archs}")

    rows = [row for path in args.prepared for row in run_dataset(path, args, base, device)]
    command = "python benchmarks/gan_architectures.py " + " ".join(sys.argv[1:] if argv is None else argv)
    table = markdown(rows, device_info, command)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "gan_architectures.json", {"device": device_info, "command": command, "rows": rows})
    with atomic_file(args.out / "gan_architectures.md") as tmp:
        tmp.write_text(table)
    print("\n" + table)
    print(f"wrote {args.out / 'gan_architectures.json'} and {args.out / 'gan_architectures.md'}")


if __name__ == "__main__":
    main()
