"""Stage `train_classifier --arm real|augmented`: one classifier per seed on the arm's
training set (real train split, plus the synthetic set for `augmented`), early stopping on
the real validation split; test-split predictions are written for `evaluate`."""

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
from ganaug.tracking import mlflow_utils, runs  # noqa: E402

ARMS = ("real", "augmented")
PREDICTIONS_FILE = "test_predictions.npz"


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
    per_seed, probabilities = {}, {}
    with atomic_dir(paths.classifier_dir(arm)) as out:
        for seed in cfg.seeds:
            tags = mlflow_utils.lineage_tags(f"train_classifier_{arm}", meta, arm=arm, seed=seed)
            if manifest:
                tags["synthetic.generator_run_id"] = str(manifest.get("generator_mlflow_run_id"))
            key = runs.input_key(classifier=flatten(cfg, "classifier"), arm=arm, seed=seed, data=meta["dataset_hash"],
                                 synthetic=manifest)
            with runs.start_run(f"train_classifier_{arm}", key, run_name=f"classifier-{arm}-seed{seed}", tags=tags):
                mlflow.log_params({**flatten(cfg, "classifier"), **describe(device), "arm": arm, "seed": seed,
                                   "n_train_images": len(train_images),
                                   **{f"n_train_{name}": int(n) for name, n in zip(dataset.class_names, counts)},
                                   **({"synthetic.counts": str(manifest["counts"])} if manifest else {})})
                result = train_classifier(
                    train_images, train_labels, dataset.val.images, dataset.val.labels, dataset.n_classes,
                    cfg.arch, cfg.epochs, cfg.batch_size, cfg.lr, cfg.weight_decay, cfg.patience, seed, device,
                    on_epoch_end=lambda r: mlflow.log_metrics({k: v for k, v in r.items() if k != "epoch"}, step=int(r["epoch"])),
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
                per_seed[seed], probabilities[f"seed{seed}"] = test, proba
                print(f"  seed {seed}: test balanced accuracy {test['balanced_accuracy']:.3f}, AUC {test['roc_auc']:.3f} (best epoch {result.best_epoch})")
        np.savez(out / PREDICTIONS_FILE, labels=dataset.test.labels, **probabilities)
    summary = {k: float(np.mean([scalar_metrics(m)[k] for m in per_seed.values()])) for k in scalar_metrics(next(iter(per_seed.values())))}
    write_json(paths.METRICS / f"classifier_{arm}.json", {"mean_over_seeds": summary, "seeds": {str(s): scalar_metrics(m) for s, m in per_seed.items()}})
