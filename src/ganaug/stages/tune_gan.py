"""`ganaug tune gan | show gan | apply gan`: the GAN hyperparameter study (logic in `ganaug.tune`).

`tune gan` needs the outputs of `prepare` (data/prepared) and `train_reference`
(models/reference): each trial trains on the train split and is scored on the validation
split's reference-classifier features. The test split is never read (`load_packed` is asked
for train and val only). Several workers: `--workers K` starts K processes of this command on
the same storage (or run it in several shells / on several machines with one --storage).
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from pathlib import Path

from ganaug.classify.train import extract_features
from ganaug.config import Params, TuneConfig, to_dict
from ganaug.data.leakage import duplicate_groups
from ganaug.data.packed import load_packed, read_meta
from ganaug.device import pick_device
from ganaug.stages import paths
from ganaug.stages.checks import StageInputError, require_classes_to_condition_on, require_single_label
from ganaug.stages.train_gan import select_training_data
from ganaug.stages.train_reference import MODEL_FILE, load_reference
from ganaug.tracking import mlflow_utils
from ganaug.tune import study as studies
from ganaug.tune.objective import StudyData, objective_names, run_trial
from ganaug.tune.storage import open_storage, redact, resolve_storage_url

SPLITS_READ = ("train", "val")  # never "test"


def tune_config(params: Params, args: argparse.Namespace) -> TuneConfig:
    """params.yaml's tune section with the command line's overrides (show and apply take --storage only)."""
    return studies.with_overrides(params.tune, getattr(args, "trials", None), getattr(args, "timeout", None), args.storage)


def require_inputs(root: Path) -> None:
    missing = [str(p) for p in (root / paths.PREPARED / "meta.json", root / paths.REFERENCE / MODEL_FILE) if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"a GAN study needs the prepared data and the reference classifier, but {', '.join(missing)} "
            "is missing: run `.venv/bin/dvc repro train_reference` (or `bin/ganaug prepare` then "
            "`bin/ganaug train-reference`) first")


def load_study_data(params: Params, meta: dict) -> StudyData:
    """Train images for the GAN and validation features to score it, from train and val only."""
    require_single_label(meta, "tune gan")
    require_classes_to_condition_on(meta, params.gan)
    if params.gan.arch == "cyclegan":  # its trials sample noise-driven generators: not built for a translator yet
        raise StageInputError("tune gan: gan.arch=cyclegan is a translator, which the GAN study does not search yet: "
                              "expected gan.arch dcgan, cgan or acgan")
    dataset = load_packed(paths.PREPARED, splits=SPLITS_READ)
    data = select_training_data(dataset, params.gan)
    device = pick_device(params.gan.device, "gan.device")
    reference, extractor = load_reference(paths.REFERENCE, device)
    val_features = {}
    for c in data.trained_classes:
        images = dataset.val.of_class(c)  # (M, C, H, W) uint8
        if len(images) < 2:
            raise ValueError(f"class {dataset.class_names[c]!r} has {len(images)} validation image(s): a study's "
                             "Fréchet distance needs at least 2 (raise data.val_fraction)")
        val_features[c] = extract_features(reference, images, device)
    groups = train_features = None
    if params.tune.multi_objective != "none":  # the copy rate's reference: the GAN's own train images
        groups = duplicate_groups(data.images)
        if params.tune.multi_objective == "copy_rate_domain":
            train_features = extract_features(reference, data.images, device)
    return StudyData(data.images, data.labels, data.n_classes, data.eval_counts, val_features, reference, extractor,
                     device, meta["dataset_hash"], groups, train_features)


def open_gan_study(params: Params, tune: TuneConfig, name: str, worker_index: int, meta: dict, extractor: str):
    root = mlflow_utils.project_root()
    url = resolve_storage_url(tune.storage, root)
    storage = open_storage(url, tune.heartbeat_s, tune.max_retries)
    epochs = tune.epochs or params.gan.epochs
    gan_fixed = {k: v for k, v in to_dict(params.gan).items() if k not in tune.gan_space and k != "seed"}
    gan_fixed["epochs"] = epochs
    settings = studies.study_settings(tune, gan_fixed, meta["dataset_hash"], extractor)
    sampler = studies.make_sampler(tune, worker_index, multi_objective=tune.multi_objective != "none")
    study = studies.open_study(name, storage, settings, sampler, studies.make_pruner(tune, epochs),
                               objectives=objective_names(tune))
    return study, url


def main(params: Params, args: argparse.Namespace) -> int:
    """`ganaug tune gan`: run (or resume) the study until its budget is spent."""
    tune = tune_config(params, args)
    root = mlflow_utils.project_root()
    require_inputs(root)
    meta = read_meta(paths.PREPARED)
    if args.workers > 1:  # the workers load the data; here only the study and its parent run are opened
        data, extractor = None, load_reference(paths.REFERENCE, pick_device("cpu"))[1]
    else:
        data = load_study_data(params, meta)
        extractor = data.extractor
    study, url = open_gan_study(params, tune, args.study, args.worker_index, meta, extractor)
    mlflow_utils.setup()
    parent = studies.ensure_parent_run(study, url, tune, mlflow_utils.lineage_tags("tune_gan", meta))
    print(f"tune: study {study.study_name!r} in {redact(url)}; budget {tune.n_trials} trials; "
          f"{len(study.trials)} trial(s) so far; MLflow parent run {parent}")
    if tune.multi_objective != "none":
        print(studies.multi_objective_note(tune, objective_names(tune)))
    if args.workers > 1:
        argv = ["tune", "gan", "--params", args.params, "--study", study.study_name, "--storage", url,
                "--trials", str(tune.n_trials), "--timeout", str(tune.timeout)]
        code = studies.launch_workers(argv, args.workers, env=dict(os.environ))
    else:
        work_root = root / paths.CACHE / "tune" / study.study_name
        work_root.mkdir(parents=True, exist_ok=True)
        with studies.StudyProgress(study, tune.n_trials, tune.timeout) as bar:
            studies.run_worker(study, lambda trial: run_trial(trial, study, params.gan, tune, data, parent, work_root,
                                                              args.worker_index),
                               tune.n_trials, tune.timeout, tune.max_retries, on_trial=bar.trial_finished)
        code = 0
    studies.log_study_summary(study)
    print(studies.show(study))
    return code


def load_existing(params: Params, args: argparse.Namespace):
    return studies.load_existing(tune_config(params, args), args.study, mlflow_utils.project_root())


def show(params: Params, args: argparse.Namespace) -> int:
    """`ganaug tune show gan`."""
    print(studies.show(load_existing(params, args)))
    return 0


def apply(params: Params, args: argparse.Namespace) -> int:
    """`ganaug tune apply gan`: print the `dvc exp run` of the best trial's params; with --run, run it
    (its MLflow runs get tune.study / tune.trial tags through GANAUG_TUNE_STUDY / GANAUG_TUNE_TRIAL)."""
    study = load_existing(params, args)
    command = studies.apply_command(study, args.trial)
    trial_number = command[command.index("--name") + 1].rsplit("-", 1)[1]
    print(shlex.join(command))
    if not args.run:
        return 0
    env = {**os.environ, "GANAUG_TUNE_STUDY": study.study_name, "GANAUG_TUNE_TRIAL": trial_number}
    dvc = Path(sys.executable).parent / "dvc"
    return subprocess.run([str(dvc) if dvc.exists() else "dvc", *command[1:]], env=env).returncode
