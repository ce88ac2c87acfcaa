"""train_classifier's options (schedule, select, balance, augment) and ClassicAugment, on tiny CPU runs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

import ganaug.classify.train as train_module
from ganaug.classify.augment import ClassicAugment, apply_params
from ganaug.classify.train import class_weights, epoch_order, steps_per_epoch, train_classifier
from ganaug.config import ClassicAugmentConfig

CPU = torch.device("cpu")
ALL_ON = ClassicAugmentConfig(hflip=True, rotation=20.0, zoom=0.2, brightness=0.2, contrast=0.2)


def tiny_set(n_train: int = 40, minority: int = 8, n_val: int = 16, size: int = 16, seed: int = 0):
    """Train set with `minority` images of class 1, the rest class 0; every train image's first pixel
    holds its class (so a batch tells which classes it drew) and the second its index (mod 256)."""
    rng = np.random.default_rng(seed)
    train = rng.integers(0, 256, (n_train, 1, size, size), dtype=np.uint8)
    labels = np.zeros(n_train, dtype=np.int64)
    labels[:minority] = 1
    train[:, 0, 0, 0] = labels
    train[:, 0, 0, 1] = np.arange(n_train) % 256
    val = rng.integers(0, 256, (n_val, 1, size, size), dtype=np.uint8)
    val_labels = np.arange(n_val, dtype=np.int64) % 2
    return train, labels, val, val_labels


def fit(train, labels, val, val_labels, epochs=2, batch_size=8, patience=5, seed=0, **options):
    return train_classifier(train, labels, val, val_labels, 2, "simple_cnn", epochs, batch_size, 1e-3, 1e-4, patience,
                            seed, CPU, **options)


class Recorder:
    """An `augment` stand-in that leaves images unchanged and records each batch's classes (first pixel)."""

    def __init__(self):
        self.batches: list[torch.Tensor] = []

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        self.batches.append(images[:, 0, 0, 0].clone())
        return images


# ---- balance ----------------------------------------------------------------------------------

def test_oversample_order_draws_every_class_equally_often_and_cycles_the_minority():
    labels = torch.tensor([0] * 90 + [1] * 10)
    order = epoch_order(labels, 2, "oversample", torch.Generator().manual_seed(0))
    assert len(order) == 100
    assert torch.bincount(labels[order], minlength=2).tolist() == [50, 50]
    # 50 minority draws from 10 images: each image exactly 5 times (whole permutations, one after another)
    assert torch.bincount(order[labels[order] == 1], minlength=100)[90:].tolist() == [5] * 10
    # majority: 50 of 90 images, none twice
    assert torch.bincount(order[labels[order] == 0]).max().item() == 1
    # three classes, 100 draws: counts differ by one at most
    labels3 = torch.tensor([0] * 70 + [1] * 25 + [2] * 5)
    counts = torch.bincount(labels3[epoch_order(labels3, 3, "oversample", torch.Generator().manual_seed(1))], minlength=3)
    assert counts.sum().item() == 100 and counts.max() - counts.min() <= 1
    # seeded
    again = epoch_order(labels, 2, "oversample", torch.Generator().manual_seed(0))
    other = epoch_order(labels, 2, "oversample", torch.Generator().manual_seed(1))
    assert torch.equal(order, again) and not torch.equal(order, other)


def test_none_and_class_weight_orders_are_permutations():
    labels = torch.tensor([0] * 30 + [1] * 6)
    for balance in ("none", "class_weight"):
        order = epoch_order(labels, 2, balance, torch.Generator().manual_seed(0))
        assert sorted(order.tolist()) == list(range(36))


def test_oversample_in_training_gives_balanced_epochs():
    train, labels, val, val_labels = tiny_set(n_train=40, minority=8)
    for balance, expected in (("oversample", [20, 20]), ("none", [32, 8])):
        seen = Recorder()
        fit(train, labels, val, val_labels, epochs=2, batch_size=8, balance=balance, augment=seen)
        per_epoch = [torch.cat(seen.batches[:5]), torch.cat(seen.batches[5:])]  # 40 images / 8 = 5 batches an epoch
        assert len(seen.batches) == 10
        for drawn in per_epoch:
            assert torch.bincount(drawn.long(), minlength=2).tolist() == expected, balance


