"""Training past one device: `torchrun --nproc_per_node N`, one process (rank) per device, for the
GAN (`gan.train.training_loop`) and the classifiers (`classify.train.train_classifier`).

Every rank runs the same training function with the same seeds, hence the same data order; each
takes its contiguous slice of every batch (`shard`), so the configured batch size stays the global
batch and the data of an epoch is split, not repeated. After each backward pass the gradients are
averaged across ranks with one all-reduce of a flat buffer (`average_gradients`), so every
rank applies the same update and the weights stay identical. This is what StyleGAN2-ADA and
EDM do instead of wrapping the networks in DistributedDataParallel: the D step's forward pass of
G is reused by the G step, and the WGAN-GP and R1 penalties differentiate twice, neither of
which DDP's gradient reducer supports; the classifiers share the same few functions.

- BatchNorm becomes `CrossRankBatchNorm2d` (`sync_batchnorm`): statistics of the global batch,
  on CPU (gloo) and CUDA (nccl) alike, so running statistics stay identical across ranks
  (torch's SyncBatchNorm refuses CPU tensors). Spectral norm's power iteration depends on the
  weights only, and the EMA of G follows identical weights: both stay identical unsynchronised.
- Loss records and ADA's r_t are averaged across ranks (`average_scalars`): ADA's p moves on
  the global statistic, and every rank takes the same divergence / collapse decisions.
- Rank 0 alone evaluates (the metrics are broadcast, `broadcast_metrics`), logs to MLflow and
  writes checkpoints; each rank's noise and augmentation RNG states go into the GAN's checkpoint
  (`gather_rng_states`), so a resumed run continues the same trajectory with the same N.
  A classifier's validation record is rank 0's too: every rank keeps the same epoch and stops early
  at the same epoch.

Without torchrun (no process group), every function here is the identity.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

RANK_SEED_STRIDE = 1_000_003  # rank r's noise / augmentation seeds: the single-process seed + r * stride


@dataclass(frozen=True)
class Ranks:
    rank: int  # this process, 0..world_size-1
    world_size: int  # processes training together (1 = no torchrun)
    local_rank: int  # this process's device index on its machine

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that evaluates, logs and writes files."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def current() -> Ranks:
    """The ranks of the initialised process group, or a single process when there is none."""
    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank())))
    return Ranks(0, 1, 0)


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device: torch.device) -> tuple[Ranks, torch.device]:
    """Under torchrun (WORLD_SIZE > 1): join the process group (nccl on CUDA, gloo on CPU) and
    return this rank's device (cuda:LOCAL_RANK). Otherwise: a single process on `device`."""
    if not launched_by_torchrun():
        return Ranks(0, 1, 0), device
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=60))  # rank 0 evaluates while others wait
    ranks = current()
    if device.type == "cuda":
        if ranks.local_rank >= torch.cuda.device_count():
            raise RuntimeError(f"torchrun LOCAL_RANK={ranks.local_rank} but only {torch.cuda.device_count()} CUDA devices: "
                               "use --nproc_per_node <= the number of GPUs")
        device = torch.device("cuda", ranks.local_rank)
        torch.cuda.set_device(device)
    return ranks, device


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def local_batch_size(global_batch: int, ranks: Ranks, key: str = "gan.batch_size") -> int:
    """Images per rank in a batch of `global_batch` images: it must divide evenly."""
    if global_batch % ranks.world_size:
        raise ValueError(f"{key}: a batch of {global_batch} images cannot be split evenly over {ranks.world_size} "
                         f"processes (torchrun --nproc_per_node): use a multiple of {ranks.world_size}")
    return global_batch // ranks.world_size


def shard(indices: torch.Tensor, ranks: Ranks) -> torch.Tensor:
    """This rank's contiguous slice of one global batch's indices (all of them on one process). A
    batch that does not divide (a classifier's last, ragged one) gives the first len % N ranks one
    index more; the GAN's batches always divide (`local_batch_size`)."""
    if not ranks.active:
        return indices
    return torch.tensor_split(indices, ranks.world_size)[ranks.rank]


def rank_seed(seed: int, ranks: Ranks) -> int:
    """Seed of a per-rank RNG (noise, augmentation): `seed` itself on rank 0 and without torchrun."""
    return seed + ranks.rank * RANK_SEED_STRIDE


