"""Stage `train_classifier --arm real|augmented`: one classifier per seed on the arm's
training set (real train split, plus the synthetic set for `augmented`), early stopping on
the real validation split; test-split predictions are written for `evaluate`.

MLflow: a parent run per arm (`clf-<arm>-<digest>`: the seeds' mean and std) holding a nested run
per seed (`clf-<arm>-s<seed>-<digest>`: curves, test metrics, the data sets as run inputs)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import ConfusionMatrixDisplay  # noqa: E402

from ganaug.classify.metrics import classification_metrics, scalar_metrics  # noqa: E402
from ganaug.classify.models import check_arch  # noqa: E402
from ganaug.classify.train import predict_proba, save_classifier, train_classifier  # noqa: E402
from ganaug.config import Params, flatten  # noqa: E402
from ganaug.data.packed import load_packed, read_meta  # noqa: E402
from ganaug.device import describe, pick_device  # noqa: E402
from ganaug.io import atomic_dir, write_json  # noqa: E402
from ganaug.stages import paths  # noqa: E402
from ganaug.stages.checks import require_single_label  # noqa: E402
from ganaug.stages.synthesize import load_synthetic  # noqa: E402
from ganaug.tracking import mlflow_utils, runs, summaries  # noqa: E402
from ganaug.tracking.mlflow_utils import metric_key  # noqa: E402

ARMS = ("real", "augmented")
PREDICTIONS_FILE = "test_predictions.npz"
METRICS_FILE = "metrics.json"  # every test metric per seed, with its MLflow run id


def log_training_data(meta: dict, dataset, train_images: np.ndarray, train_labels: np.ndarray, manifest: dict) -> None:
    """The arm's data sets as inputs of the active run: the real splits (digests from meta.json)
    and, for the augmented arm, the synthetic set."""
    mlflow_utils.log_split(meta, "train", dataset.train.images, dataset.train.labels, "training")
    mlflow_utils.log_split(meta, "val", dataset.val.images, dataset.val.labels, "validation")
    mlflow_utils.log_split(meta, "test", dataset.test.images, dataset.test.labels, "testing")
    if manifest:
        n_real = len(dataset.train.images)
        mlflow_utils.log_dataset(train_images[n_real:], train_labels[n_real:], "synthetic", "data/synthetic", None,
                                 "training", generator_run_id=str(manifest.get("generator_mlflow_run_id")))


def arm_training_set(arm: str, real_images: np.ndarray, real_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
    """The arm's training images: real only, or real + the synthetic set."""
    if arm == "real":
        return real_images, real_labels, {}
    synthetic_images, synthetic_labels, manifest = load_synthetic()
    if synthetic_images.shape[1:] != real_images.shape[1:]:
        raise ValueError(f"synthetic images {synthetic_images.shape[1:]} do not match real {real_images.shape[1:]}")
    return np.concatenate([real_images, synthetic_images]), np.concatenate([real_labels, synthetic_labels]), manifest


