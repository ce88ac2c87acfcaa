"""Stage `train_classifier --arm <id>`: one classifier per seed on the arm's training set
(`ganaug.experiments.arms`: real, balanced, classic, <family>-<ratio>, synthetic_only), with the
same classifier params, seeds and real validation split (selection, early stopping) for every arm;
test-split predictions and metrics go to models/arms/<id>/ for `evaluate`. With classifier.folds = k
> 1, one classifier per seed and fold (ganaug.experiments.folds: validation folds over the val split).

MLflow: a parent run per arm (`clf-<arm>-<digest>`, tags arm/family/ratio: the seeds' mean and
std) holding a nested run per seed (`clf-<arm>-s<seed>-<digest>`, tags arm/family/ratio/seed:
curves, test metrics, the data sets as run inputs).

Under `torchrun --nproc_per_node N` every rank trains every seed and fold with its share of each
batch (classify.train); rank 0 alone logs to MLflow, measures the test split and writes the files."""

from __future__ import annotations

import hashlib

import mlflow
import numpy as np

from ganaug import distributed
from ganaug.classify.metrics import classification_metrics, multilabel_metrics, scalar_metrics
from ganaug.classify.models import check_arch
from ganaug.classify.train import predict_proba, save_classifier, train_classifier
from ganaug.config import Params, flatten
from ganaug.data.packed import load_packed, read_meta
from ganaug.data.synthetic import load_synthetic
from ganaug.device import describe, pick_device
from ganaug.experiments.arms import (ARM_METRICS_FILE, PREDICTIONS_FILE, Arm, arm_training_set, parse_arm,
                                     train_options)
from ganaug.experiments.folds import Replicate, replicates
from ganaug.io import atomic_dir, write_json
from ganaug.stages import paths
from ganaug.tracking import mlflow_utils, runs, summaries
from ganaug.tracking.mlflow_utils import metric_key


def log_training_data(meta: dict, dataset, arm: Arm, synthetic_images: np.ndarray, synthetic_labels: np.ndarray,
                      manifest: dict) -> None:
    """The arm's data sets as inputs of the active run: the real splits it reads (digests from
    meta.json) and, for the arms that use it, the synthetic part of its training set."""
    if arm.family != "synthetic_only":
        mlflow_utils.log_split(meta, "train", dataset.train.images, dataset.train.labels, "training")
    mlflow_utils.log_split(meta, "val", dataset.val.images, dataset.val.labels, "validation")
    mlflow_utils.log_split(meta, "test", dataset.test.images, dataset.test.labels, "testing")
    if arm.uses_synthetic:
        mlflow_utils.log_dataset(synthetic_images, synthetic_labels, "synthetic", "data/synthetic", None, "training",
                                 generator_run_id=str(manifest.get("generator_mlflow_run_id")))