def broadcast_state(module: nn.Module, ranks: Ranks) -> None:
    """Rank 0's parameters and buffers to every rank (identical starts whatever the initialisation)."""
    if not ranks.active:
        return
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0)


def average_gradients(module: nn.Module, ranks: Ranks) -> None:
    """Replace each parameter's gradient by its mean over ranks: one all-reduce of a flat buffer."""
    if not ranks.active:
        return
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])  # (sum of numels,)
    dist.all_reduce(flat)
    flat.div_(ranks.world_size)
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def average_scalars(scalars: dict[str, torch.Tensor], ranks: Ranks) -> dict[str, torch.Tensor]:
    """0-d tensors averaged over ranks (one all-reduce, no host sync on CUDA)."""
    if not ranks.active:
        return scalars
    stacked = torch.stack([v.detach().float() for v in scalars.values()])  # (len(scalars),)
    dist.all_reduce(stacked)
    return dict(zip(scalars, stacked.div_(ranks.world_size).unbind(), strict=True))


def broadcast_metrics(metrics: dict[str, float] | None, ranks: Ranks) -> dict[str, float] | None:
    """Rank 0's evaluation to every rank, so each takes the same diversity decision."""
    if not ranks.active:
        return metrics
    box = [metrics]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_rng_states(states: dict[str, torch.Tensor], ranks: Ranks) -> list[dict[str, torch.Tensor]]:
    """Every rank's RNG states (uint8 tensors), in rank order, on every rank ([states] alone without torchrun)."""
    if not ranks.active:
        return [states]
    gathered: list[Any] = [None] * ranks.world_size
    dist.all_gather_object(gathered, {k: v.cpu() for k, v in states.items()})
    return gathered


def check_world_size(saved: int, ranks: Ranks, checkpoint: Any) -> None:
    if saved != ranks.world_size:
        raise ValueError(f"checkpoint {checkpoint} was written by {saved} training process(es), this run has "
                         f"{ranks.world_size}: resume with torchrun --nproc_per_node {saved} (1 = without torchrun), "
                         "or remove it to start over")


def barrier(ranks: Ranks) -> None:
    if ranks.active:
        dist.barrier()


class _SumOverRanks(torch.autograd.Function):
    """all-reduce (sum) with a gradient: the gradient of a sum over ranks is the sum of the ranks'
    gradients, itself through this function, so the penalties' double backward works too."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return _SumOverRanks.apply(grad.contiguous())


class CrossRankBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the batch across all ranks (one
    differentiable all-reduce of per-channel sums); the plain BatchNorm2d without a process group
    and in eval mode. Same parameters and buffers as BatchNorm2d, so checkpoints interchange."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C, H, W), B this rank's share
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        assert self.track_running_stats and self.momentum is not None, "CrossRankBatchNorm2d keeps running stats"
        count = torch.full((1,), float(x.shape[0] * x.shape[2] * x.shape[3]), device=x.device, dtype=torch.float32)
        xf = x.float()
        local = torch.cat([xf.sum((0, 2, 3)), (xf * xf).sum((0, 2, 3)), count])  # (2C + 1,)
        total = _SumOverRanks.apply(local)  # sums over ranks, differentiable
        channels = x.shape[1]
        n = total[-1]
        mean = total[:channels] / n
        var = (total[channels : 2 * channels] / n - mean * mean).clamp_min(0.0)  # biased, as BatchNorm normalises
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            self.running_mean.lerp_(mean.detach(), self.momentum)
            self.running_var.lerp_(var.detach() * n / (n - 1).clamp_min(1.0), self.momentum)
        shape = (1, channels, 1, 1)
        out = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out.to(x.dtype)


def unsynchronised_batchnorms(module: nn.Module) -> list[str]:
    """Names of the BatchNorm layers that `sync_batchnorm` leaves per-rank (other classes than
    BatchNorm2d, e.g. a library's BatchNorm-with-activation subclass): their statistics would differ."""
    return [name for name, child in module.named_modules()
            if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(child, CrossRankBatchNorm2d)]


def sync_batchnorm(module: nn.Module) -> nn.Module:
    """Every BatchNorm2d in `module` becomes a CrossRankBatchNorm2d with the same state (in place)."""
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            replacement = CrossRankBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                               child.track_running_stats, device=child.running_mean.device)
            replacement.load_state_dict(child.state_dict())
            replacement.train(child.training)
            setattr(module, name, replacement)
        else:
            sync_batchnorm(child)
    return module
