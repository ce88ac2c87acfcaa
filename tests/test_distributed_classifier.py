"""Classifier training under torchrun's model, here 2 processes on the gloo backend (CPU): each rank
trains on its slice of every batch, the ranks end with identical weights and histories, rank 0
alone validates and reports, two ranks reach the weights of one process on the same batches, a
batch size that does not divide is refused naming the key, and the stages run with rank 0 alone
logging to MLflow and writing files. (Classifier training keeps no checkpoint: there is no resume.)"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import ganaug.classify.train as train_module
from ganaug.classify.models import SimpleCNN
from ganaug.classify.train import batch_loss_share, train_classifier

WORLD = 2
CPU = torch.device("cpu")
N_TRAIN, BATCH = 43, 8  # 5 full batches and a ragged one of 3 images: 2 on rank 0, 1 on rank 1


def tiny_data(multilabel: bool = False):
    """43 train images whose second pixel holds their index, 16 val images; labels (N,) or (N, 3)."""
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (N_TRAIN, 1, 16, 16), dtype=np.uint8)
    train[:, 0, 0, 1] = np.arange(N_TRAIN)
    val = rng.integers(0, 256, (16, 1, 16, 16), dtype=np.uint8)
    labels, val_labels = (np.arange(N_TRAIN) % 3 == 0).astype(np.int64), np.arange(16, dtype=np.int64) % 2
    if multilabel:
        labels = np.stack([labels, 1 - labels, np.arange(N_TRAIN) % 2], 1).astype(np.float32)
        val_labels = np.stack([val_labels, 1 - val_labels, np.arange(16) % 3 == 0], 1).astype(np.float32)
    return train, labels, val, val_labels


class IndexRecorder:
    """An `augment` stand-in that leaves the images unchanged and records which images (pixel 1) each step got."""

    def __init__(self):
        self.batches: list[list[int]] = []

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        self.batches.append(images[:, 0, 0, 1].tolist())
        return images


def no_dropout(arch, n_classes, in_chans, key="classifier.arch"):  # without random masks 2 ranks can match 1 process
    return SimpleCNN(n_classes, in_chans, dropout=0.0)


def fit(data, arch="simple_cnn", epochs=2, batch_size=BATCH, **options):
    train, labels, val, val_labels = data
    n_classes = labels.shape[1] if labels.ndim == 2 else 2
    return train_classifier(train, labels, val, val_labels, n_classes, arch, epochs, batch_size, 1e-3, 1e-4, 5, 0, CPU,
                            **options)


def as_saved(result, **extra) -> dict:
    return {"state": {k: v.detach().clone() for k, v in result.model.state_dict().items()},
            "history": result.history, "best_epoch": result.best_epoch, **extra}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def error_of(call) -> str:
    try:
        call()
    except ValueError as exc:
        return str(exc)
    return "no error"


STAGE_PARAMS = {"data": {"image_size": 28, "phantom": {"n_images": 60}},
                "reference": {"epochs": 1, "batch_size": 8},
                "classifier": {"seeds": [0, 1], "epochs": 2, "batch_size": 8, "device": "cpu"},
                "arms": {"mixed": [], "synthetic": []}}


def stage_project(root: Path) -> None:
    """A tiny prepared phantom in a project folder (the stages' relative paths resolve in it)."""
    from ganaug.config import params_from_dict
    from ganaug.data.packed import save_packed
    from ganaug.data.sources import load_phantom

    save_packed(load_phantom(params_from_dict(STAGE_PARAMS).data), root / "data" / "prepared")


def worker(rank: int, port: int, out: str, project: str, stage_ports: tuple[int, int]) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD),
                      RANK=str(rank), MLFLOW_TRACKING_URI=f"sqlite:///{project}/mlflow.db")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    network = train_module.create_classifier  # replaced below, put back for the stages
    try:
        saved = {}
        # the defaults' network (dropout, BatchNorm) with classic augmentation and oversampling; timm's BatchNorm
        from ganaug.classify.augment import ClassicAugment
        from ganaug.config import ClassicAugmentConfig

        reported: list[int] = []
        augment = ClassicAugment(ClassicAugmentConfig(hflip=True, rotation=20.0, zoom=0.2, brightness=0.2, contrast=0.2))
        saved["simple_cnn"] = as_saved(fit(tiny_data(), epochs=3, balance="oversample", augment=augment,
                                           schedule="cosine", select="val_roc_auc",
                                           on_epoch_end=lambda r: reported.append(int(r["epoch"]))), reported=reported)
        saved["resnet18"] = as_saved(fit(tiny_data(), arch="resnet18", epochs=1))
        # no dropout: the same batches as one process (in the parent), here split over 2 ranks
        train_module.create_classifier = no_dropout
        recorder = IndexRecorder()
        saved["equivalent"] = as_saved(fit(tiny_data(), balance="class_weight", augment=recorder),
                                       batches=recorder.batches)
        saved["equivalent_multilabel"] = as_saved(fit(tiny_data(multilabel=True)))
        # refused before any training
        saved["errors"] = {
            "classifier": error_of(lambda: fit(tiny_data(), batch_size=9)),
            "reference": error_of(lambda: fit(tiny_data(), batch_size=9, section="reference")),
        }
        train_module.create_classifier = lambda *args, **kwargs: nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm1d(2))
        saved["errors"]["norm"] = error_of(lambda: fit(tiny_data(), arch="bn1d_net"))
        torch.save(saved, Path(out) / f"rank{rank}.pt")
        dist.destroy_process_group()

        # the stages as torchrun runs them, one launch each: rank 0 alone logs and writes
        from ganaug.config import params_from_dict
        from ganaug.stages import train_classifier as classifier_stage, train_reference as reference_stage

        train_module.create_classifier = network
        os.chdir(project)
        os.environ["MASTER_PORT"] = str(stage_ports[0])
        reference_stage.main(params_from_dict(STAGE_PARAMS))
        os.environ["MASTER_PORT"] = str(stage_ports[1])
        classifier_stage.main(params_from_dict(STAGE_PARAMS), "classic")  # classic: augmentation on every rank
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("classifier_project")
    stage_project(root)
    return root


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory, project):
    out = tmp_path_factory.mktemp("classifier_ranks")
    mp.spawn(worker, args=(free_port(), str(out), str(project), (free_port(), free_port())), nprocs=WORLD, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


@pytest.mark.parametrize("case", ["simple_cnn", "resnet18", "equivalent", "equivalent_multilabel"])
def test_ranks_train_identical_weights_and_histories(two_ranks, case):
    rank0, rank1 = (r[case] for r in two_ranks)
    assert len(rank0["history"]) == (3 if case == "simple_cnn" else 1 if case == "resnet18" else 2)
    for key, value in rank0["state"].items():
        torch.testing.assert_close(rank1["state"][key], value, rtol=0, atol=0, msg=f"{case}: {key} differs between ranks")
    assert rank0["history"] == rank1["history"] and rank0["best_epoch"] == rank1["best_epoch"]  # rank 0's validation


def test_rank_0_alone_reports_epochs(two_ranks):
    rank0, rank1 = (r["simple_cnn"] for r in two_ranks)
    assert rank0["reported"] == [1, 2, 3] and rank1["reported"] == []


def test_each_rank_takes_its_slice_of_every_batch(two_ranks):
    rank0, rank1 = (r["equivalent"]["batches"] for r in two_ranks)
    steps = N_TRAIN // BATCH + 1  # per epoch: 5 full batches and the ragged one of 3
    assert len(rank0) == len(rank1) == 2 * steps
    assert [len(b) for b in rank0[:steps]] == [4] * 5 + [2] and [len(b) for b in rank1[:steps]] == [4] * 5 + [1]
    for epoch in range(2):
        seen = [i for b0, b1 in zip(rank0[epoch * steps:][:steps], rank1[epoch * steps:][:steps]) for i in b0 + b1]
        assert sorted(seen) == list(range(N_TRAIN)), "an epoch: every image once, on one rank"


@pytest.mark.parametrize("case", ["equivalent", "equivalent_multilabel"])
def test_two_ranks_match_one_process_on_the_same_batches(two_ranks, case, monkeypatch):
    """Summed loss shares, summed gradients and the global batch's BatchNorm statistics: the update of
    one process on the whole batch, up to float rounding (ragged last batch and class weights included)."""
    monkeypatch.setattr(train_module, "create_classifier", no_dropout)
    multilabel = case.endswith("multilabel")
    single = fit(tiny_data(multilabel), **({} if multilabel else {"balance": "class_weight", "augment": IndexRecorder()}))
    ranked = two_ranks[0][case]
    for key, value in single.model.state_dict().items():
        torch.testing.assert_close(ranked["state"][key], value, rtol=1e-4, atol=1e-4, msg=f"{key}")  # Adam magnifies rounding where a gradient is ~0
    for one, two in zip(single.history, ranked["history"], strict=True):
        assert two["train_loss"] == pytest.approx(one["train_loss"], rel=1e-4)
        assert two["val_loss"] == pytest.approx(one["val_loss"], rel=1e-4)


def test_refused_with_the_key_named(two_ranks):
    errors = two_ranks[0]["errors"]
    assert errors == two_ranks[1]["errors"]
    assert errors["classifier"].startswith("classifier.batch_size: a batch of 9 images cannot be split evenly over 2")
    assert errors["reference"].startswith("reference.batch_size: a batch of 9 images cannot be split evenly over 2")
    assert errors["norm"].startswith("classifier.arch='bn1d_net' has normalisation layers")
    assert "(1: not torch.nn.BatchNorm2d)" in errors["norm"]  # names the layer


@pytest.mark.parametrize("multilabel, weighted", [(False, False), (False, True), (True, False)])  # no weighted BCE
def test_loss_shares_add_up_to_the_batch_loss(multilabel, weighted):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(7, 3, generator=g)
    targets = (torch.rand(7, 3, generator=g) > 0.5).float() if multilabel else torch.randint(0, 3, (7,), generator=g)
    weight = torch.tensor([0.5, 1.0, 3.0]) if weighted else None
    whole = (torch.nn.functional.binary_cross_entropy_with_logits(logits, targets) if multilabel
             else torch.nn.functional.cross_entropy(logits, targets, weight=weight))
    shares = [batch_loss_share(logits[part], targets[part], targets, weight, multilabel)
              for part in (slice(0, 4), slice(4, 7))]  # uneven, as a ragged batch splits
    torch.testing.assert_close(shares[0] + shares[1], whole)


def test_stages_under_torchrun_log_and_write_once(two_ranks, project):
    """train_reference and train_classifier --arm classic under 2 ranks: one MLflow run per run the
    stage makes (rank 0's), its param distributed.processes = 2, and the files of one process."""
    import mlflow

    from ganaug.classify.train import load_classifier

    _, blob = load_classifier(project / "models" / "reference" / "model.pt")  # loads into the plain network
    assert blob["info"]["best_epoch"] == 1
    record = json.loads((project / "models" / "arms" / "classic" / "metrics.json").read_text())
    assert set(record["seeds"]) == {"0", "1"} and all(s["stopped_epoch"] == 2 for s in record["seeds"].values())
    assert sorted(p.name for p in (project / "models" / "arms" / "classic").iterdir()) == [
        "metrics.json", "seed0.pt", "seed1.pt", "test_predictions.npz"]
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    try:
        runs = mlflow.search_runs(experiment_names=["ganaug"])
    finally:
        mlflow.set_tracking_uri(None)
    assert sorted(runs["tags.ganaug.stage"]) == ["train_classifier_classic"] * 3 + ["train_reference"]  # parent + 2 seeds
    assert set(runs["params.distributed.processes"]) == {"2"}
    seeds = runs[runs["tags.ganaug.run_level"] == "seed"]
    assert all(len(mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}").get_metric_history(r, "val_loss")) == 2
               for r in seeds["run_id"])  # each epoch logged once
