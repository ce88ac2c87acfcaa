"""Stage `train_gan`: train the configured GAN on the real *train* split, evaluate it as it
trains, log everything to MLflow, and register the generator as a pyfunc model.

The resumable checkpoint lives in `.ganaug/train_gan/<key>/` (outside DVC's outputs, which
DVC deletes before a stage runs), keyed by the gan params and the dataset hash: a killed
`dvc repro` resumes where it stopped, in the same MLflow run, first logging what the
checkpoint recorded but the run lacks (a kill between an epoch's checkpoint and its logging).
`models/gan` is written as a whole or not at all.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from torchvision.utils import make_grid  # noqa: E402

from ganaug import distributed  # noqa: E402
from ganaug.classify.train import extract_features, predict_proba  # noqa: E402
from ganaug.config import GANConfig, Params, dump_yaml, flatten, to_dict  # noqa: E402
from ganaug.data.packed import PackedDataset, load_packed, read_meta  # noqa: E402
from ganaug.device import describe, pick_device  # noqa: E402
from ganaug.gan import cyclegan  # noqa: E402
from ganaug.gan.generator import TrainedGenerator  # noqa: E402
from ganaug.gan.train import EpochReport, checkpoint_generator, load_checkpoint, to_uint8, training_loop  # noqa: E402
from ganaug.io import atomic_dir, kill_point, write_json  # noqa: E402
from ganaug.quality.frechet import FeatureStats  # noqa: E402
from ganaug.quality.inception import (  # noqa: E402
    FID_EXTRACTOR,
    find_inception_weights,
    inception_features,
    inception_score,
    load_fid_inception,
    load_inception_fc,
)
from ganaug.quality.diversity import diversity_metrics  # noqa: E402
from ganaug.quality.gate import relative_label_fidelity  # noqa: E402
from ganaug.quality.memorisation import MemorisationReport, closest_pairs_grid  # noqa: E402
from ganaug.quality.multilabel import SKIPPED_REASON, MultiLabelQualityEvaluator  # noqa: E402
from ganaug.quality.suite import FeatureSet, feature_metrics, label_fidelity, memorisation, pixel_metrics  # noqa: E402
from ganaug.stages import paths  # noqa: E402
from ganaug.quality.translation import change_metrics, unchanged_message  # noqa: E402
from ganaug.stages.checks import require_classes_to_condition_on, require_gan_labels, require_translation_classes  # noqa: E402
from ganaug.stages.real_features import load_real_inception  # noqa: E402
from ganaug.stages.train_reference import REAL_FEATURES_FILE, load_reference, stats_path  # noqa: E402
from ganaug.tracking import mlflow_utils, pyfunc_generator, pyfunc_translator, registry, runs, summaries  # noqa: E402
from ganaug.tracking.mlflow_utils import metric_key  # noqa: E402

EVAL_SEED = 20_240_601  # fixed noise for evaluations and sample grids: epochs stay comparable
GRID_SIZE = 64
QUALITY_FILE = "quality.json"  # the final evaluation in full (metrics/gan.json keeps a summary)
SHOWN = ("fd_domain", "kd_domain", "precision_domain", "recall_domain", "coverage_domain", "diversity", "ssim_real_fake", "label_fidelity",
         "label_fidelity_relative",
         "fid_inception", "memorisation_pixel_copy_rate", "memorisation_domain_copy_rate",
         "translation_change", "translation_ssim_to_source")  # printed each evaluation


@dataclass(frozen=True)
class GANData:
    images: np.ndarray  # (N, C, H, W) uint8: what the GAN trains on
    labels: np.ndarray | None  # (N,) class indices or (N, K) multi-hot findings for a conditional GAN; cyclegan: 0 source, 1 target
    n_classes: int  # 0 = unconditional (and cyclegan); K findings on multi-label data
    trained_classes: list[int]  # classes the generator will produce (multi-label: every finding)
    eval_counts: dict[int, int]  # images per class for each evaluation
    source_class: int | None = None  # cyclegan: the class it translates from (trained_classes[0] is the target)

    @property
    def source_images(self) -> np.ndarray:
        """cyclegan: the source class's train images (N_A, C, R, R) uint8."""
        assert self.source_class is not None, "only a translator (gan.arch=cyclegan) has source images"
        return self.images[self.labels == 0]


