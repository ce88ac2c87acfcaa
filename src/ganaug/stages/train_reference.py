"""Stage `train_reference`: a classifier trained on the real *train* split (early stopping on
val) whose penultimate features define the domain feature space for Fréchet distances, and
whose predictions are the label-fidelity oracle. Real-image feature statistics are computed
here once per dataset version.

Under `torchrun --nproc_per_node N` every rank trains with its share of each batch (classify.train);
rank 0 alone logs to MLflow, computes the features and writes the files.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import mlflow
import numpy as np
import torch

from ganaug import distributed
from ganaug.classify.metrics import classification_metrics, multilabel_metrics, scalar_metrics
from ganaug.classify.train import extract_features, load_classifier, predict_proba, save_classifier, train_classifier
from ganaug.config import Params, ReferenceConfig, flatten
from ganaug.data.packed import PackedDataset, load_packed, read_meta
from ganaug.device import describe, pick_device
from ganaug.io import atomic_dir, write_json
from ganaug.quality.frechet import FeatureStats, feature_stats
from ganaug.stages import paths
from ganaug.torchfile import BadFileError
from ganaug.tracking import mlflow_utils, runs, summaries

MODEL_FILE = "model.pt"
REAL_FEATURES_FILE = "real_features_train.npy"  # (N_train, D) float64, train-split order
METRICS_FILE = "metrics.json"  # every validation metric (metrics/reference.json keeps a summary)


def extractor_name(arch: str, dataset_hash: str) -> str:
    """Domain FDs are comparable only for the same reference network on the same data."""
    return f"reference-{arch}-penultimate@{dataset_hash[:12]}"


def stats_path(reference_dir: Path, class_index: int | None) -> Path:
    return reference_dir / ("real_stats_all.npz" if class_index is None else f"real_stats_class{class_index}.npz")


def real_feature_stats(features: np.ndarray, dataset: PackedDataset, extractor: str) -> dict[int | None, FeatureStats]:
    """Feature statistics of the real train split (`features` in split order): all images (None) and each class."""
    stats: dict[int | None, FeatureStats] = {None: feature_stats(features, extractor)}
    labels = dataset.train.labels  # (N,) class indices or (N, K) multi-hot: then the images carrying finding c
    for c in range(dataset.n_classes):
        class_features = features[labels[:, c] == 1 if labels.ndim == 2 else labels == c]
        if len(class_features) >= 2:
            stats[c] = feature_stats(class_features, extractor)
    return stats


def load_reference(reference_dir: Path, device: torch.device) -> tuple[torch.nn.Module, str]:
    """(reference model, extractor name) from a train_reference output directory."""
    path = reference_dir / MODEL_FILE
    model, blob = load_classifier(path, device)
    extractor = blob["info"].get("extractor") if isinstance(blob["info"], dict) else None
    if not isinstance(extractor, str):
        raise BadFileError(f"classifier file {str(path)!r} has no info.extractor: expected the reference network "
                           "written by the train_reference stage (rerun it)")
    return model, extractor


def main(params: Params) -> None:
    cfg: ReferenceConfig = params.reference
    meta = read_meta(paths.PREPARED)
    multilabel = meta.get("label_kind", "class_index") == "multi_hot"  # K sigmoid outputs with BCE (classify.train)
    # under torchrun: join the process group; this rank's device is cuda:LOCAL_RANK
    ranks, device = distributed.init_from_env(pick_device(params.classifier.device, "classifier.device"))
    distributed.local_batch_size(cfg.batch_size, ranks, "reference.batch_size")  # before any data is read
    dataset = load_packed(paths.PREPARED)
    extractor = extractor_name(cfg.arch, meta["dataset_hash"])
    fit = partial(train_classifier, dataset.train.images, dataset.train.labels, dataset.val.images, dataset.val.labels,
                  dataset.n_classes, cfg.arch, cfg.epochs, cfg.batch_size, cfg.lr, cfg.weight_decay, cfg.patience,
                  cfg.seed, device, desc="reference", section="reference")
    if not ranks.is_main:  # torchrun ranks 1..N-1 train their share; rank 0 logs, extracts features and writes
        fit()
        distributed.shutdown()
        return

    mlflow_utils.setup()
    key = runs.input_key(reference=flatten(cfg, "reference"), data=meta["dataset_hash"], device=params.classifier.device)
    name = mlflow_utils.unique_run_name(f"train_reference-{cfg.arch}", {"reference": flatten(cfg), "data": meta["dataset_hash"]})
    with runs.start_run("train_reference", key, run_name=name, tags=mlflow_utils.lineage_tags("train_reference", meta),
                        **mlflow_utils.system_metrics(params.tracking)):
        mlflow.log_params({**flatten(cfg, "reference"), **describe(device), "distributed.processes": ranks.world_size})
        mlflow_utils.log_split(meta, "train", dataset.train.images, dataset.train.labels, "training")
        mlflow_utils.log_split(meta, "val", dataset.val.images, dataset.val.labels, "validation")
        result = fit(on_epoch_end=lambda r: mlflow.log_metrics({k: v for k, v in r.items() if k != "epoch"}, step=int(r["epoch"])))
        distributed.shutdown()  # the other ranks are done; what follows is rank 0's alone
        val_proba = predict_proba(result.model, dataset.val.images, device, multilabel=multilabel)
        val = (multilabel_metrics if multilabel else classification_metrics)(dataset.val.labels, val_proba, dataset.class_names)
        features = extract_features(result.model, dataset.train.images, device)
        stats = real_feature_stats(features, dataset, extractor)
        metrics = {f"val_{k}": v for k, v in scalar_metrics(val).items()} | {"best_epoch": result.best_epoch}
        with atomic_dir(paths.REFERENCE) as out:  # all of models/reference or nothing
            write_json(out / METRICS_FILE, metrics)
            np.save(out / REAL_FEATURES_FILE, features)
            for class_index, s in stats.items():
                s.save(stats_path(out, class_index))
            save_classifier(
                result.model, out / MODEL_FILE, cfg.arch, dataset.n_classes, dataset.class_names, dataset.image_shape[0],
                {"extractor": extractor, "best_epoch": result.best_epoch, "dataset_hash": meta["dataset_hash"],
                 "label_kind": meta["label_kind"]},
            )
        mlflow.log_metrics(metrics)
        mlflow.set_tag("feature_extractor", extractor)
        write_json(paths.METRICS / "reference.json", summaries.reference_summary(metrics))
    score = f"macro AUROC {val['roc_auc_macro']:.3f}" if multilabel else f"balanced accuracy {val['balanced_accuracy']:.3f}"
    print(f"reference classifier: val {score}, extractor {extractor}")



