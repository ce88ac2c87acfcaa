"""Classifier training with early stopping on the validation split, and prediction.

The test split is not an argument here: selection (early stopping, best epoch) sees only
train and val; test predictions are made afterwards by the caller.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ganaug.classify.models import create_classifier
from ganaug.device import autocast, to_device_images
from ganaug.gan.train import to_model_range
from ganaug.torchfile import BadFileError, load_torch_file, require_fields, save_torch_file, summary
from ganaug.progress import progress


@dataclass
class ClassifierResult:
    model: nn.Module  # best-on-validation weights, eval mode
    history: list[dict[str, float]]  # per epoch: epoch, train_loss, val_loss, val_accuracy
    best_epoch: int
    best_val_loss: float


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


def predict_proba(model: nn.Module, images: np.ndarray, device: torch.device, batch_size: int = 256) -> np.ndarray:
    """uint8 (N, C, H, W) -> class probabilities (N, K)."""
    model.eval()
    return map_batches(lambda x: torch.softmax(model(x).float(), dim=1), images, device, batch_size)


def extract_features(model: nn.Module, images: np.ndarray, device: torch.device, batch_size: int = 256) -> np.ndarray:
    """uint8 (N, C, H, W) -> penultimate features (N, D) float64, in full precision (they feed covariances)."""
    model.eval()
    return map_batches(model.features, images, device, batch_size, mixed_precision=False).astype(np.float64)


def train_classifier(
    train_images: np.ndarray,  # (N, C, H, W) uint8: real (+ synthetic) training images
    train_labels: np.ndarray,  # (N,) int64 class indices
    val_images: np.ndarray,  # (M, C, H, W) uint8: the real validation split
    val_labels: np.ndarray,  # (M,) int64
    n_classes: int,
    arch: str,  # simple_cnn | timm model name
    epochs: int,  # upper bound; early stopping usually ends sooner
    batch_size: int,
    lr: float,  # AdamW learning rate
    weight_decay: float,
    patience: int,  # epochs without a lower validation loss before stopping
    seed: int,  # weights init, data order and dropout
    device: torch.device,
    on_epoch_end: Callable[[dict[str, float]], None] | None = None,
    desc: str = "classifier",  # progress-bar label (which model, which seed)
) -> ClassifierResult:
    """Train from scratch; keep the weights of the epoch with the lowest validation loss."""
    assert train_labels.ndim == 1, "train_classifier takes class indices (multi-label is not supported here)"
    torch.manual_seed(seed)
    order_rng = torch.Generator().manual_seed(seed)
    model = create_classifier(arch, n_classes, train_images.shape[1]).to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    x_all, y_all = torch.from_numpy(train_images), torch.from_numpy(train_labels).long()
    y_val = torch.from_numpy(val_labels).long()
    history: list[dict[str, float]] = []
    best_state: dict[str, Any] | None = None
    best_loss, best_epoch, stale = float("inf"), 0, 0

    epoch_bar = progress(range(1, epochs + 1), desc=f"{desc} epochs", unit="epoch", log_every_s=0)  # a log line per epoch
    for epoch in epoch_bar:
        model.train()
        order = torch.randperm(len(x_all), generator=order_rng)
        total, count = 0.0, 0
        batch_bar = progress(range(0, len(order), batch_size), desc=f"{desc} epoch {epoch}", unit="batch")
        for start in batch_bar:
            idx = order[start : start + batch_size]
            if len(idx) < 2:  # a single-image batch breaks BatchNorm
                continue
            x, y = to_device_images(to_model_range(x_all[idx]), device), y_all[idx].to(device)
            with autocast(device):
                loss = F.cross_entropy(model(x).float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
            count += len(idx)
            batch_bar.set_postfix(train_loss=f"{total / count:.4f}", refresh=False)
        batch_bar.close()

        model.eval()
        logits = torch.from_numpy(map_batches(model, val_images, device))
        val_loss = F.cross_entropy(logits, y_val).item()
        val_acc = (logits.argmax(1) == y_val).float().mean().item()
        record = {"epoch": epoch, "train_loss": total / max(count, 1), "val_loss": val_loss, "val_accuracy": val_acc}
        history.append(record)
        epoch_bar.set_postfix(train_loss=f"{record['train_loss']:.4f}", val_loss=f"{val_loss:.4f}",
                              val_acc=f"{val_acc:.3f}", refresh=False)
        if on_epoch_end is not None:
            on_epoch_end(record)
        if val_loss < best_loss:
            best_loss, best_epoch, stale = val_loss, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
            if stale >= patience:
                break
    epoch_bar.close()

    assert best_state is not None, "no epoch finished"
    model.load_state_dict(best_state)
    model.eval()
    return ClassifierResult(model, history, best_epoch, best_loss)


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
