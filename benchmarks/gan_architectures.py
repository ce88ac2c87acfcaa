"""GAN architectures x DiffAugment at an equal budget of real images: quality and training speed.

For each prepared data set given (a `ganaug prepare` output directory: dataset.npz + meta.json):

1. trains the reference classifier on its *train* split (params.yaml `reference` settings,
   early stopping on val), as the train_reference stage does: its penultimate features define
   the domain metrics, its predictions the label fidelity;
2. for each architecture (--archs) and augmentation (--augments) trains the GAN on the train
   split for the same budget of real images (--kimg thousands, rounded up to whole epochs),
   timing the optimisation steps only (no evaluation during training):
   - dcgan (its conditional variant), cgan, acgan, stylegan2: class-conditional on all
     classes; the budget counts real images through D (batch x n_critic per G step);
   - cyclegan: a translator from gan.cyclegan.source_class to target_class (null: the train
     split's largest to its smallest class, the train_gan rule, `cyclegan.translation_classes`),
     trained on those two classes only; the budget counts the real images of a step, a source
     batch and a target batch (what its two discriminators see, as its loop counts
     `images_seen`). It takes no D augmentation, so it runs once per data set (augment "n/a");
3. evaluates against the *train* split (never val or test), all from `ganaug.quality`:
   - noise-driven archs: --n-eval samples in the train split's class proportions (fixed seed;
     the EMA of G when gan.ema_kimg > 0) against all train images;
   - cyclegan: min(--n-eval, source-class train images) of its source-class train images
     (a seeded draw, each at most once) translated, as samples of the *target class only*,
     against the target class's train images; plus translation_change (mean absolute
     difference to the source, 0-1), translation_ssim_to_source, and two baselines of the
     untranslated sources (label_fidelity_untranslated, fd_domain_untranslated: what a
     translator that returns its input would score);
   metrics: fd_domain and kd_domain (the classes pooled, and each class against its own train
   images as `<metric>_<class>`, named as train_gan names them: a translator's target-class-only
   figures compare with the other rows' figures of that class) with 95 % half-sample intervals
   (N/2 of both sets without replacement, 50 replicates, centred on the full-set value:
   `quality.bootstrap.half_sample_ci`),
   precision/recall/density/coverage_domain with 95 % percentile-bootstrap intervals,
   ssim_real_fake (same-class random pairs, mean over classes), label_fidelity (overall and
   per class), the memorisation copy rates in pixels and domain features
   (`quality.suite.memorisation`). The intervals describe the evaluation sets' sampling
   variability at this size, not the variability between training seeds.

Writes <out>/gan_architectures.json and <out>/gan_architectures.md (table + device + commit)
and prints the table. A run that diverges (GANDivergenceError) is reported as such.

    .venv/bin/python benchmarks/gan_architectures.py PREPARED_DIR [PREPARED_DIR ...] \\
        [--kimg 50] [--archs dcgan cgan acgan stylegan2 cyclegan] [--augments none diffaugment] \\
        [--device auto] [--set gan.optimizer=rmsprop --set gan.lr_g=1e-4 ...] \\
        [--out benchmarks/results/gan_architectures]

`--set section.key=value` overrides params.yaml defaults for every architecture (validated like
params.yaml); the benchmark itself sets gan.arch, gan.mode (conditional; minority for cyclegan,
as its config requires), gan.augment (none for cyclegan) and gan.epochs.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shutil
import subprocess
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
from ganaug.gan import GANS, cyclegan
from ganaug.gan.generator import TrainedGenerator
from ganaug.gan.train import GANDivergenceError, GANTrainResult, training_loop
from ganaug.io import atomic_file, write_json
from ganaug.quality.frechet import frechet_distance_of_features
from ganaug.quality.suite import FeatureSet, feature_metrics, label_fidelity, memorisation, pixel_metrics
from ganaug.quality.translation import change_metrics
from ganaug.stages.train_reference import extractor_name
from ganaug.tracking.mlflow_utils import metric_key

SAMPLE_SEED = 20_240_601
ARCHS = ["dcgan", "cgan", "acgan", "stylegan2", "cyclegan"]
TRANSLATORS = ("cyclegan",)  # trained on two classes, sampled by translating source-class images
INTERVAL_METRICS = ("fd_domain", "kd_domain", "precision_domain", "recall_domain", "density_domain", "coverage_domain")


def cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({len(os.sched_getaffinity(0))} cores)"
    return platform.processor() or platform.machine()


def git_commit() -> str:
    """Short commit of the code that ran, '+dirty' when the tree has uncommitted changes."""
    here = Path(__file__).resolve().parent
    run = lambda *a: subprocess.run(["git", *a], cwd=here, capture_output=True, text=True).stdout.strip()  # noqa: E731
    commit = run("rev-parse", "--short", "HEAD") or "unknown"
    return commit + ("+dirty" if run("status", "--porcelain", "--untracked-files=no") else "")


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
    """params.yaml defaults + --set overrides + this run's arch/mode/augment/epochs, validated."""
    translator = arch in TRANSLATORS
    gan = {**base.get("gan", {}), "arch": arch, "mode": "minority" if translator else "conditional",
           "augment": "none" if translator else augment, "epochs": epochs, "eval_every": epochs}
    return params_from_dict({**base, "gan": gan}).gan


