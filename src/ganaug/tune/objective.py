"""A GAN trial: train with the sampled params, score every evaluation on the *validation*
split, report it for pruning, log the trial as a nested MLflow run.

The score is the Fréchet distance (or kernel distance) between the reference classifier's
penultimate features of generated images and of the real validation images of the classes the
GAN makes: never the test split, and not the train split (a generator that memorised train
would win there). It uses `training_loop`'s own per-evaluation hook (`evaluate`), so a trial
trains exactly as the train_gan stage does.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import optuna
import torch
from torchvision.utils import make_grid

from ganaug.classify.train import extract_features
from ganaug.config import GANConfig, TuneConfig, flatten
from ganaug.gan.train import EpochReport, GANDivergenceError, to_uint8, training_loop
from ganaug.io import kill_point
from ganaug.quality.frechet import frechet_distance_of_features
from ganaug.quality.kid import kernel_distance
from ganaug.quality.memorisation import audit_features, audit_pixels
from ganaug.tracking import runs
from ganaug.tune.space import suggest_gan, trial_gan_config
from ganaug.tune.study import EPOCHS_RUN_ATTR
from ganaug.tune.storage import WORKER_ATTR, original_trial_number, worker_identity

EVAL_SEED = 20_240_601  # the same fixed noise as train_gan's evaluations: epochs and trials stay comparable
KD_SUBSETS = 20  # kernel-distance subsets per evaluation
RUN_ID_ATTR = "mlflow_run_id"  # trial user attribute: the trial's nested MLflow run
STOPPED_ATTR = "stopped"  # trial user attribute: why training stopped early (divergence, mode collapse)


@dataclass(frozen=True)
class StudyData:
    """What every trial of a GAN study trains on and is scored against."""

    images: np.ndarray  # (N, C, H, W) uint8: the GAN's *train* split images
    labels: np.ndarray | None  # (N,) class indices for a conditional GAN, else None
    n_classes: int  # 0 = unconditional
    eval_counts: dict[int, int]  # generated images per class at each evaluation
    val_features: dict[int, np.ndarray]  # class -> (M, D) reference features of the real *validation* images
    reference: torch.nn.Module  # the reference classifier (train_reference)
    extractor: str  # its feature-extractor id
    device: torch.device
    dataset_hash: str
    train_groups: np.ndarray | None = None  # (N,) duplicate group of each train image: a multi-objective study's copy rate
    train_features: np.ndarray | None = None  # (N, D) reference features of `images` (tune.multi_objective=copy_rate_domain)


class ValidationScore:
    """`training_loop`'s `evaluate` hook: fd_domain_val and kd_domain_val of G's samples
    (fixed noise) against the validation features, all classes pooled."""

    def __init__(self, data: StudyData):
        self.data = data
        self.real = np.concatenate([data.val_features[c] for c in data.eval_counts])  # (M, D)
        self.last_images: np.ndarray | None = None

    def __call__(self, epoch: int, generator: torch.nn.Module) -> dict[str, float]:
        rng = torch.Generator().manual_seed(EVAL_SEED)
        images = []
        for c, n in self.data.eval_counts.items():
            z = torch.randn(n, generator.latent_dim, generator=rng).to(self.data.device)
            y = torch.full((n,), c, dtype=torch.long, device=self.data.device) if self.data.n_classes else None
            images.append(to_uint8(generator(z, y)).cpu().numpy())
        fake = np.concatenate(images)  # (n_eval, C, H, W) uint8
        self.last_images = fake
        features = extract_features(self.data.reference, fake, self.data.device)
        subset = min(1000, len(self.real), len(features))
        return {"fd_domain_val": frechet_distance_of_features(self.real, features),
                "kd_domain_val": kernel_distance(self.real, features, n_subsets=KD_SUBSETS, subset_size=subset,
                                                 seed=epoch)[0]}


def objective_key(tune: TuneConfig) -> str:
    return f"{tune.objective}_val"  # fd_domain -> fd_domain_val: the validation-split version


def objective_names(tune: TuneConfig) -> list[str]:
    """The study's values, in order: the validation distance, then (multi-objective) the copy rate."""
    key = objective_key(tune)
    return [key] if tune.multi_objective == "none" else [key, tune.multi_objective]


def copy_rate(data: StudyData, images: np.ndarray, which: str) -> float:
    """Memorisation copy rate of `images` (N, C, H, W) uint8 against the GAN's *train* images
    (`ganaug.quality.memorisation`): ~0.01 without copying, ~1 for copies. which: copy_rate_pixel |
    copy_rate_domain (the reference classifier's features)."""
    if which == "copy_rate_pixel":
        return audit_pixels(images, data.images, training_groups=data.train_groups).copy_rate
    assert data.train_features is not None, "copy_rate_domain needs StudyData.train_features"
    features = extract_features(data.reference, images, data.device)  # (N, D)
    return audit_features(features, data.train_features, data.extractor, training_groups=data.train_groups).copy_rate


