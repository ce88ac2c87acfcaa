"""The GAN training loop: one function for every architecture and mode, exact resume.

The loop keeps the two steps visible (`# (1) Update D`, `# (2) Update G`), checkpoints
everything needed to continue the same trajectory after each epoch (G, D, both optimizers,
epoch, step, data-order and noise RNG states, loss history), and stops loudly on a
non-finite loss, naming the step and the last good checkpoint.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ganaug.config import GANConfig, to_dict
from ganaug.device import autocast, to_device_images
from ganaug.gan import GANS
from ganaug.io import atomic_file


class GANDivergenceError(RuntimeError):
    """A GAN loss became NaN or infinite."""


def to_model_range(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1] (the model boundary of the data contract)."""
    return images_uint8.float().div_(127.5).sub_(1.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8 [0, 255]."""
    return ((images.float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)


@dataclass
class EpochReport:
    epoch: int  # 1-based, completed
    step: int  # optimizer steps so far
    losses: list[dict[str, float]]  # this epoch's per-step records
    train_seconds: float  # wall time of this epoch's optimisation steps (no evaluation)
    images_seen: int  # real images through D this epoch
    quality: dict[str, float] | None  # evaluation metrics, when this epoch was evaluated
    generator: nn.Module


@dataclass
class GANTrainResult:
    generator: nn.Module
    discriminator: nn.Module
    losses: list[dict[str, float]]  # every step: step, epoch, loss_d, loss_g, d_real, d_fake
    quality: list[dict[str, float]]  # every evaluation: epoch + metrics
    resumed_from_epoch: int
    extra: dict[str, Any] = field(default_factory=dict)


def build_networks(cfg: GANConfig, resolution: int, n_classes: int, channels: int = 1) -> tuple[nn.Module, nn.Module]:
    spec = GANS[cfg.arch]
    generator = spec.generator(resolution, cfg.latent_dim, cfg.base_channels, n_classes, channels)
    discriminator = spec.discriminator(resolution, cfg.base_channels, n_classes, channels)
    return generator, discriminator


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)


def training_loop(
    images: np.ndarray,  # (N, C, H, W) uint8: real *training* images only
    labels: np.ndarray | None,  # (N,) int class indices for a conditional GAN, else None
    n_classes: int,  # conditioning classes; 0 = unconditional
    cfg: GANConfig,  # architecture, optimiser and schedule (params.yaml `gan`)
    checkpoint_path: Path,  # resumable state, rewritten atomically after every epoch
    device: torch.device,  # cpu or cuda (bf16 autocast on cuda)
    evaluate: Callable[[int, nn.Module], dict[str, float]] | None = None,  # (epoch, G) -> metrics
    on_epoch_end: Callable[[EpochReport], None] | None = None,  # logging hook
    extra_state: dict[str, Any] | None = None,  # saved with the checkpoint (e.g. MLflow run id)
    stop_after_epoch: int | None = None,  # return early after this epoch (simulates a killed run)
) -> GANTrainResult:
    """Train G and D on `images`; resume from `checkpoint_path` when it exists."""
    assert images.ndim == 4 and images.dtype == np.uint8, f"images must be (N, C, H, W) uint8, got {images.shape} {images.dtype}"
    assert (labels is None) == (n_classes == 0), "labels go with n_classes > 0 (conditional) and only then"
    n, channels, resolution = len(images), images.shape[1], images.shape[-1]
    if n < 2:
        raise ValueError(f"GAN training needs at least 2 images, got {n}")
    batch_size = min(cfg.batch_size, n)
    steps_per_epoch = n // batch_size  # drop the ragged last batch: BatchNorm dislikes tiny batches

    torch.manual_seed(cfg.seed)  # network initialisation (and anything else on the global RNG)
    generator, discriminator = build_networks(cfg, resolution, n_classes, channels)
    generator.to(device, memory_format=torch.channels_last)
    discriminator.to(device, memory_format=torch.channels_last)
    loss_fn = GANS[cfg.arch].loss()
    opt_g = torch.optim.Adam(generator.parameters(), lr=cfg.lr_g, betas=(cfg.beta1, cfg.beta2))
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=cfg.lr_d, betas=(cfg.beta1, cfg.beta2))
    order_rng = torch.Generator().manual_seed(cfg.seed)  # data order
    noise_rng = torch.Generator().manual_seed(cfg.seed + 1)  # latent vectors (on CPU: device-independent)
    losses: list[dict[str, float]] = []
    quality: list[dict[str, float]] = []
    start_epoch, step = 0, 0
    extra = dict(extra_state or {})

    state = load_checkpoint(checkpoint_path)
    if state is not None:
        if state["config"] != to_dict(cfg):
            raise ValueError(f"checkpoint {checkpoint_path} was written with another gan config; remove it to start over")
        generator.load_state_dict(state["generator"])
        discriminator.load_state_dict(state["discriminator"])
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        order_rng.set_state(state["order_rng"])
        noise_rng.set_state(state["noise_rng"])
        torch.set_rng_state(state["torch_rng"])
        losses, quality = state["losses"], state["quality"]
        start_epoch, step = state["epoch"], state["step"]
        extra = {**state.get("extra", {}), **extra}
    resumed_from = start_epoch

    x_all = torch.from_numpy(images)  # stays uint8 on CPU; batches move to the device
    y_all = torch.from_numpy(labels).long() if labels is not None else None

    def save_checkpoint(epoch: int) -> None:
        with atomic_file(checkpoint_path) as tmp:
            torch.save(
                {
                    "config": to_dict(cfg), "epoch": epoch, "step": step,
                    "generator": generator.state_dict(), "discriminator": discriminator.state_dict(),
                    "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(),
                    "order_rng": order_rng.get_state(), "noise_rng": noise_rng.get_state(),
                    "torch_rng": torch.get_rng_state(), "losses": losses, "quality": quality,
                    "n_classes": n_classes, "resolution": resolution, "channels": channels, "extra": extra,
                },
                tmp,
            )

    for epoch in range(start_epoch + 1, cfg.epochs + 1):
        generator.train()
        discriminator.train()
        epoch_losses: list[dict[str, float]] = []
        order = torch.randperm(n, generator=order_rng)
        epoch_start = time.perf_counter()
        for i in tqdm(range(steps_per_epoch), desc=f"GAN epoch {epoch}/{cfg.epochs}", leave=False, mininterval=2):
            idx = order[i * batch_size : (i + 1) * batch_size]
            real = to_device_images(to_model_range(x_all[idx]), device)  # (B, C, R, R) in [-1, 1]
            y = y_all[idx].to(device) if y_all is not None else None  # fakes take the batch's labels
            z = torch.randn(len(idx), cfg.latent_dim, generator=noise_rng).to(device)

            # (1) Update D: maximise log D(x) + log(1 - D(G(z)))
            with autocast(device):
                fake = generator(z, y)
                real_logits = discriminator(real, y)
                fake_logits = discriminator(fake.detach(), y)
                loss_d = loss_fn.discriminator(real_logits.float(), fake_logits.float())
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()

            # (2) Update G: maximise log D(G(z))
            with autocast(device):
                fake_logits_g = discriminator(fake, y)
                loss_g = loss_fn.generator(fake_logits_g.float())
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            step += 1

            record = {
                "step": step, "epoch": epoch,
                "loss_d": loss_d.item(), "loss_g": loss_g.item(),
                "d_real": torch.sigmoid(real_logits.float()).mean().item(),  # D(x)
                "d_fake": torch.sigmoid(fake_logits.float()).mean().item(),  # D(G(z)) before G's step
            }
            for name in ("loss_d", "loss_g"):
                if not math.isfinite(record[name]):
                    last = f"{checkpoint_path} (epoch {epoch - 1})" if epoch > 1 or resumed_from else "none (failed in the first epoch)"
                    raise GANDivergenceError(
                        f"GAN diverged: {name} = {record[name]} at epoch {epoch}, step {step}; "
                        f"last good checkpoint: {last}. Try a lower gan.lr_d / gan.lr_g."
                    )
            epoch_losses.append(record)
        losses.extend(epoch_losses)
        train_seconds = time.perf_counter() - epoch_start

        metrics = None
        if evaluate is not None and (epoch % cfg.eval_every == 0 or epoch == cfg.epochs):
            generator.eval()
            with torch.no_grad():
                metrics = evaluate(epoch, generator)
            quality.append({"epoch": epoch, **metrics})
        save_checkpoint(epoch)
        if on_epoch_end is not None:
            on_epoch_end(EpochReport(epoch, step, epoch_losses, train_seconds, steps_per_epoch * batch_size, metrics, generator))
        if stop_after_epoch is not None and epoch >= stop_after_epoch:
            break

    generator.eval()
    return GANTrainResult(generator, discriminator, losses, quality, resumed_from, extra)