def main(params: Params, arm: str) -> None:
    if arm not in ARMS:
        raise ValueError(f"--arm {arm!r}: expected one of {ARMS}")
    cfg = params.classifier
    check_arch(cfg.arch, "classifier.arch")
    meta = read_meta(paths.PREPARED)
    require_single_label(meta, "train_classifier")
    dataset = load_packed(paths.PREPARED)
    device = pick_device(cfg.device, "classifier.device")
    train_images, train_labels, manifest = arm_training_set(arm, dataset.train.images, dataset.train.labels)
    counts = np.bincount(train_labels, minlength=dataset.n_classes)
    print(f"arm {arm}: {len(train_images)} training images {dict(zip(dataset.class_names, counts.tolist()))}")

    mlflow_utils.setup()
    per_seed, probabilities, run_ids = {}, {}, {}
    common_tags = {"arm": arm}
    if manifest:
        common_tags["synthetic.generator_run_id"] = str(manifest.get("generator_mlflow_run_id"))
    params_logged = {**flatten(cfg, "classifier"), **describe(device), "arm": arm, "n_train_images": len(train_images),
                     **{f"n_train_{metric_key(name)}": int(n) for name, n in zip(dataset.class_names, counts)},
                     **({"synthetic.counts": str(manifest["counts"])} if manifest else {})}
    name = mlflow_utils.unique_run_name(f"clf-{arm}", {"classifier": flatten(cfg), "data": meta["dataset_hash"],
                                                        "synthetic": manifest.get("generator_sha256"), "counts": manifest.get("counts")})
    digest = name.removeprefix(f"clf-{arm}-")
    parent_tags = mlflow_utils.lineage_tags(f"train_classifier_{arm}", meta, **common_tags, **{"ganaug.run_level": "arm"})
    arm_key = runs.input_key(classifier=flatten(cfg, "classifier"), arm=arm, data=meta["dataset_hash"], synthetic=manifest)
    with atomic_dir(paths.classifier_dir(arm)) as out, \
            runs.start_run(f"train_classifier_{arm}", arm_key, run_name=name, tags=parent_tags) as parent:
        mlflow.log_params(params_logged)
        for seed in cfg.seeds:
            tags = mlflow_utils.lineage_tags(f"train_classifier_{arm}", meta, **common_tags, seed=seed,
                                             **{"ganaug.run_level": "seed"})
            key = runs.input_key(classifier=flatten(cfg, "classifier"), arm=arm, seed=seed, data=meta["dataset_hash"],
                                 synthetic=manifest)
            with runs.start_run(f"train_classifier_{arm}", key, run_name=f"clf-{arm}-s{seed}-{digest}", tags=tags,
                                nested=True) as run:
                mlflow.log_params(params_logged | {"seed": seed})
                log_training_data(meta, dataset, train_images, train_labels, manifest)
                result = train_classifier(
                    train_images, train_labels, dataset.val.images, dataset.val.labels, dataset.n_classes,
                    cfg.arch, cfg.epochs, cfg.batch_size, cfg.lr, cfg.weight_decay, cfg.patience, seed, device,
                    on_epoch_end=lambda r: mlflow.log_metrics({k: v for k, v in r.items() if k != "epoch"}, step=int(r["epoch"])),
                    desc=f"{arm} seed {seed}",
                )
                # the model is fixed now (selected on val); the test split is only measured
                proba = predict_proba(result.model, dataset.test.images, device)
                test = classification_metrics(dataset.test.labels, proba, dataset.class_names)
                mlflow.log_metrics({f"test_{k}": v for k, v in scalar_metrics(test).items()} | {"best_epoch": result.best_epoch})
                fig, ax = plt.subplots(figsize=(4, 4))
                ConfusionMatrixDisplay(np.array(test["confusion_matrix"]), display_labels=dataset.class_names).plot(ax=ax, colorbar=False)
                ax.set_title(f"{arm}, seed {seed} (test split)")
                mlflow.log_figure(fig, "confusion_matrix.png")
                plt.close(fig)
                save_classifier(result.model, out / f"seed{seed}.pt", cfg.arch, dataset.n_classes, dataset.class_names,
                                dataset.image_shape[0], {"arm": arm, "seed": seed, "best_epoch": result.best_epoch})
                per_seed[seed], probabilities[f"seed{seed}"], run_ids[seed] = test, proba, run.info.run_id
                print(f"  seed {seed}: test balanced accuracy {test['balanced_accuracy']:.3f}, AUC {test['roc_auc']:.3f} (best epoch {result.best_epoch})")
        np.savez(out / PREDICTIONS_FILE, labels=dataset.test.labels, **probabilities)
        seeds = {str(s): scalar_metrics(m) for s, m in per_seed.items()}
        summary = summaries.classifier_summary(seeds)
        mlflow.log_metrics({f"test_{k}": v["mean"] for k, v in summary.items()} | {f"test_{k}_std": v["std"] for k, v in summary.items()})
        write_json(out / METRICS_FILE, {"mlflow_run_id": parent.info.run_id,
                                        "seeds": {s: m | {"mlflow_run_id": run_ids[int(s)]} for s, m in seeds.items()}})
    write_json(paths.METRICS / f"classifier_{arm}.json", summary)