def run_trial(trial: optuna.Trial, study: optuna.Study, gan: GANConfig, tune: TuneConfig, data: StudyData,
              parent_run_id: str, work_root: Path, worker_index: int = 0) -> float | tuple[float, float]:
    """Train one GAN for `trial` and return its final validation score (lower is better), and
    its copy rate in a multi-objective study (`tune.multi_objective`, which reports nothing
    for pruning); raises `optuna.TrialPruned` when the pruner stops it or training diverges."""
    trial.set_user_attr(WORKER_ATTR, worker_identity())  # fail_dead_trials reads it
    sampled = suggest_gan(trial, tune.gan_space)
    number = original_trial_number(study, trial)
    cfg = trial_gan_config(gan, sampled, seed=tune.seed + number, epochs=tune.epochs)
    key = objective_key(tune)
    multi = tune.multi_objective != "none"  # Optuna's pruners are single-objective: no report
    score = ValidationScore(data)
    epochs_run = 0
    work_dir = Path(tempfile.mkdtemp(prefix=f"trial-{trial.number}-", dir=work_root))
    tags = {"mlflow.parentRunId": parent_run_id, "optuna.study": study.study_name, "optuna.trial": str(trial.number),
            "optuna.retry_of": str(number) if number != trial.number else "", "data.dataset_hash": data.dataset_hash}
    with runs.start_run("tune_gan_trial", runs.input_key(study=study.study_name, trial=number, parent=parent_run_id),
                        run_name=f"{study.study_name}-trial-{trial.number}", tags=tags) as run:
        trial.set_user_attr(RUN_ID_ATTR, run.info.run_id)
        mlflow.log_params({**flatten(cfg, "gan"), "tune.objective": key, "tune.trial": trial.number,
                           "tune.seed_trial": number})

        def on_epoch_end(report: EpochReport) -> None:
            nonlocal epochs_run
            epochs_run = report.epoch
            kill_point(f"tune_epoch:worker{worker_index}")  # tests: SIGKILL one worker mid-trial
            if report.losses:
                mean = {k: float(np.mean([r[k] for r in report.losses])) for k in ("loss_d", "loss_g")}
                mlflow.log_metrics(mean, step=report.epoch)
            if report.quality is None:
                return
            mlflow.log_metrics(report.quality, step=report.epoch)
            if multi:
                return
            trial.report(report.quality[key], step=report.epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"{key}={report.quality[key]:.4g} at epoch {report.epoch}")

        try:
            result = training_loop(data.images, data.labels, data.n_classes, cfg, work_dir / "checkpoint.pt",
                                   data.device, evaluate=score, on_epoch_end=on_epoch_end)
        except optuna.TrialPruned as pruned:
            _end(trial, "pruned", str(pruned), score, epochs_run)
            raise
        except GANDivergenceError as exc:  # a clearly bad configuration: stopped, kept as pruned with its values
            first = str(exc).split(";")[0]
            trial.set_user_attr(STOPPED_ATTR, first)
            _end(trial, "pruned", first, score, epochs_run)
            raise optuna.TrialPruned(first) from exc
        finally:
            shutil.rmtree(work_dir, ignore_errors=True)
        value = float(result.quality[-1][key])
        mlflow.log_metric("objective", value)
        if not multi:
            _end(trial, "complete", f"{key}={value:.4g}", score, epochs_run)
            return value
        rate = copy_rate(data, score.last_images, tune.multi_objective)  # the last evaluation's samples
        mlflow.log_metric(tune.multi_objective, rate)
        _end(trial, "complete", f"{key}={value:.4g}, {tune.multi_objective}={rate:.4g}", score, epochs_run)
        return value, rate


def _end(trial: optuna.Trial, state: str, reason: str, score: ValidationScore, epochs_run: int) -> None:
    """Record the trial's state and epochs on its run and in the study, with a grid of its last
    evaluated samples."""
    trial.set_user_attr(EPOCHS_RUN_ATTR, epochs_run)
    mlflow.set_tags({"optuna.state": state, "optuna.reason": reason})
    mlflow.log_metric("epochs_run", epochs_run)
    if score.last_images is not None:
        shown = torch.from_numpy(score.last_images[:64]).float().div(255)
        grid = make_grid(shown, nrow=8, padding=2)[0]  # (H', W') in [0, 1]
        mlflow.log_image((grid * 255).round().to(torch.uint8).numpy(), "samples.png")