def select_training_data(dataset: PackedDataset, cfg: GANConfig) -> GANData:
    """Minority mode: the smallest class of the train split only; conditional: all classes (on
    multi-label data the whole train split with its multi-hot finding vectors); cyclegan: the
    source class's images (label 0) then the target class's (label 1)."""
    counts = dataset.train.class_counts(dataset.n_classes)
    if cfg.arch == "cyclegan":
        source, target = cyclegan.translation_classes(dataset.class_names, list(counts), cfg)
        a, b = dataset.train.of_class(source), dataset.train.of_class(target)
        domains = np.concatenate([np.zeros(len(a), np.int64), np.ones(len(b), np.int64)])
        return GANData(np.concatenate([a, b]), domains, 0, [target], {target: cfg.n_eval}, source)
    if cfg.mode == "minority":
        minority = int(np.argmin(counts))
        images = dataset.train.of_class(minority)
        return GANData(images, None, 0, [minority], {minority: cfg.n_eval})
    share = np.asarray(counts, dtype=float) / sum(counts)
    eval_counts = {c: max(2, int(round(cfg.n_eval * s))) for c, s in enumerate(share)}
    return GANData(dataset.train.images, dataset.train.labels, dataset.n_classes, list(range(dataset.n_classes)), eval_counts)


