"""Classifier training with early stopping on the validation split, and prediction.

The test split is not an argument here: selection (early stopping, best epoch) sees only
train and val; test predictions are made afterwards by the caller. Options: a learning-rate
schedule, the validation number that selects the epoch, class balancing (oversampling or a
class-weighted loss) and classic augmentation on the fly (classify.augment).

Under `torchrun --nproc_per_node N` (ganaug.distributed) every rank draws the same epoch order and
takes its slice of every batch (the batch size stays the global batch); each rank's loss is its
share of the global batch's mean loss, the gradients are summed across ranks, BatchNorm uses the
global batch's statistics, and rank 0 validates and tells the others, so the weights, the kept
epoch and the early stop are the same on every rank. Without torchrun nothing of this runs.
"""

from __future__ import annotations

import contextlib
import copy
from functools import partial
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import balanced_accuracy_score
from torch import nn

from ganaug import distributed
from ganaug.classify.metrics import multilabel_metrics, roc_auc
from ganaug.classify.models import create_classifier
from ganaug.device import autocast, on_device_uint8, to_device_images
from ganaug.gan.train import to_model_range
from ganaug.torchfile import BadFileError, load_torch_file, require_fields, save_torch_file, summary
from ganaug.progress import progress


SCHEDULES = ("constant", "cosine")
BALANCES = ("none", "oversample", "class_weight")
# selection metric -> True when larger is better
SELECTS = {"val_loss": False, "val_roc_auc": True, "val_balanced_accuracy": True}
AUGMENT_SEED_OFFSET = 1_000_003  # the augmentation stream's seed: seed + this (+ rank stride under torchrun)
DROPOUT_SEED_OFFSET = 3  # under torchrun each rank reseeds dropout with seed + this (+ rank stride) after the init


@dataclass
class ClassifierResult:
    model: nn.Module  # weights of the selected epoch (best `select` value on val), eval mode
    # per epoch: epoch, lr (at the epoch's start), train_loss, val_loss, val_accuracy, val_balanced_accuracy, val_roc_auc
    history: list[dict[str, float]]
    best_epoch: int  # the kept epoch (1-based)
    best_val_loss: float  # the kept epoch's (unweighted) validation loss
    select: str = "val_loss"  # the validation number that chose best_epoch
    best_select_value: float = float("nan")  # its value at best_epoch
    stopped_epoch: int = 0  # the last epoch trained (== epochs unless early stopping ended sooner)


@torch.no_grad()
def map_batches(fn: Callable[[torch.Tensor], torch.Tensor], images: np.ndarray, device: torch.device,
                batch_size: int = 256, mixed_precision: bool = True) -> np.ndarray:
    """Apply `fn` to uint8 (N, C, H, W) images in batches (as [-1, 1] floats); concatenated on the CPU."""
    out = []
    for start in range(0, len(images), batch_size):
        x = to_device_images(to_model_range(torch.from_numpy(images[start : start + batch_size])), device)
        with autocast(device) if mixed_precision else contextlib.nullcontext():
            out.append(fn(x).float().cpu().numpy())
    return np.concatenate(out)


def predict_proba(model: nn.Module, images: np.ndarray, device: torch.device, batch_size: int = 256,
                  multilabel: bool = False) -> np.ndarray:
    """uint8 (N, C, H, W) -> class probabilities (N, K) (softmax), or with `multilabel` one
    independent probability per finding (N, K) (sigmoid, the BCE head's)."""
    model.eval()
    head = (lambda x: torch.sigmoid(model(x).float())) if multilabel else (lambda x: torch.softmax(model(x).float(), dim=1))
    return map_batches(head, images, device, batch_size)


def extract_features(model: nn.Module, images: np.ndarray, device: torch.device, batch_size: int = 256) -> np.ndarray:
    """uint8 (N, C, H, W) -> penultimate features (N, D) float64, in full precision (they feed covariances)."""
    model.eval()
    return map_batches(model.features, images, device, batch_size, mixed_precision=False).astype(np.float64)