def test_oversample_needs_every_class():
    labels = torch.zeros(10, dtype=torch.long)
    with pytest.raises(ValueError, match="class 1 has no training images"):
        epoch_order(labels, 2, "oversample", torch.Generator().manual_seed(0))


def test_class_weights_are_inverse_frequency_with_mean_one():
    labels = np.array([0, 0, 0, 1])
    weights = class_weights(labels, 2)
    assert torch.allclose(weights, torch.tensor([4 / 6, 2.0]))
    assert weights[torch.from_numpy(labels)].mean().item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="class_weight"):
        class_weights(np.array([0, 0]), 2)


def test_class_weight_weights_the_training_loss_only(monkeypatch):
    train, labels, val, val_labels = tiny_set(n_train=40, minority=8)
    calls: list[torch.Tensor | None] = []
    real_cross_entropy = train_module.F.cross_entropy

    def recording_cross_entropy(logits, target, *args, weight=None, **kwargs):
        calls.append(None if weight is None else weight.detach().clone())
        return real_cross_entropy(logits, target, *args, weight=weight, **kwargs)

    monkeypatch.setattr(train_module.F, "cross_entropy", recording_cross_entropy)
    fit(train, labels, val, val_labels, epochs=1, batch_size=8, balance="class_weight")
    training, validation = calls[:5], calls[5:]  # 5 training batches, then the validation loss
    expected = torch.tensor([40 / (2 * 32), 40 / (2 * 8)])
    assert all(w is not None and torch.allclose(w, expected) for w in training)
    assert validation == [None]  # the loss that selects the epoch is unweighted
    calls.clear()
    fit(train, labels, val, val_labels, epochs=1, batch_size=8, balance="none")
    assert calls == [None] * 6


# ---- schedule ---------------------------------------------------------------------------------

def test_cosine_schedule_decays_to_zero_at_the_last_epoch_and_constant_stays():
    train, labels, val, val_labels = tiny_set(n_train=40, minority=8)
    epochs, lr = 4, 1e-3
    cosine = fit(train, labels, val, val_labels, epochs=epochs, batch_size=8, schedule="cosine")
    steps = steps_per_epoch(40, 8)
    expected = [0.5 * lr * (1 + math.cos(math.pi * (e * steps) / (epochs * steps))) for e in range(epochs)]
    assert [h["lr"] for h in cosine.history] == pytest.approx(expected)
    assert cosine.history[-1]["lr"] < cosine.history[0]["lr"] / 2
    constant = fit(train, labels, val, val_labels, epochs=2, batch_size=8, schedule="constant")
    assert [h["lr"] for h in constant.history] == [lr, lr]


def test_steps_per_epoch_skips_a_single_image_batch():
    assert steps_per_epoch(40, 8) == 5
    assert steps_per_epoch(41, 8) == 5  # the 1-image batch is skipped
    assert steps_per_epoch(42, 8) == 6


# ---- select and early stopping ----------------------------------------------------------------

SCRIPT = {  # per epoch: a val_loss minimum at 2, a val_roc_auc maximum at 4, a val_balanced_accuracy maximum at 5
    "val_loss": [0.60, 0.40, 0.45, 0.50, 0.55, 0.70],
    "val_roc_auc": [0.60, 0.70, 0.75, 0.90, 0.85, 0.80],
    "val_balanced_accuracy": [0.50, 0.55, 0.60, 0.65, 0.70, 0.60],
}


