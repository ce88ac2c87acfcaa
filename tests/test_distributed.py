"""GAN training under torchrun's model, here 2 processes on the gloo backend (CPU): training
runs, the ranks' weights stay identical, a stopped run resumes on the same trajectory, and
the cross-rank BatchNorm equals BatchNorm on the global batch."""

from __future__ import annotations

import dataclasses
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from ganaug.config import GANConfig
from ganaug import distributed
from ganaug.gan.train import training_loop

WORLD = 2
CPU = torch.device("cpu")


def tiny_cfg(**overrides) -> GANConfig:
    base = dict(latent_dim=8, base_channels=4, epochs=2, batch_size=8, eval_every=1, n_eval=8, seed=0, device="cpu",
                loss="nonsaturating", spectral_norm=False, augment="diffaugment", ema_kimg=0.01, min_diversity=0.0)
    return dataclasses.replace(GANConfig(), **{**base, **overrides})


CASES = {
    # BatchNorm in G and D (cross-rank), DiffAugment, EMA
    "batchnorm": tiny_cfg(),
    # conditional G (class-conditional BatchNorm), spectral-norm D, hinge + R1 (double backward), ADA's p from all ranks
    "ada_r1_conditional": tiny_cfg(arch="cgan", mode="conditional", loss="hinge", spectral_norm=True, r1_gamma=1.0,
                                   augment="ada", ada_kimg=0.05, ada_target=0.0),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def weights(result) -> dict[str, torch.Tensor]:
    out = {f"g.{k}": v for k, v in result.trained_generator.state_dict().items()}
    out |= {f"d.{k}": v for k, v in result.discriminator.state_dict().items()}
    out |= {f"ema.{k}": v for k, v in result.generator.state_dict().items()}
    return {k: v.detach().clone() for k, v in out.items()}


def metrics_of_epoch(epoch, generator):  # a stand-in evaluation: rank 0 computes it, every rank receives it
    return {"mean_weight": float(next(generator.parameters()).sum())}


def worker(rank: int, port: int, out: str, case: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        cfg = CASES[case]
        rng = np.random.default_rng(0)
        images = rng.integers(0, 256, (32, 1, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 2, 32) if cfg.mode == "conditional" else None
        n_classes = 2 if labels is not None else 0
        folder = Path(out)
        full = training_loop(images, labels, n_classes, cfg, folder / "full.pt", CPU, evaluate=metrics_of_epoch)
        training_loop(images, labels, n_classes, cfg, folder / "resumed.pt", CPU, evaluate=metrics_of_epoch,
                      stop_after_epoch=1)
        resumed = training_loop(images, labels, n_classes, cfg, folder / "resumed.pt", CPU, evaluate=metrics_of_epoch)
        torch.save({"full": weights(full), "resumed": weights(resumed), "losses": full.losses,
                    "resumed_losses": resumed.losses, "quality": full.quality, "augment_p": full.augment_p,
                    "resumed_from": resumed.resumed_from_epoch}, folder / f"rank{rank}.pt")

        # cross-rank BatchNorm on this rank's half of a batch vs BatchNorm on the whole batch (in the parent)
        x = torch.randn(8, 3, 4, 4, generator=torch.Generator().manual_seed(1))
        w = torch.randn(8, 3, 4, 4, generator=torch.Generator().manual_seed(2))
        half = slice(rank * 4, rank * 4 + 4)
        local = x[half].clone().requires_grad_(True)
        bn = distributed.sync_batchnorm(nn.Sequential(nn.BatchNorm2d(3)))[0]
        with torch.no_grad():
            bn.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
        y = bn(local)
        (y * w[half]).sum().backward()
        torch.save({"y": y.detach(), "x_grad": local.grad, "weight_grad": bn.weight.grad, "running_mean": bn.running_mean,
                    "running_var": bn.running_var}, folder / f"bn{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module", params=sorted(CASES))
def two_ranks(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(request.param)
    mp.spawn(worker, args=(free_port(), str(out), request.param), nprocs=WORLD, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD)], \
        [torch.load(out / f"bn{r}.pt", weights_only=True) for r in range(WORLD)], out


def test_ranks_train_identical_weights(two_ranks):
    (rank0, rank1), _, _ = two_ranks
    assert len(rank0["losses"]) == 2 * 32 // 8  # 2 epochs of 4 global batches of 8 (4 images per rank)
    for key, value in rank0["full"].items():
        torch.testing.assert_close(rank1["full"][key], value, rtol=0, atol=0, msg=f"{key} differs between ranks")
    assert rank0["losses"] == rank1["losses"]  # records are averaged over ranks
    assert rank0["quality"] == rank1["quality"] and len(rank0["quality"]) == 2  # rank 0's evaluation, broadcast
    assert rank0["augment_p"] == rank1["augment_p"]


def test_ranks_saw_different_data(two_ranks):
    """Not a copy of one process twice: each rank's share differs, so a single rank's loss is not the average."""
    (rank0, _), _, out = two_ranks
    state = torch.load(out / "full.pt", weights_only=True)
    assert state["world_size"] == WORLD and len(state["rank_rngs"]) == WORLD
    assert not torch.equal(state["rank_rngs"][0]["noise_rng"], state["rank_rngs"][1]["noise_rng"])
    assert rank0["losses"][0]["loss_d"] != rank0["losses"][1]["loss_d"]


def test_resume_continues_the_same_trajectory(two_ranks):
    ranks, _, _ = two_ranks
    for rank in ranks:
        assert rank["resumed_from"] == 1
        assert rank["resumed_losses"] == rank["losses"]
        for key, value in rank["full"].items():
            torch.testing.assert_close(rank["resumed"][key], value, rtol=0, atol=0, msg=f"{key} differs after resume")


def test_resume_with_another_process_count_is_refused(two_ranks, tmp_path):
    _, _, out = two_ranks
    cfg = CASES[out.name.rstrip("0123456789")]
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (32, 1, 28, 28), dtype=np.uint8)
    labels, n_classes = (rng.integers(0, 2, 32), 2) if cfg.mode == "conditional" else (None, 0)
    with pytest.raises(ValueError, match="written by 2 training process"):
        training_loop(images, labels, n_classes, cfg, out / "full.pt", CPU)


def test_cross_rank_batchnorm_equals_global_batchnorm(two_ranks):
    _, (bn0, bn1), _ = two_ranks
    x = torch.randn(8, 3, 4, 4, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    w = torch.randn(8, 3, 4, 4, generator=torch.Generator().manual_seed(2))
    bn = nn.BatchNorm2d(3)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
    y = bn(x)
    (y * w).sum().backward()
    torch.testing.assert_close(torch.cat([bn0["y"], bn1["y"]]), y.detach())
    torch.testing.assert_close(torch.cat([bn0["x_grad"], bn1["x_grad"]]), x.grad)
    torch.testing.assert_close(bn0["weight_grad"] + bn1["weight_grad"], bn.weight.grad)  # each rank: its half's share
    for stats in (bn0, bn1):
        torch.testing.assert_close(stats["running_mean"], bn.running_mean)
        torch.testing.assert_close(stats["running_var"], bn.running_var)


def test_batch_must_split_evenly():
    with pytest.raises(ValueError, match="gan.batch_size: a batch of 9 images cannot be split evenly over 2"):
        distributed.local_batch_size(9, distributed.Ranks(0, 2, 0))


def test_single_process_is_untouched():
    ranks = distributed.current()
    assert not ranks.active and ranks.is_main
    idx = torch.arange(8)
    assert torch.equal(distributed.shard(idx, ranks), idx)
    assert distributed.rank_seed(5, ranks) == 5