def class_weights(labels: np.ndarray, n_classes: int) -> torch.Tensor:
    """Cross-entropy weights (K,) = inverse class frequency, normalised so that the mean weight over
    the training images is 1: w_c = N / (K * n_c). Every class needs at least one image."""
    counts = np.bincount(labels, minlength=n_classes)
    if (counts == 0).any():
        raise ValueError(f"balance=class_weight: classes {np.flatnonzero(counts == 0).tolist()} have no training images")
    return torch.tensor(len(labels) / (n_classes * counts), dtype=torch.float32)


def epoch_order(labels: torch.Tensor, n_classes: int, balance: str, generator: torch.Generator) -> torch.Tensor:
    """The training-image indices of one epoch, shuffled, (N,) for N = len(labels).

    none / class_weight: a permutation. oversample: N draws, every class equally often (the remainder
    of N / K goes to randomly chosen classes, one each); a class's images are taken in fresh random
    permutations one after another, so within a class no image repeats before all were used."""
    n = len(labels)
    if balance != "oversample":
        return torch.randperm(n, generator=generator)
    per_class = torch.full((n_classes,), n // n_classes, dtype=torch.long)
    per_class[torch.randperm(n_classes, generator=generator)[: n % n_classes]] += 1
    picks = []
    for c in range(n_classes):
        members = torch.nonzero(labels == c).flatten()  # (n_c,)
        if len(members) == 0:
            raise ValueError(f"balance=oversample: class {c} has no training images")
        rounds = -(-int(per_class[c]) // len(members))  # ceil
        cycled = torch.cat([members[torch.randperm(len(members), generator=generator)] for _ in range(rounds)])
        picks.append(cycled[: int(per_class[c])])
    chosen = torch.cat(picks)
    return chosen[torch.randperm(len(chosen), generator=generator)]


def steps_per_epoch(n_images: int, batch_size: int, min_batch: int = 2) -> int:
    """Optimizer steps in one epoch: a last batch of fewer than `min_batch` images is skipped (one
    image breaks BatchNorm; under torchrun every rank needs one: min_batch = max(2, N))."""
    return n_images // batch_size + (1 if n_images % batch_size >= min_batch else 0)


def batch_loss_share(logits: torch.Tensor, targets: torch.Tensor, batch_targets: torch.Tensor,
                     weight: torch.Tensor | None, multilabel: bool) -> torch.Tensor:
    """This rank's share of the global batch's mean training loss: the summed loss of its images
    (logits (b, K), targets (b,) or (b, K)) over the global batch's denominator (batch_targets (B,) or
    (B, K), on the device): B images, B x K findings (BCE), or the summed class weights (weighted
    cross-entropy's mean). The ranks' shares add up to the loss of the batch on one process, also
    when the batch does not divide evenly."""
    if multilabel:
        return F.binary_cross_entropy_with_logits(logits, targets, reduction="sum") / batch_targets.numel()
    denominator = weight[batch_targets].sum() if weight is not None else len(batch_targets)
    return F.cross_entropy(logits, targets, weight=weight, reduction="sum") / denominator


def multilabel_validation_record(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """logits (M, K), multi-hot labels (M, K) -> val_loss (mean BCE over images and findings) and
    val_roc_auc (macro AUROC over the findings defined on the split, classify.metrics)."""
    proba = torch.sigmoid(logits).numpy()
    auroc = multilabel_metrics(labels.numpy(), proba, [str(k) for k in range(labels.shape[1])])["roc_auc_macro"]
    return {"val_loss": F.binary_cross_entropy_with_logits(logits, labels).item(), "val_roc_auc": auroc}


def validation_record(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """logits (M, K), labels (M,) -> the unweighted validation numbers a `select` may use."""
    y = labels.numpy()
    proba = torch.softmax(logits, dim=1).numpy()
    return {
        "val_loss": F.cross_entropy(logits, labels).item(),
        "val_accuracy": (logits.argmax(1) == labels).float().mean().item(),
        "val_balanced_accuracy": float(balanced_accuracy_score(y, proba.argmax(1))),
        "val_roc_auc": roc_auc(y, proba),
    }


def train_classifier(
    train_images: np.ndarray,  # (N, C, H, W) uint8: real (+ synthetic) training images
    train_labels: np.ndarray,  # (N,) int64 class indices, or (N, K) 0/1 multi-hot findings (sigmoid head, BCE)
    val_images: np.ndarray,  # (M, C, H, W) uint8: the real validation split
    val_labels: np.ndarray,  # (M,) int64, or (M, K) multi-hot like train_labels
    n_classes: int,
    arch: str,  # simple_cnn | timm model name
    epochs: int,  # upper bound; early stopping usually ends sooner
    batch_size: int,
    lr: float,  # AdamW learning rate (the start of the schedule)
    weight_decay: float,
    patience: int,  # epochs without a better `select` value before stopping
    seed: int,  # weights init, data order, oversampling draws, augmentation parameters and dropout
    device: torch.device,
    *,
    schedule: str = "constant",  # constant | cosine: lr decays per optimizer step to 0 at the end of epoch `epochs`
    select: str = "val_loss",  # val_loss (lowest) | val_roc_auc | val_balanced_accuracy (highest) picks the kept epoch
    balance: str = "none",  # none | oversample (classes drawn equally often) | class_weight (weighted training loss)
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,  # e.g. ClassicAugment, per batch
    on_epoch_end: Callable[[dict[str, float]], None] | None = None,  # rank 0's alone under torchrun
    desc: str = "classifier",  # progress-bar label (which model, which seed)
    section: str = "classifier",  # params section that arch and batch_size come from, named in errors (or "reference")
) -> ClassifierResult:
    """Train from scratch; keep the weights of the epoch with the best validation `select` value.

    The validation loss is always the plain (unweighted) cross-entropy, also under
    balance=class_weight: the selection measures the model on the val split as it is.
    Multi-hot labels (N, K): K sigmoid outputs trained with binary cross-entropy (findings are
    not exclusive); val_loss is the BCE, val_roc_auc the macro AUROC over findings; there is no
    single class to balance or to score by balanced accuracy, so balance must be "none" and
    select val_loss or val_roc_auc.

    Under torchrun (a process group, ganaug.distributed) `batch_size` is the global batch and must
    divide by the process count; every rank returns the same weights and history."""
    multilabel = train_labels.ndim == 2
    if multilabel:
        if val_labels.shape[1:] != train_labels.shape[1:] or train_labels.shape[1] != n_classes:
            raise ValueError(f"multi-hot labels: train {train_labels.shape}, val {val_labels.shape}, {n_classes} outputs")
        if balance != "none":
            raise ValueError(f"balance={balance!r} balances classes, which multi-label data does not have "
                             "(findings overlap): expected balance=none (arms.real without balanced)")
        if select == "val_balanced_accuracy":
            raise ValueError("classifier.select=val_balanced_accuracy needs one class per image; multi-label data: "
                             "expected val_loss or val_roc_auc")
    assert train_labels.ndim in (1, 2), f"train_labels must be (N,) or (N, K), got {train_labels.shape}"
    if schedule not in SCHEDULES:
        raise ValueError(f"classifier.schedule={schedule!r}: expected one of {list(SCHEDULES)}")
    if select not in SELECTS:
        raise ValueError(f"classifier.select={select!r}: expected one of {list(SELECTS)}")
    if balance not in BALANCES:
        raise ValueError(f"balance={balance!r}: expected one of {list(BALANCES)}")
    if select == "val_roc_auc" and not multilabel and len(np.unique(val_labels)) < 2:
        raise ValueError("classifier.select=val_roc_auc needs at least two classes in the validation split")
    ranks = distributed.current()  # torchrun: this process's share of every batch
    distributed.local_batch_size(batch_size, ranks, f"{section}.batch_size")  # the global batch splits evenly
    min_batch = max(2, ranks.world_size)  # BatchNorm needs 2 images; every rank needs 1 of a ragged last batch
    torch.manual_seed(seed)
    order_rng = torch.Generator().manual_seed(seed)  # the same on every rank: one epoch order, split
    # its own stream: augmenting leaves the data order unchanged; each rank its own (the seed itself on one process)
    augment_rng = torch.Generator().manual_seed(distributed.rank_seed(seed + AUGMENT_SEED_OFFSET, ranks))
    model = create_classifier(arch, n_classes, train_images.shape[1])
    if ranks.active:  # BatchNorm over the global batch: running statistics stay identical across ranks
        distributed.sync_batchnorm(model)
        if unsynchronised := distributed.unsynchronised_batchnorms(model):
            raise ValueError(f"{section}.arch={arch!r} has normalisation layers that cannot use the global batch's "
                             f"statistics under torchrun ({', '.join(unsynchronised[:3])}: not torch.nn.BatchNorm2d): "
                             "train it in one process, or choose simple_cnn or a timm model with plain BatchNorm2d")
    model = model.to(device, memory_format=torch.channels_last)
    if ranks.active:
        distributed.broadcast_state(model, ranks)  # identical starts on every rank
        torch.manual_seed(distributed.rank_seed(seed + DROPOUT_SEED_OFFSET, ranks))  # dropout: each rank its own masks
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    n_steps = epochs * steps_per_epoch(len(train_images), batch_size, min_batch)
    scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(n_steps, 1), eta_min=0.0)
                 if schedule == "cosine" else None)
    # uint8; without augmentation on CUDA the whole set lives on the GPU and batches are indexed there
    as_target = (lambda y: torch.from_numpy(y).float()) if multilabel else (lambda y: torch.from_numpy(y).long())
    x_all = on_device_uint8(train_images, device) if augment is None else torch.from_numpy(train_images)
    y_all = as_target(train_labels)  # (N,) long or (N, K) float
    weight = class_weights(train_labels, n_classes).to(device) if balance == "class_weight" else None
    y_val = as_target(val_labels)
    loss_fn = F.binary_cross_entropy_with_logits if multilabel else partial(F.cross_entropy, weight=weight)
    record_fn = multilabel_validation_record if multilabel else validation_record
    larger_is_better = SELECTS[select]
    history: list[dict[str, float]] = []
    best_state: dict[str, Any] | None = None
    best_value, best_epoch, stale, stopped_epoch = float("nan"), 0, 0, 0

    quiet = not ranks.is_main  # under torchrun rank 0 alone shows progress
    epoch_bar = progress(range(1, epochs + 1), desc=f"{desc} epochs", unit="epoch", log_every_s=0,  # a log line per epoch
                         disable=quiet)
    for epoch in epoch_bar:
        model.train()
        epoch_lr = optimizer.param_groups[0]["lr"]
        order = epoch_order(y_all, n_classes, balance, order_rng)
        total, count = 0.0, 0
        batch_bar = progress(range(0, len(order), batch_size), desc=f"{desc} epoch {epoch}", unit="batch", disable=quiet)
        for start in batch_bar:
            idx = order[start : start + batch_size]  # (B,) the global batch
            n_batch = len(idx)
            if n_batch < min_batch:  # a single-image batch breaks BatchNorm
                continue
            if ranks.active:
                batch_targets, idx = y_all[idx].to(device), distributed.shard(idx, ranks)  # (b,) this rank's slice
            x_uint8 = x_all[idx] if augment is None else augment(x_all[idx], augment_rng)  # (b, C, H, W) uint8, b = B on one process
            x, y = to_device_images(to_model_range(x_uint8), device), y_all[idx].to(device)
            with autocast(device):
                if ranks.active:
                    loss = batch_loss_share(model(x).float(), y, batch_targets, weight, multilabel)
                else:
                    loss = loss_fn(model(x).float(), y)
            optimizer.zero_grad(set_to_none=True)
            if ranks.active:
                (loss * ranks.world_size).backward()  # average_gradients divides by N: the shares' gradients add up
                distributed.average_gradients(model, ranks)
                loss = distributed.average_scalars({"loss": loss.detach()}, ranks)["loss"] * ranks.world_size  # the batch's
            else:
                loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            total += loss.item() * n_batch
            count += n_batch
            batch_bar.set_postfix(train_loss=f"{total / count:.4f}", refresh=False)
        batch_bar.close()

        model.eval()
        record = None
        if ranks.is_main:  # under torchrun rank 0 validates and tells the others: one decision everywhere
            logits = torch.from_numpy(map_batches(model, val_images, device))  # (M, K) float32 on the CPU
            record = {"epoch": epoch, "lr": epoch_lr, "train_loss": total / max(count, 1), **record_fn(logits, y_val)}
        record = distributed.broadcast_metrics(record, ranks)
        assert record is not None
        history.append(record)
        stopped_epoch = epoch
        epoch_bar.set_postfix(train_loss=f"{record['train_loss']:.4f}", val_loss=f"{record['val_loss']:.4f}",
                              val_acc=f"{record.get('val_accuracy', float('nan')):.3f}",  # (single-label only)
                              val_auc=f"{record['val_roc_auc']:.3f}", refresh=False)
        if on_epoch_end is not None and ranks.is_main:
            on_epoch_end(record)
        value = record[select]
        if not np.isfinite(value):
            raise FloatingPointError(f"{desc}: validation {select} is {value} at epoch {epoch} (a NaN loss or a diverged model)")
        improved = best_state is None or (value > best_value if larger_is_better else value < best_value)
        if improved:  # ties keep the earlier epoch
            best_value, best_epoch, stale = value, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
            if stale >= patience:
                break
    epoch_bar.close()

    assert best_state is not None, "no epoch finished"
    model.load_state_dict(best_state)
    model.eval()
    return ClassifierResult(model, history, best_epoch, history[best_epoch - 1]["val_loss"], select, best_value, stopped_epoch)


CLASSIFIER_FORMAT = "ganaug-classifier-v1"
CLASSIFIER_EXPECTED = "a ganaug classifier file written by the train_reference or train_classifier stage (rerun it)"
CLASSIFIER_FIELDS = {"format": str, "arch": str, "n_classes": int, "class_names": list, "in_chans": int,
                     "state_dict": dict, "info": dict}


def save_classifier(model: nn.Module, path: str | Path, arch: str, n_classes: int, class_names: list[str], in_chans: int, info: dict[str, Any]) -> None:
    """Write a classifier file: tensors and plain values only (it loads with weights_only=True)."""
    save_torch_file(
        {"format": CLASSIFIER_FORMAT, "arch": arch, "n_classes": n_classes, "class_names": class_names,
         "in_chans": in_chans, "state_dict": model.state_dict(), "info": info},
        path,
    )


def load_classifier(path: str | Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """(model in eval mode, the file's fields), read with `weights_only=True` (nothing in the
    file can run code); a file that is not a classifier file raises `BadFileError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"classifier file {str(path)!r} not found")
    what = "classifier file"
    blob = require_fields(load_torch_file(path, what, CLASSIFIER_EXPECTED), path, what, CLASSIFIER_EXPECTED, CLASSIFIER_FIELDS)
    if blob["format"] != CLASSIFIER_FORMAT:
        raise BadFileError(f"{what} {str(path)!r} has format {blob['format']!r}; expected {CLASSIFIER_EXPECTED}")
    try:
        model = create_classifier(blob["arch"], blob["n_classes"], blob["in_chans"], key="arch")
    except (ValueError, RuntimeError) as exc:  # an arch this version lacks, a class count of 0
        raise BadFileError(f"{what} {str(path)!r} describes a network this version cannot build ({exc}); "
                           f"expected {CLASSIFIER_EXPECTED}") from exc
    try:
        model.load_state_dict(blob["state_dict"])
    except (RuntimeError, TypeError, AttributeError) as exc:  # other layer names or shapes
        raise BadFileError(f"{what} {str(path)!r} does not match its arch={blob['arch']!r} network ({summary(exc)}); "
                           f"expected {CLASSIFIER_EXPECTED}") from exc
    return model.to(device, memory_format=torch.channels_last).eval(), blob