@pytest.mark.parametrize("select, best, stopped", [
    ("val_loss", 2, 4),  # patience 2: epochs 3 and 4 without a lower loss
    ("val_roc_auc", 4, 6),
    ("val_balanced_accuracy", 5, 6),  # the last epoch ends the run
])
def test_select_keeps_the_epoch_with_the_best_chosen_number(monkeypatch, select, best, stopped):
    train, labels, val, val_labels = tiny_set()
    epoch = {"n": 0}
    states: list[dict[str, torch.Tensor]] = []
    real_map_batches = train_module.map_batches

    def recording_map_batches(fn, images, device, *args, **kwargs):  # the validation pass: snapshot the weights
        states.append({k: v.clone() for k, v in fn.state_dict().items()})
        return real_map_batches(fn, images, device, *args, **kwargs)

    def scripted_record(logits, labels):
        epoch["n"] += 1
        return {"val_accuracy": 0.5, **{k: v[epoch["n"] - 1] for k, v in SCRIPT.items()}}

    monkeypatch.setattr(train_module, "map_batches", recording_map_batches)
    monkeypatch.setattr(train_module, "validation_record", scripted_record)
    result = fit(train, labels, val, val_labels, epochs=6, batch_size=8, patience=2, select=select)
    assert (result.best_epoch, result.stopped_epoch, len(result.history)) == (best, stopped, stopped)
    assert result.select == select and result.best_select_value == SCRIPT[select][best - 1]
    assert result.best_val_loss == SCRIPT["val_loss"][best - 1]
    kept = result.model.state_dict()
    assert all(torch.equal(kept[k], states[best - 1][k]) for k in kept)  # the weights of the kept epoch
    assert not all(torch.equal(kept[k], states[stopped - 1][k]) for k in kept)


def test_stopped_epoch_is_the_last_epoch_without_early_stopping():
    train, labels, val, val_labels = tiny_set()
    result = fit(train, labels, val, val_labels, epochs=3, patience=10, select="val_roc_auc")
    assert result.stopped_epoch == 3 and len(result.history) == 3
    assert 1 <= result.best_epoch <= 3
    assert {"lr", "val_roc_auc", "val_balanced_accuracy", "val_loss", "val_accuracy"} <= set(result.history[0])


@pytest.mark.parametrize("option, value, key", [
    ("schedule", "step", "classifier.schedule"),
    ("select", "test_roc_auc", "classifier.select"),
    ("balance", "smote", "balance"),
])
def test_unknown_options_name_the_key(option, value, key):
    train, labels, val, val_labels = tiny_set()
    with pytest.raises(ValueError, match=key):
        fit(train, labels, val, val_labels, epochs=1, **{option: value})


def test_select_by_auc_needs_two_validation_classes():
    train, labels, val, _ = tiny_set()
    with pytest.raises(ValueError, match="val_roc_auc"):
        fit(train, labels, val, np.zeros(len(val), dtype=np.int64), epochs=1, select="val_roc_auc")


# ---- augment ----------------------------------------------------------------------------------