def log_confusion(test: dict, class_names: list[str], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    fig, ax = plt.subplots(figsize=(4, 4))
    ConfusionMatrixDisplay(np.array(test["confusion_matrix"]), display_labels=class_names).plot(ax=ax, colorbar=False)
    ax.set_title(title)
    mlflow.log_figure(fig, "confusion_matrix.png")
    plt.close(fig)


def main(params: Params, arm_id: str) -> None:
    arm = parse_arm(arm_id, params.arms)
    cfg = params.classifier
    check_arch(cfg.arch, "classifier.arch")
    meta = read_meta(paths.PREPARED)
    multilabel = meta.get("label_kind", "class_index") == "multi_hot"  # K sigmoid outputs, BCE; per-finding AUROC / AP on test
    # under torchrun: join the process group; this rank's device is cuda:LOCAL_RANK
    ranks, device = distributed.init_from_env(pick_device(cfg.device, "classifier.device"))
    distributed.local_batch_size(cfg.batch_size, ranks, "classifier.batch_size")  # before any data is read
    dataset = load_packed(paths.PREPARED)
    pool_images = pool_labels = None
    manifest: dict = {}
    if arm.uses_synthetic:
        pool_images, pool_labels, manifest = load_synthetic(paths.SYNTHETIC)
        if manifest.get("dataset_hash") != meta["dataset_hash"]:
            raise ValueError(f"{paths.SYNTHETIC} was made from another data set than {paths.PREPARED}; rerun synthesize")
    train_images, train_labels, info = arm_training_set(arm, dataset.train.images, dataset.train.labels,
                                                        pool_images, pool_labels)
    synthetic_part = (pool_images[info["synthetic_indices"]], pool_labels[info["synthetic_indices"]]) if arm.uses_synthetic else (None, None)
    names = dataset.class_names
    train_counts = {part: {names[c]: int(n) for c, n in counts.items()} for part, counts in info["train_counts"].items()}
    options = train_options(arm, params.arms)
    augment = None
    if options["augment_config"] is not None:
        from ganaug.classify.augment import ClassicAugment

        augment = ClassicAugment(options["augment_config"])
    folds = cfg.folds if cfg.folds > 1 else 0  # experiments.folds: validation folds over the val split
    trainings = replicates(cfg.seeds, folds, train_images, train_labels, dataset.val.images, dataset.val.labels,
                           dataset.val.groups, add_real_val=arm.family != "synthetic_only")

    def fit(rep: Replicate, on_epoch_end=None):
        return train_classifier(  # a fresh model for every seed and fold
            rep.fit_images, rep.fit_labels, rep.val_images, rep.val_labels, dataset.n_classes,
            cfg.arch, cfg.epochs, cfg.batch_size, cfg.lr, cfg.weight_decay, cfg.patience, rep.seed, device,
            schedule=cfg.schedule, select=cfg.select, balance=options["balance"], augment=augment,
            on_epoch_end=on_epoch_end, desc=f"{arm.id} seed {rep.seed}" + ("" if rep.fold is None else f" fold {rep.fold}"),
        )

    if not ranks.is_main:  # torchrun ranks 1..N-1 train their share; rank 0 logs, tests and writes
        for rep in trainings:
            fit(rep)
        distributed.shutdown()
        return
    print(f"arm {arm.id}: {len(train_images)} training images, real {train_counts['real']}, "
          f"synthetic {train_counts['synthetic']}, balance {options['balance']}, classic augmentation {augment is not None}")

    mlflow_utils.setup()
    arm_tags = {"arm": arm.id, "family": arm.family, "ratio": "" if arm.ratio is None else str(arm.ratio)}
    if arm.uses_synthetic:
        arm_tags["synthetic.generator_run_id"] = str(manifest.get("generator_mlflow_run_id"))
    arm_params = {"arms.balance": params.arms.balance} if arm.balanced else {}
    if arm.classic:
        arm_params |= flatten(params.arms.classic, "arms.classic")
    params_logged = {**flatten(cfg, "classifier"), **arm_params, **describe(device), "arm": arm.id,
                     "distributed.processes": ranks.world_size,  # torchrun ranks
                     "n_train_images": len(train_images),
                     **{f"n_train_{part}_{metric_key(name)}": n for part, counts in train_counts.items() for name, n in counts.items()}}
    inputs = {"classifier": flatten(cfg, "classifier"), "arm": arm.id, "arm_params": arm_params,
              "data": meta["dataset_hash"], "synthetic": manifest.get("generator_sha256"), "counts": train_counts}
    name = mlflow_utils.unique_run_name(f"clf-{arm.id}", inputs)
    digest = name.removeprefix(f"clf-{arm.id}-")
    stage = f"train_classifier_{arm.id}"  # MLflow's ganaug.stage (no "@": kill points split on it); dvc.stage is the DVC name
    parent_tags = mlflow_utils.lineage_tags(stage, meta, **arm_tags, **{"dvc.stage": arm.dvc_stage, "ganaug.run_level": "arm"})
    per_seed, probabilities, run_ids, epochs = {}, {}, {}, {}
    with atomic_dir(paths.arm_dir(arm.id)) as out, \
            runs.start_run(stage, runs.input_key(**inputs), run_name=name, tags=parent_tags,
                           **mlflow_utils.system_metrics(params.tracking)) as parent:  # sampled for all seeds
        mlflow.log_params(params_logged)
        for rep in trainings:
            seed, fold, fit_images, val_images = rep.seed, rep.fold, rep.fit_images, rep.val_images
            key = rep.key  # seed<s> or seed<s>_fold<f>
            record_key = key.removeprefix("seed")  # metrics.json "seeds": "0", or "0_fold2"
            fold_tag = {} if fold is None else {"fold": fold}
            tags = mlflow_utils.lineage_tags(stage, meta, **arm_tags, seed=seed, **fold_tag,
                                             **{"dvc.stage": arm.dvc_stage, "ganaug.run_level": "seed"})
            run_name = f"clf-{arm.id}-s{seed}" + ("" if fold is None else f"-f{fold}") + f"-{digest}"
            with runs.start_run(stage, runs.input_key(**inputs, seed=seed, **fold_tag), run_name=run_name,
                                tags=tags, nested=True) as run:
                mlflow.log_params(params_logged | {"seed": seed} | fold_tag)
                log_training_data(meta, dataset, arm, *synthetic_part, manifest)
                result = fit(rep, on_epoch_end=lambda r: mlflow.log_metrics({k: v for k, v in r.items() if k != "epoch"},
                                                                             step=int(r["epoch"])))
                # the model is fixed now (selected on val); the test split is only measured
                proba = predict_proba(result.model, dataset.test.images, device, multilabel=multilabel)
                test = (multilabel_metrics if multilabel else classification_metrics)(dataset.test.labels, proba, names)
                epochs[record_key] = {"best_epoch": int(result.best_epoch), "stopped_epoch": int(result.stopped_epoch)}
                if fold is not None:  # which images validated this fold (tests check them against the GAN's set)
                    epochs[record_key] |= {"fold": fold, "n_fit_images": len(fit_images), "n_val_images": len(val_images),
                                           "val_sha256": hashlib.sha256(np.ascontiguousarray(val_images).tobytes()).hexdigest()}
                mlflow.log_metrics({f"test_{k}": v for k, v in scalar_metrics(test).items()}
                                   | {k: epochs[record_key][k] for k in ("best_epoch", "stopped_epoch")})
                if not multilabel:
                    log_confusion(test, names, f"{arm.id}, {key} (test split)")
                save_classifier(result.model, out / f"{key}.pt", cfg.arch, dataset.n_classes, names,
                                dataset.image_shape[0], {"arm": arm.id, "seed": seed, "best_epoch": result.best_epoch, **fold_tag})
                per_seed[record_key], probabilities[key], run_ids[record_key] = test, proba, run.info.run_id
                score = (f"macro AUROC {test['roc_auc_macro']:.3f}, macro AP {test['average_precision_macro']:.3f}" if multilabel
                         else f"balanced accuracy {test['balanced_accuracy']:.3f}, AUC {test['roc_auc']:.3f}")
                print(f"  {key}: test {score} (best epoch {result.best_epoch}, stopped at {result.stopped_epoch})")
        np.savez(out / PREDICTIONS_FILE, labels=dataset.test.labels, **probabilities)
        seeds = {s: scalar_metrics(m) for s, m in per_seed.items()}
        summary = summaries.classifier_summary(seeds)
        mlflow.log_metrics({f"test_{k}": v["mean"] for k, v in summary.items()} | {f"test_{k}_std": v["std"] for k, v in summary.items()})
        write_json(out / ARM_METRICS_FILE, {
            "arm": arm.id, "family": arm.family, "ratio": arm.ratio, "mlflow_run_id": parent.info.run_id,
            "train_counts": train_counts,  # multi-label: images carrying each finding
            **({"n_train_images": info["n_images"]} if "n_images" in info else {}),
            "folds": folds,
            "seeds": {s: m | epochs[s] | {"mlflow_run_id": run_ids[s]} for s, m in seeds.items()},
        })
    distributed.shutdown()  # the other ranks finished with the last training