def checkpoint_key(cfg: GANConfig, dataset_hash: str, extractor: str) -> str:
    blob = json.dumps({"gan": to_dict(cfg), "data": dataset_hash, "reference": extractor}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class QualityEvaluator:
    """Metrics of G's samples against the real *train* split, at every evaluation epoch
    (names and definitions: `ganaug.quality.suite`). The last evaluation adds bootstrap
    intervals and the memorisation audit (`self.final_report` keeps the closest pairs).

    - fd_domain, kd_domain, precision/recall/density/coverage_domain: in the reference
      classifier's penultimate features (offline, always); per class too for a cGAN.
    - fid_inception, kid_inception, …_inception: only when pytorch-fid's weights are present.
    - ssim_real_fake, ms_ssim_real_fake: random (generated, real) pairs of the same class.
    - label_fidelity: share of samples the reference classifier assigns to the intended class;
      label_fidelity_relative: the same over the classifier's hit rate on the real train images
      of those classes (1 = as recognisable as real images; the gate reads it).
    - diversity (the lower of diversity_domain and diversity_pixel): spread of the samples over
      the spread of the real images of their class (`ganaug.quality.diversity`; 0 = one image
      repeated, ~1 = real-like); the lowest class without suffix. gan.min_diversity stops a
      collapsed run on it, synthesize.min_diversity gates the synthetic set.
    """

    def __init__(self, dataset: PackedDataset, data: GANData, reference: torch.nn.Module, extractor: str,
                 device: torch.device, inception_weights: Path | None, dataset_hash: str, final_epoch: int,
                 inception_batch: int = 64, inception_mixed: bool = False):  # quality.batch_size, quality.precision=bf16
        self.dataset, self.data, self.reference, self.extractor, self.device = dataset, data, reference, extractor, device
        self.final_epoch = final_epoch
        self.inception_batch, self.inception_mixed = inception_batch, inception_mixed
        real_features = np.load(paths.REFERENCE / REAL_FEATURES_FILE)  # (N_train, D), train-split order
        self.real_features = {c: real_features[dataset.train.labels == c] for c in data.trained_classes}
        self.real_stats = {c: FeatureStats.load(stats_path(paths.REFERENCE, c)) for c in data.trained_classes}
        self.real_images = {c: dataset.train.of_class(c) for c in data.trained_classes}
        self.final_report: MemorisationReport | None = None
        self.real_hit_rate = {c: float((predict_proba(reference, self.real_images[c], device).argmax(1) == c).mean())
                              for c in data.trained_classes}  # the oracle on real images: label fidelity's ceiling
        self.final_fake: np.ndarray | None = None
        self.inception = None
        # real train-split Inception features come from the real_features stage (a DVC output)
        real_inception = load_real_inception(paths.REAL_FEATURES, dataset_hash) if inception_weights else None
        if inception_weights is not None and real_inception is None:
            print(f"Inception weights found, but {paths.REAL_FEATURES} was made without them: Inception metrics skipped "
                  "(set quality.inception_weights to the file so that real_features reruns)")
        elif inception_weights is not None:
            self.inception = load_fid_inception(inception_weights, device)
            self.inception_fc = load_inception_fc(inception_weights)
            in_classes = np.isin(dataset.train.labels, data.trained_classes)
            self.inception_real = real_inception[in_classes]

    def sample(self, generator: torch.nn.Module) -> tuple[np.ndarray, np.ndarray]:
        rng = torch.Generator().manual_seed(EVAL_SEED)
        images, labels = [], []
        for c, n in self.data.eval_counts.items():
            z = torch.randn(n, generator.latent_dim, generator=rng).to(self.device)
            y = torch.full((n,), c, dtype=torch.long, device=self.device) if self.data.n_classes else None
            images.append(to_uint8(generator(z, y)).cpu().numpy())
            labels.append(np.full(n, c))
        return np.concatenate(images), np.concatenate(labels)

    def __call__(self, epoch: int, generator: torch.nn.Module) -> dict[str, float]:
        final = epoch == self.final_epoch
        fake, fake_labels = self.sample(generator)
        features = extract_features(self.reference, fake, self.device)
        classes = self.data.trained_classes
        per_class = {c: feature_metrics(FeatureSet("domain", self.extractor, self.real_features[c], features[fake_labels == c],
                                                   self.real_stats[c]), with_ci=final, seed=epoch)
                     for c in classes}
        pixels = {c: pixel_metrics(self.real_images[c], fake[fake_labels == c], seed=epoch, with_ci=final) for c in classes}
        if len(classes) == 1:
            out = {**per_class[classes[0]], **pixels[classes[0]]}
        else:  # all classes pooled, plus each class under its own suffix
            all_real = np.concatenate([self.real_features[c] for c in classes])
            out = feature_metrics(FeatureSet("domain", self.extractor, all_real, features), with_ci=final, seed=epoch)
            for c in classes:
                name = metric_key(self.dataset.class_names[c])
                out |= {f"{k}_{name}": v for k, v in {**per_class[c], **pixels[c]}.items()}
            for key in ("ssim_real_fake", "ms_ssim_real_fake"):
                out[key] = float(np.mean([pixels[c][key] for c in classes]))
        out |= diversity_metrics(self.real_features, features, self.real_images, fake, fake_labels, self.dataset.class_names)
        predicted = predict_proba(self.reference, fake, self.device).argmax(1)
        out |= label_fidelity(predicted, fake_labels, self.dataset.class_names)
        out["label_fidelity_relative"] = relative_label_fidelity(out["label_fidelity"], self.real_hit_rate, self.data.eval_counts)
        if self.inception is not None:
            fake_inception = inception_features(self.inception, fake, self.inception_batch, self.device, self.inception_mixed)
            out |= feature_metrics(FeatureSet("inception", FID_EXTRACTOR, self.inception_real, fake_inception), with_ci=final, seed=epoch)
            out["inception_score"], out["inception_score_std"] = inception_score(fake_inception, self.inception_fc, splits=min(10, len(fake)))
        if final:
            train_images = np.concatenate([self.real_images[c] for c in classes])
            train_features = np.concatenate([self.real_features[c] for c in classes])
            audit, self.final_report = memorisation(fake, train_images, features, train_features, self.extractor)
            self.final_fake = fake
            out |= audit
        return out


class TranslationEvaluator(QualityEvaluator):
    """A translator's evaluation (gan.arch=cyclegan): n_eval source-class train images (a fixed
    draw) translated into the target class, then every metric of `QualityEvaluator` against the
    target class (label fidelity = read as the target class; memorisation against its train
    images), plus how much each image changed from its source (`ganaug.quality.translation`)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        n_source = len(self.data.source_images)
        self.sources = self.data.source_images[cyclegan.source_indices(n_source, min(n_source, self.data.eval_counts[
            self.data.trained_classes[0]]), EVAL_SEED)]  # (n, C, R, R) uint8, each source at most once
        self.last_change: dict[str, float] = {}

    def sample(self, generator: torch.nn.Module) -> tuple[np.ndarray, np.ndarray]:
        translated = cyclegan.translate(generator, self.sources)
        self.last_change = change_metrics(self.sources, translated)
        return translated, np.full(len(translated), self.data.trained_classes[0])

    def __call__(self, epoch: int, generator: torch.nn.Module) -> dict[str, float]:
        out = super().__call__(epoch, generator)
        warning = unchanged_message(self.last_change, UNCHANGED_WARN_BELOW)
        if warning:
            print(f"WARNING (epoch {epoch}): {warning}")
        return out | self.last_change


UNCHANGED_WARN_BELOW = 0.01  # translation_change below which each evaluation warns (the gate's default level)


def translation_grid(generator: torch.nn.Module, data: GANData, device: torch.device) -> np.ndarray:
    """GRID_SIZE // 2 fixed source images and their translations as (H, W) uint8: rows alternate
    source, translated (8 per row)."""
    sources = data.source_images[cyclegan.source_indices(len(data.source_images), min(len(data.source_images), GRID_SIZE // 2),
                                                         EVAL_SEED + 1)]
    translated = cyclegan.translate(generator, sources)
    rows = [block for i in range(0, len(sources), 8) for block in (sources[i:i + 8], translated[i:i + 8])]
    images = torch.from_numpy(np.concatenate(rows)).float()
    grid = make_grid(images, nrow=8, normalize=True, value_range=(0, 255), padding=2)
    return (grid[0] * 255).round().to(torch.uint8).numpy()


def sample_grid(generator: torch.nn.Module, data: GANData, device: torch.device) -> np.ndarray:
    """A fixed-noise grid of GRID_SIZE samples as (H, W) uint8, classes in rows for a cGAN; for a
    translator, sources and their translations (`translation_grid`)."""
    if data.source_class is not None:
        return translation_grid(generator, data, device)
    rng = torch.Generator().manual_seed(EVAL_SEED + 1)
    per_class = GRID_SIZE // len(data.trained_classes)
    z = torch.randn(per_class * len(data.trained_classes), generator.latent_dim, generator=rng).to(device)
    y = torch.tensor(np.repeat(data.trained_classes, per_class), device=device) if data.n_classes else None
    with torch.no_grad():
        images = generator(z, y).float().cpu()
    grid = make_grid(images, nrow=per_class if data.n_classes else 8, normalize=True, value_range=(-1, 1), padding=2)
    return (grid[0] * 255).round().to(torch.uint8).numpy()


def loss_figure(losses: list[dict[str, float]], quality: list[dict[str, float]]) -> plt.Figure:
    frame = pd.DataFrame(losses)
    fig, axes = plt.subplots(1, 3 if quality else 2, figsize=(15 if quality else 10, 3.5))
    window = max(1, len(frame) // 50)
    for key in ("loss_d", "loss_g"):
        axes[0].plot(frame["step"], frame[key].rolling(window, min_periods=1).mean(), label=key)
    axes[0].set(xlabel="step", ylabel="loss", title="GAN losses (smoothed)")
    axes[0].legend()
    for key in ("d_real", "d_fake"):
        axes[1].plot(frame["step"], frame[key].rolling(window, min_periods=1).mean(), label=key)
    axes[1].set(xlabel="step", ylabel="D output", title="D(x) and D(G(z))")
    axes[1].legend()
    if quality:
        q = pd.DataFrame(quality)
        if "fd_domain" in q:
            axes[2].plot(q["epoch"], q["fd_domain"], marker="o")
            axes[2].set(xlabel="epoch", ylabel="FD (reference features)", title="Fréchet distance, domain features")
        else:  # multi-label data: no reference features (ganaug.quality.multilabel)
            axes[2].plot(q["epoch"], q["diversity"], marker="o")
            axes[2].set(xlabel="epoch", ylabel="diversity (pixels)", title="Diversity, lowest finding")
    fig.tight_layout()
    return fig


def log_missing_history(run_id: str, state: dict[str, Any], cfg: GANConfig, data: GANData, device: torch.device) -> None:
    """On resume: log the losses, evaluations and sample grid that the checkpoint `state` has
    but the run lacks, as `on_epoch_end` would have (only the checkpoint's own epoch can be
    missing its grid: its generator is the one the checkpoint holds)."""
    logged = runs.log_missing_metrics(run_id, state["losses"], "step", skip=("epoch",))
    values = [mlflow_utils.split_intervals({k: v for k, v in q.items() if k != "epoch"})[0] | {"epoch": q["epoch"]}
              for q in state["quality"]]  # interval bounds go to a table, as on_epoch_end logs them
    logged += runs.log_missing_metrics(run_id, values, "epoch")
    evaluated = {int(q["epoch"]) for q in state["quality"]}
    if state["epoch"] in evaluated - runs.logged_image_steps(run_id, "samples"):
        generator = checkpoint_generator(state, cfg).to(device)
        mlflow.log_image(sample_grid(generator, data, device), key="samples", step=state["epoch"])
        logged += 1
    if logged:
        print(f"logged {logged} value(s) of epochs up to {state['epoch']} that the checkpoint had and the run lacked")


def main(params: Params) -> None:
    cfg = params.gan
    meta = read_meta(paths.PREPARED)
    require_gan_labels(meta, cfg)  # multi-label data: gan.mode=conditional on the multi-hot vectors
    require_classes_to_condition_on(meta, cfg)
    if cfg.arch == "cyclegan":
        require_translation_classes(meta, cfg)
    multilabel = meta["label_kind"] != "class_index"
    dataset = load_packed(paths.PREPARED)
    data = select_training_data(dataset, cfg)
    # under torchrun: join the process group; this rank's device is cuda:LOCAL_RANK
    ranks, device = distributed.init_from_env(pick_device(cfg.device, "gan.device"))
    # multi-label: no reference classifier (it takes class indices): pixel metrics per finding, the rest skipped
    inception_weights = None if multilabel else find_inception_weights(params.quality.inception_weights)
    reference, extractor = (None, "none (multi-label data)") if multilabel else load_reference(paths.REFERENCE, device)
    root = mlflow_utils.project_root()
    key = checkpoint_key(cfg, meta["dataset_hash"], extractor)
    work_dir = root / paths.CACHE / "train_gan" / key
    work_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = work_dir / "checkpoint.pt"
    if not ranks.is_main:  # torchrun ranks 1..N-1 train their share; rank 0 evaluates, logs and writes
        training_loop(data.images, data.labels, data.n_classes, cfg, checkpoint, device)
        distributed.shutdown()
        return
    evaluator = (MultiLabelQualityEvaluator(data.images, data.labels, dataset.class_names, cfg.n_eval, device, cfg.epochs,
                                            EVAL_SEED) if multilabel else
                 (TranslationEvaluator if cfg.arch == "cyclegan" else QualityEvaluator)(
                     dataset, data, reference, extractor, device, inception_weights, meta["dataset_hash"],
                     final_epoch=cfg.epochs, inception_batch=params.quality.batch_size,
                     inception_mixed=params.quality.precision == "bf16"))

    mlflow_utils.setup()
    previous = (cyclegan.load_translation_checkpoint if cfg.arch == "cyclegan" else load_checkpoint)(checkpoint)
    run_id = previous["extra"].get("mlflow_run_id") if previous else None
    if previous:
        print(f"resuming GAN training from {checkpoint} (epoch {previous['epoch']}/{cfg.epochs})")
    tags = mlflow_utils.lineage_tags("train_gan", meta, **{"gan.arch": cfg.arch, "gan.mode": cfg.mode, "gan.loss": cfg.loss,
                                                            "gan.augment": cfg.augment,
                                                            **({"quality.skipped": SKIPPED_REASON} if multilabel else {})})
    name = None if run_id else mlflow_utils.unique_run_name(f"train_gan-{cfg.arch}", {"gan": flatten(cfg), "data": meta["dataset_hash"]})
    with runs.start_run("train_gan", key, run_id=run_id, run_name=name, tags=tags,
                        **mlflow_utils.system_metrics(params.tracking)) as run:
        if previous:
            log_missing_history(run.info.run_id, previous, cfg, data, device)
        if run_id is None:
            if data.n_classes:  # the whole train split
                mlflow_utils.log_split(meta, "train", data.images, data.labels, "training")
            else:  # one class of it (cyclegan: its source and target classes): its own name, and a digest MLflow computes
                minority = metric_key(dataset.class_names[data.trained_classes[0]])
                if data.source_class is not None:
                    minority = f"{metric_key(dataset.class_names[data.source_class])}-and-{minority}"
                mlflow_utils.log_dataset(data.images, None, f"{meta['source'].get('name')}-train-{minority}",
                                         "data/prepared", None, "training")
            mlflow.log_params({
                **flatten(cfg, "gan"), **describe(device, cfg.precision == "bf16"), "distributed.processes": ranks.world_size,  # torchrun ranks
                "data.n_train_images_gan": len(data.images),
                "data.trained_classes": ",".join(dataset.class_names[c] for c in data.trained_classes),
                **({"data.source_class": dataset.class_names[data.source_class]} if data.source_class is not None else {}),
                "quality.feature_extractor": extractor,
                "quality.fid_inception": "on" if inception_weights else "off (no local pytorch-fid weights)",
            })

        def on_epoch_end(report: EpochReport) -> None:
            step_keys = [k for k in report.losses[0] if k not in ("step", "epoch")] if report.losses else []
            mlflow_utils.log_step_metrics(report.losses, step_keys)  # losses, D outputs [, loss terms, ADA p and r_t]
            if report.quality is not None:  # interval bounds go to a table, not one-point charts
                values, intervals = mlflow_utils.split_intervals(report.quality)
                mlflow.log_metrics(values, step=report.epoch)
                if intervals:
                    mlflow.log_table(pd.DataFrame(intervals).assign(epoch=report.epoch), "quality_intervals.json")
                mlflow.log_image(sample_grid(report.generator, data, device), key="samples", step=report.epoch)
                summary = ", ".join(f"{k}={report.quality[k]:.4g}" for k in SHOWN if k in report.quality)
                print(f"epoch {report.epoch}/{cfg.epochs}: {summary}")

        result = training_loop(
            data.images, data.labels, data.n_classes, cfg, checkpoint, device,
            evaluate=evaluator, on_epoch_end=on_epoch_end, extra_state={"mlflow_run_id": run.info.run_id},
        )
        distributed.shutdown()  # the other ranks are done; what follows is rank 0's alone
        final = {k: v for k, v in result.quality[-1].items() if k != "epoch"} if result.quality else {}
        images_per_second = result.images_seen / max(result.train_seconds, 1e-9)  # optimisation only, all attempts
        if evaluator.final_report is None:  # the last evaluation ran before a kill: redo it (fixed noise, same result)
            with torch.no_grad():
                evaluator(cfg.epochs, result.generator)

        trained = TrainedGenerator(  # result.generator is the EMA of G when gan.ema_kimg > 0
            result.generator.cpu(), to_dict(cfg), dataset.class_names, data.trained_classes, data.n_classes > 0,
            {"dataset_hash": meta["dataset_hash"], "epochs": cfg.epochs, "mlflow_run_id": run.info.run_id,
             "feature_extractor": extractor, "final_quality": final,
             **({"source_class": data.source_class} if data.source_class is not None else {}), **({"quality_skipped": SKIPPED_REASON} if multilabel else {})},
            label_kind=meta["label_kind"],  # multi_hot: the generator samples from finding vectors
        )
        fig = loss_figure(result.losses, result.quality)
        train_images = (data.images if multilabel  # what the memorisation audit compared with
                        else np.concatenate([evaluator.real_images[c] for c in data.trained_classes]))
        metrics = {**{k: float(v) for k, v in final.items()}, "epochs": cfg.epochs, "steps": len(result.losses),
                   "train_images_per_second": images_per_second}
        if result.augment_p is not None:  # the augmentation probability at the end (ADA's p; 1 for diffaugment)
            metrics["augment_p"] = result.augment_p
        with atomic_dir(paths.GAN) as tmp:  # all of models/gan or nothing
            write_json(tmp / QUALITY_FILE, metrics)
            trained.save(tmp / "generator.pt")
            (tmp / "gan_config.yaml").write_text(dump_yaml(cfg))
            plt.imsave(tmp / "samples.png", sample_grid(trained.network, data, torch.device("cpu")), cmap="gray", vmin=0, vmax=255)
            fig.savefig(tmp / "loss_curves.png", dpi=100)
            # the evaluated samples nearest to a training image
            pairs = closest_pairs_grid(evaluator.final_report, evaluator.final_fake, train_images)
            plt.imsave(tmp / "memorisation_closest_pairs.png", pairs, cmap="gray", vmin=0, vmax=255)
        out = paths.GAN
        mlflow.log_figure(fig, "loss_curves.png")
        plt.close(fig)
        for name in ("gan_config.yaml", "samples.png", "memorisation_closest_pairs.png"):
            mlflow.log_artifact(str(out / name))

        pd.DataFrame(result.losses).to_csv(_mkparent(paths.PLOTS / "gan_losses.csv"), index=False)
        pd.DataFrame(result.quality).to_csv(_mkparent(paths.PLOTS / "gan_quality.csv"), index=False)
        # logged once: a rerun after a kill during these calls logs only what the run lacks
        runs.log_missing_metrics(run.info.run_id, [{"step": 0, **{k: metrics[k] for k in ("train_images_per_second", "augment_p")
                                                                   if k in metrics}}], "step")
        write_json(paths.METRICS / "gan.json", summaries.gan_summary(metrics))

        budget = {"epochs": cfg.epochs, "steps": len(result.losses), "images_seen": result.images_seen,
                  "train_seconds": round(result.train_seconds, 1)}
        card = registry.model_card(final, flatten(cfg, "gan"), meta, [dataset.class_names[c] for c in data.trained_classes],
                                   extractor, trained.resolution, budget, describe(device, cfg.precision == "bf16"))
        version = registered_version(run.info.run_id)  # registered before a kill: not again
        if version is None:  # a new version with its model card, as @challenger (what `ganaug promote` judges)
            if trained.translator:  # images in, images out (README, "The generator as a model")
                info = pyfunc_translator.log_translator(out / "generator.pt", trained.channels, trained.resolution, register=False)
            else:
                info = pyfunc_generator.log_generator(out / "generator.pt", trained.channels, trained.resolution,
                                                      data.trained_classes[0], register=False)
            version = registry.register_generator(info.model_uri, *card)
            kill_point("train_gan_registered")  # tests: registered, the run not finished
        else:
            registry.register_card(version, *card)
    shutil.rmtree(work_dir, ignore_errors=True)  # finished: a forced rerun retrains from scratch
    print(f"generator written to {out / 'generator.pt'}; registered {pyfunc_generator.REGISTERED_NAME} v{version} as "
          f"@{registry.CHALLENGER} (judge it with: bin/ganaug promote)")


def registered_version(run_id: str) -> str | None:
    """The registry version this run already registered, if any."""
    found = mlflow.MlflowClient().search_model_versions(f"name = '{pyfunc_generator.REGISTERED_NAME}' and run_id = '{run_id}'")
    return str(max(int(v.version) for v in found)) if found else None


def _mkparent(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