def smooth_images(n: int, size: int = 28, channels: int = 1, seed: int = 0) -> torch.Tensor:
    """uint8 (n, C, size, size) smooth random images (bilinear interpolation is near exact on them)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, channels, 7, 7, generator=g)
    return (torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False) * 255).round().to(torch.uint8)


def test_augment_changes_images_per_image_and_is_seeded():
    one = smooth_images(1)
    batch = one.repeat(8, 1, 1, 1)  # the same image 8 times
    augment = ClassicAugment(ALL_ON)
    out = augment(batch, torch.Generator().manual_seed(0))
    assert out.shape == batch.shape and out.dtype == torch.uint8  # grayscale stays 1 channel
    assert not torch.equal(out, batch)
    assert len({tuple(img.flatten().tolist()) for img in out}) == 8  # every image its own parameters
    assert torch.equal(out, augment(batch, torch.Generator().manual_seed(0)))
    assert not torch.equal(out, augment(batch, torch.Generator().manual_seed(1)))
    rgb = smooth_images(4, channels=3)
    assert augment(rgb, torch.Generator().manual_seed(0)).shape == rgb.shape


def test_augment_off_is_the_identity():
    images = smooth_images(4)
    off = ClassicAugment(ClassicAugmentConfig(hflip=False, rotation=0.0, zoom=0.0, brightness=0.0, contrast=0.0))
    assert torch.equal(off(images, torch.Generator().manual_seed(0)), images)


def params_for(n: int, **given) -> dict[str, torch.Tensor]:
    f64 = dict(dtype=torch.float64)
    base = {"flip": torch.zeros(n, dtype=torch.bool), "angle": torch.zeros(n, **f64), "crop": torch.ones(n, **f64),
            "top": torch.full((n,), 0.5, **f64), "left": torch.full((n,), 0.5, **f64),
            "brightness": torch.ones(n, **f64), "contrast": torch.ones(n, **f64)}
    return base | {k: torch.as_tensor(v, dtype=base[k].dtype) for k, v in given.items()}


def test_augment_matches_torchvision_v2_image_by_image():
    images = smooth_images(6)
    n = len(images)
    flips = [True, False, True, False, False, True]
    out = apply_params(images, params_for(n, flip=flips), ALL_ON)
    assert torch.equal(out, torch.stack([TF.horizontal_flip(im) if f else im for im, f in zip(images, flips)]))

    angles = [-20.0, -7.5, 0.0, 3.0, 12.0, 20.0]
    out = apply_params(images, params_for(n, angle=angles), ALL_ON)
    ref = torch.stack([TF.rotate(im, a, interpolation=InterpolationMode.BILINEAR, fill=0) for im, a in zip(images, angles)])
    centre = torch.arange(28) + 0.5 - 14
    disk = (centre[:, None] ** 2 + centre[None, :] ** 2).sqrt() < 12  # away from the corners the turn brings in
    assert (out.int() - ref.int()).abs()[..., disk].max() <= 1

    # zoom: windows of 21 px at whole-pixel offsets (top, left = share of the 7 px of free room)
    tops, lefts = [0, 1, 2, 3, 5, 7], [7, 0, 4, 3, 2, 6]
    out = apply_params(images, params_for(n, crop=[0.75] * n, top=[t / 7 for t in tops], left=[x / 7 for x in lefts]), ALL_ON)
    ref = torch.stack([TF.resized_crop(im, t, x, 21, 21, [28, 28], interpolation=InterpolationMode.BILINEAR, antialias=True)
                       for im, t, x in zip(images, tops, lefts)])
    # the outermost output pixels read just past the window: the image there, where resized_crop repeats the edge
    assert (out.int() - ref.int()).abs()[..., 1:-1, 1:-1].max() <= 1

    factors = [0.8, 0.9, 1.0, 1.05, 1.1, 1.2]
    out = apply_params(images, params_for(n, brightness=factors, contrast=factors[::-1]), ALL_ON)
    ref = torch.stack([TF.adjust_contrast(TF.adjust_brightness(im, b), c) for im, b, c in zip(images, factors, factors[::-1])])
    assert (out.int() - ref.int()).abs().max() <= 2  # torchvision rounds to uint8 after each step, here once at the end


def test_augment_parameters_stay_in_their_ranges():
    params = ClassicAugment(ALL_ON).sample_params(2000, torch.Generator().manual_seed(0))
    assert params["angle"].abs().max() <= 20 and params["angle"].min() < -15 and params["angle"].max() > 15
    assert ((params["crop"] > 0.8) & (params["crop"] <= 1)).all()
    assert ((params["brightness"] >= 0.8) & (params["brightness"] <= 1.2)).all()
    assert 0.4 < params["flip"].float().mean() < 0.6
    no_flip = ClassicAugment(ClassicAugmentConfig(hflip=False)).sample_params(100, torch.Generator().manual_seed(0))
    assert not no_flip["flip"].any()


def test_training_with_augment_and_oversample_is_deterministic_per_seed():
    train, labels, val, val_labels = tiny_set()
    seen: list[torch.Tensor] = []
    augment = ClassicAugment(ALL_ON)

    def watching(images, generator):
        out = augment(images, generator)
        seen.append(out)
        return out

    a = fit(train, labels, val, val_labels, epochs=2, balance="oversample", augment=watching, schedule="cosine")
    first = list(seen)
    seen.clear()
    b = fit(train, labels, val, val_labels, epochs=2, balance="oversample", augment=watching, schedule="cosine")
    assert a.history == b.history
    assert all(torch.equal(x, y) for x, y in zip(first, seen))
    seen.clear()
    fit(train, labels, val, val_labels, epochs=2, seed=1, balance="oversample", augment=watching)
    assert not all(torch.equal(x, y) for x, y in zip(first, seen))
    # epochs differ: the second epoch's images are not the first epoch's
    assert not torch.equal(torch.cat(first[:5]).float().mean(0), torch.cat(first[5:]).float().mean(0))