def translation_data(dataset: PackedDataset, cfg: GANConfig) -> tuple[int, int, np.ndarray, np.ndarray]:
    """(source class, target class, source train images, target train images) by the train_gan rule."""
    source, target = cyclegan.translation_classes(dataset.class_names, list(dataset.train.class_counts(dataset.n_classes)), cfg)
    return source, target, dataset.train.of_class(source), dataset.train.of_class(target)


def images_per_epoch(dataset: PackedDataset, cfg: GANConfig) -> int:
    """Real images one epoch of the arch's training loop draws (checked against the loop's count)."""
    if cfg.arch in TRANSLATORS:  # steps of a source and a target batch over the larger class
        _, _, a, b = translation_data(dataset, cfg)
        batch = min(cfg.batch_size, len(a), len(b))
        return (max(len(a), len(b)) // batch) * 2 * batch
    n = len(dataset.train)
    batch = min(cfg.batch_size, n // cfg.n_critic)
    return (n // (batch * cfg.n_critic)) * batch * cfg.n_critic


def epochs_for_budget(dataset: PackedDataset, cfg: GANConfig, kimg: float) -> tuple[int, int]:
    """(epochs, real images) for at least kimg * 1000 real images, as the loop counts them."""
    per_epoch = images_per_epoch(dataset, cfg)
    epochs = max(1, math.ceil(kimg * 1000 / per_epoch))
    return epochs, epochs * per_epoch


def eval_counts(train_labels: np.ndarray, n_classes: int, n_eval: int) -> dict[int, int]:
    share = np.bincount(train_labels, minlength=n_classes) / len(train_labels)
    return {c: max(2, int(round(n_eval * s))) for c, s in enumerate(share)}


def quality(fake: np.ndarray, fake_labels: np.ndarray, dataset: PackedDataset, reference: torch.nn.Module,
            extractor: str, train_features: np.ndarray, device: torch.device) -> dict[str, float]:
    """Generated images (N, C, R, R) uint8 with their intended classes (N,) against the real
    *train* images and features (train_features: (N_train, D), train-split order) of those
    classes only: domain-feature metrics with intervals, SSIM, label fidelity, memorisation."""
    classes = np.unique(fake_labels)
    in_classes = np.isin(dataset.train.labels, classes)
    real_images, real_features = dataset.train.images[in_classes], train_features[in_classes]
    fake_features = extract_features(reference, fake, device)
    out = feature_metrics(FeatureSet("domain", extractor, real_features, fake_features), with_ci=True, seed=0)
    for c in classes:  # each class against its own train images, named as train_gan names them (fd_domain_normal, ...)
        per_class = out if len(classes) == 1 else feature_metrics(
            FeatureSet("domain", extractor, train_features[dataset.train.labels == c], fake_features[fake_labels == c]),
            with_ci=True, seed=0)
        out = out | {f"{k}_{metric_key(dataset.class_names[c])}": v for k, v in per_class.items()}
    pixels = [pixel_metrics(dataset.train.of_class(c), fake[fake_labels == c], seed=int(c)) for c in classes]
    for key in ("ssim_real_fake", "ms_ssim_real_fake"):
        out[key] = float(np.mean([p[key] for p in pixels]))
    out |= label_fidelity(predict_proba(reference, fake, device).argmax(1), fake_labels, dataset.class_names)
    audit, _ = memorisation(fake, real_images, fake_features, real_features, extractor)
    return out | audit


def samples(result: GANTrainResult, cfg: GANConfig, dataset: PackedDataset, n_eval: int, reference: torch.nn.Module,
            train_features: np.ndarray, device: torch.device) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(images, intended classes, extra row fields) of a trained arch: noise samples in the train
    split's class proportions, or a translator's translations of source-class train images (with
    its change metrics and the no-op baselines: the untranslated sources against the target class)."""
    if cfg.arch not in TRANSLATORS:
        generator = TrainedGenerator(result.generator, to_dict(cfg), dataset.class_names, list(range(dataset.n_classes)), True, {})
        fake, fake_labels = generator.sample(eval_counts(dataset.train.labels, dataset.n_classes, n_eval), SAMPLE_SEED)
        return fake, fake_labels, {"samples_cover": "all classes"}
    source, target, source_images, _ = translation_data(dataset, cfg)
    sources = source_images[cyclegan.source_indices(len(source_images), min(len(source_images), n_eval), SAMPLE_SEED)]
    translated = cyclegan.translate(result.generator, sources)  # (n, C, R, R) uint8
    extra = {"samples_cover": f"target class {dataset.class_names[target]} only (translated from {dataset.class_names[source]})",
             "source_class": dataset.class_names[source], "target_class": dataset.class_names[target],
             "label_fidelity_untranslated": float((predict_proba(reference, sources, device).argmax(1) == target).mean()),
             "fd_domain_untranslated": frechet_distance_of_features(train_features[dataset.train.labels == target],
                                                                    extract_features(reference, sources, device)),
             **change_metrics(sources, translated)}
    return translated, np.full(len(translated), target), extra


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
    train_features = extract_features(ref.model, dataset.train.images, device)  # (N_train, D), train-split order
    extractor = extractor_name(ref_cfg.arch, meta["dataset_hash"])
    print(f"   reference classifier: val accuracy {val_accuracy:.3f} ({time.perf_counter() - start:.0f} s)")

    runs = [(arch, augment) for arch in args.archs for augment in args.augments if arch not in TRANSLATORS]
    runs += [(arch, "n/a") for arch in args.archs if arch in TRANSLATORS]  # no D augmentation: once
    rows = []
    for arch, augment in sorted(runs, key=lambda r: args.archs.index(r[0])):
        epochs, images = epochs_for_budget(dataset, gan_config(base, arch, augment if augment != "n/a" else "none", 1), args.kimg)
        cfg = gan_config(base, arch, augment if augment != "n/a" else "none", epochs)
        row: dict[str, Any] = {"data": name, "path": str(path), "dataset_hash": meta["dataset_hash"], "arch": arch, "augment": augment,
                               "class_names": dataset.class_names, "epochs": epochs, "kimg": images / 1000, "reference_val_accuracy": val_accuracy,
                               "gan": to_dict(cfg)}
        work = Path(tempfile.mkdtemp(prefix="gan_bench_"))
        try:
            if arch in TRANSLATORS:
                _, _, source_images, target_images = translation_data(dataset, cfg)
                result = cyclegan.translation_loop(source_images, target_images, cfg, work / "checkpoint.pt", device)
            else:
                result = training_loop(dataset.train.images, dataset.train.labels, dataset.n_classes, cfg,
                                       work / "checkpoint.pt", device)
            assert result.images_seen == images, f"{arch}: the loop drew {result.images_seen} real images, the budget said {images}"
            row |= {"status": "ok", "train_seconds": result.train_seconds, "images_per_second": images / result.train_seconds}
            start = time.perf_counter()
            fake, fake_labels, extra = samples(result, cfg, dataset, args.n_eval, ref.model, train_features, device)
            row |= extra | {"n_samples": len(fake)}
            row |= quality(fake, fake_labels, dataset, ref.model, extractor, train_features, device)
            row["eval_seconds"] = time.perf_counter() - start  # sampling and every metric (not in images/s)
            if result.augment_p is not None:
                row["augment_p"] = result.augment_p
        except GANDivergenceError as exc:
            row |= {"status": f"diverged: {exc}"}
        finally:
            shutil.rmtree(work, ignore_errors=True)
        print(f"   {arch:9s} {augment:12s} {format_row(row)}", flush=True)
        rows.append(row)
    return rows


def _fmt(row: dict[str, Any], key: str, spec: str) -> str:
    return format(row[key], spec) if key in row else "–"


def _interval(row: dict[str, Any], key: str, spec: str, suffix: str = "") -> str:
    """'value [low, high]' of `key` (with a class suffix: `key_<class>`, `key_ci_low_<class>`, ...)."""
    tail = f"_{suffix}" if suffix else ""
    if key + tail not in row:
        return "–"
    return f"{row[key + tail]:{spec}} [{row[key + '_ci_low' + tail]:{spec}}, {row[key + '_ci_high' + tail]:{spec}}]"


def _per_class(row: dict[str, Any], key: str, spec: str, class_names: list[str]) -> str:
    return "; ".join(f"{name} {_interval(row, key, spec, metric_key(name))}" for name in class_names
                     if f"{key}_{metric_key(name)}" in row)


def format_row(row: dict[str, Any]) -> str:
    if row["status"] != "ok":
        return row["status"].split(";")[0]
    return (f"{row['images_per_second']:.0f} img/s, fd_domain {_interval(row, 'fd_domain', '.2f')}, "
            f"kd_domain {_interval(row, 'kd_domain', '.3g')}, precision {row['precision_domain']:.2f}, "
            f"recall {row['recall_domain']:.2f}, ssim {row['ssim_real_fake']:.3f}, label fidelity {row['label_fidelity']:.3f}, "
            f"copies {row['memorisation_pixel_copy_rate']:.3f}/{row['memorisation_domain_copy_rate']:.3f}")


def markdown(rows: list[dict[str, Any]], device_info: dict[str, str], command: str, commit: str) -> str:
    lines = [
        "| data | arch | augment | kimg | images/s (training) | fd_domain ↓ [95 %] | fd_domain per class ↓ [95 %] | kd_domain ↓ [95 %] | "
        "precision | recall | ssim_real_fake | label_fidelity (per class) | copy rate pixel / domain | "
        "translation change / SSIM to source |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        per_class = ", ".join(f"{k.removeprefix('label_fidelity_')} {v:.2f}" for k, v in r.items()
                              if k.startswith("label_fidelity_") and k != "label_fidelity_untranslated")
        status = "" if r["status"] == "ok" else f" ({r['status'].split(';')[0]})"
        arch = r["arch"] + (" (target class only)" if "target_class" in r else "")
        copies = (f"{r['memorisation_pixel_copy_rate']:.3f} / {r['memorisation_domain_copy_rate']:.3f}"
                  if "memorisation_pixel_copy_rate" in r else "–")
        change = (f"{r['translation_change']:.3f} / {r['translation_ssim_to_source']:.3f}" if "translation_change" in r else "–")
        lines.append(
            f"| {r['data']} | {arch}{status} | {r['augment']} | {r['kimg']:.1f} | {_fmt(r, 'images_per_second', '.0f')} | "
            f"{_interval(r, 'fd_domain', '.2f')} | {_per_class(r, 'fd_domain', '.2f', r['class_names'])} | {_interval(r, 'kd_domain', '.3g')} | {_interval(r, 'precision_domain', '.2f')} | "
            f"{_interval(r, 'recall_domain', '.2f')} | {_fmt(r, 'ssim_real_fake', '.3f')} | "
            f"{_fmt(r, 'label_fidelity', '.3f')} ({per_class}) | {copies} | {change} |")
    notes = []
    for r in rows:
        if "target_class" in r and r["status"] == "ok":
            notes.append(f"- {r['data']}, {r['arch']}: samples cover the {r['samples_cover']}; its domain metrics, SSIM and "
                         f"copy rates compare with the {r['target_class']} train images only (the other rows' "
                         f"fd_domain {r['target_class']} is the comparable figure). The untranslated sources "
                         f"score label_fidelity {r['label_fidelity_untranslated']:.3f} and fd_domain "
                         f"{r['fd_domain_untranslated']:.2f} against that class (a translator returning its input).")
    where = ", ".join(f"{k} {v}" for k, v in device_info.items())
    return ("\n".join(lines) + "\n\n" + ("\n".join(notes) + "\n\n" if notes else "")
            + f"Intervals: fd/kd half-sample (N/2 without replacement, 50 replicates, centred), precision/recall "
            f"percentile bootstrap (200); evaluation-set sampling only, one training seed.\n"
            f"Device: {where}. Commit: {commit}.\nCommand: `{command}`\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("prepared", nargs="+", type=Path, help="prepared data set directories (dataset.npz + meta.json)")
    parser.add_argument("--kimg", type=float, default=50.0, help="real images per run, in thousands (see the module doc)")
    parser.add_argument("--archs", nargs="+", default=ARCHS)
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
    commit = git_commit()
    print(f"device: {device_info}; commit {commit}; overrides: {flatten(base) or 'none'}; gan.arch values: {args.archs}")

    rows = [row for path in args.prepared for row in run_dataset(path, args, base, device)]
    command = "python benchmarks/gan_architectures.py " + " ".join(sys.argv[1:] if argv is None else argv)
    table = markdown(rows, device_info, command, commit)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "gan_architectures.json", {"device": device_info, "commit": commit, "command": command,
                                                     "interval_metrics": list(INTERVAL_METRICS), "rows": rows})
    with atomic_file(args.out / "gan_architectures.md") as tmp:
        tmp.write_text(table)
    print("\n" + table)
    print(f"wrote {args.out / 'gan_architectures.json'} and {args.out / 'gan_architectures.md'}")


if __name__ == "__main__":
    main()
