"""The GAN training loop: one function for every architecture, loss and mode, exact resume.

The loop keeps the two steps visible (`# (1) Update D`, `# (2) Update G`); architectures
differ only in their networks and loss (`ganaug.gan.GANS`). It checkpoints everything needed
to continue the same trajectory after each epoch (G, D, the EMA of G, both optimizers, epoch,
step, data-order, noise and augmentation RNG states, the ADA probability, loss history,
optimisation time), and stops loudly (`GANDivergenceError`), naming the step and the last
good checkpoint, when
- a loss is NaN or infinite, or
- the discriminator has collapsed: its adversarial loss stayed below the loss's
  `collapse_below` level (1e-3: D(x) ~ 0.9995 and D(G(z)) ~ 0.0005 on average for the BCE
  loss; nearly every image beyond the margin for the hinge loss) in every step of
  `gan.collapse_epochs` epochs in a row. The checkpoint of the epoch before the collapse
  began is kept as `<checkpoint>.last_good.pt`. WGAN-GP's critic has no such level (it is
  unbounded and shift-invariant): only NaN/inf apply there.
  Shorter phases of a dominant D are normal (README, "GAN architectures"), hence the low
  level and a streak of several epochs;
- the generator has collapsed (`GANModeCollapseError`): its samples' diversity (the
  evaluation's `diversity`, `ganaug.quality.diversity`) stayed below
  `gan.min_diversity` in `gan.diversity_evals` evaluations in a row. Each evaluation below the
  level warns; the checkpoint of the last evaluation at or above it is kept as
  `<checkpoint>.last_diverse.pt`.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ganaug import distributed
from ganaug.config import GANConfig, to_dict
from ganaug.device import adam_options, autocast, compiled, configure_backends, on_device_uint8, to_device_images
from ganaug.gan import GANS, cyclegan
from ganaug.gan.diffaugment import ADA_INTERVAL, AdaptiveAugmentProbability, DiffAugment
from ganaug.gan.ema import GeneratorEMA
from ganaug.gan.records import StepRecords
from ganaug.io import atomic_file, kill_point
from ganaug.torchfile import load_torch_file, require_fields, save_torch_file
from ganaug.progress import progress
from ganaug.quality.diversity import DIVERSITY_KEY, low_streak


class GANDivergenceError(RuntimeError):
    """A GAN loss became NaN or infinite, or the discriminator collapsed."""


class GANModeCollapseError(GANDivergenceError):
    """The generator's samples stayed far less varied than the real images (mode collapse)."""


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
    generator: nn.Module  # what is sampled: the EMA of G when gan.ema_kimg > 0, else G


@dataclass
class GANTrainResult:
    generator: nn.Module  # what to sample from: the EMA of G when gan.ema_kimg > 0, else G (eval mode)
    discriminator: nn.Module
    losses: list[dict[str, float]]  # every step: step, epoch, loss_d, loss_g, d_real, d_fake [, loss terms, ada_p, rt]
    quality: list[dict[str, float]]  # every evaluation: epoch + metrics
    resumed_from_epoch: int
    extra: dict[str, Any] = field(default_factory=dict)
    trained_generator: nn.Module | None = None  # G as optimised (the same object as `generator` without EMA)
    augment_p: float | None = None  # augmentation probability at the end: 1 (diffaugment), ADA's p, None (off)
    train_seconds: float = 0.0  # wall time of all optimisation steps, over every resumed attempt (no evaluation)
    images_seen: int = 0  # real images through D in those steps


def discriminator_norm(cfg: GANConfig) -> str:
    """D's normalisation: BatchNorm as in DCGAN, except none under spectral normalisation (SN
    already controls each layer) and layer norm for WGAN-GP, whose per-sample gradient
    penalty is not valid with batch statistics."""
    if cfg.spectral_norm:
        return "none"
    return "layer" if cfg.loss == "wgan_gp" else "batch"


def build_generator(cfg: GANConfig, resolution: int, n_classes: int, channels: int = 1) -> nn.Module:
    if cfg.arch == "cyclegan":  # the translator G_AB: images in, images out (gan.cyclegan sizes it)
        return cyclegan.build_translator(cfg, resolution, channels)
    spec = GANS[cfg.arch]
    return spec.generator(resolution, cfg.latent_dim, cfg.base_channels, n_classes, channels, **spec.generator_options(cfg))


def build_discriminator(cfg: GANConfig, resolution: int, n_classes: int, channels: int = 1) -> nn.Module:
    return GANS[cfg.arch].discriminator(resolution, cfg.base_channels, n_classes, channels,
                                        discriminator_norm(cfg), cfg.spectral_norm)


def build_networks(cfg: GANConfig, resolution: int, n_classes: int, channels: int = 1) -> tuple[nn.Module, nn.Module]:
    """(G, D) of `gan.arch`, G built first (the order fixes the initial weights for a seed)."""
    generator = build_generator(cfg, resolution, n_classes, channels)
    return generator, build_discriminator(cfg, resolution, n_classes, channels)


def build_optimizer(parameters: Any, lr: float, cfg: GANConfig, device: torch.device = torch.device("cpu")) -> torch.optim.Optimizer:
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(parameters, lr=lr)
    return torch.optim.Adam(parameters, lr=lr, betas=(cfg.beta1, cfg.beta2), **adam_options(device, cfg.fast_kernels))


def last_good_path(checkpoint_path: Path) -> Path:
    """Where the checkpoint from before a discriminator collapse is kept."""
    return checkpoint_path.with_name(f"{checkpoint_path.stem}.last_good{checkpoint_path.suffix}")


def last_diverse_path(checkpoint_path: Path) -> Path:
    """Where the checkpoint of the last evaluation with diversity >= gan.min_diversity is kept."""
    return checkpoint_path.with_name(f"{checkpoint_path.stem}.last_diverse{checkpoint_path.suffix}")


def check_diversity(quality: list[dict[str, float]], cfg: GANConfig, kept: Path) -> None:
    """Warn when the newest evaluation's diversity is below gan.min_diversity; raise
    GANModeCollapseError when gan.diversity_evals evaluations in a row were (0 = off)."""
    if cfg.min_diversity <= 0 or not quality or DIVERSITY_KEY not in quality[-1]:
        return
    streak = low_streak(quality, DIVERSITY_KEY, cfg.min_diversity)
    if streak == 0:
        return
    latest = quality[-1]
    low = ", ".join(f"{q[DIVERSITY_KEY]:.3f} (epoch {q['epoch']})" for q in quality[-streak:])
    if streak < cfg.diversity_evals:
        warnings.warn(
            f"GAN samples look collapsed at epoch {latest['epoch']}: {DIVERSITY_KEY} {latest[DIVERSITY_KEY]:.3f} < "
            f"gan.min_diversity={cfg.min_diversity} (1 = as varied as the real images); training stops after "
            f"gan.diversity_evals={cfg.diversity_evals} such evaluations in a row",
            RuntimeWarning, stacklevel=2,
        )
        return
    good = [q["epoch"] for q in quality if q.get(DIVERSITY_KEY, -1.0) >= cfg.min_diversity]
    last_good = f"{kept} (epoch {good[-1]})" if good and kept.is_file() else "none (no evaluation reached the level)"
    raise GANModeCollapseError(
        f"GAN mode collapse: {DIVERSITY_KEY} (spread of the samples / spread of the real images, the lower of pixels "
        f"and reference features) was {low}, below "
        f"gan.min_diversity={cfg.min_diversity} in {streak} evaluations in a row (gan.diversity_evals={cfg.diversity_evals}): "
        f"G draws nearly the same images whatever the noise; stopped at epoch {latest['epoch']}. Last good checkpoint: "
        f"{last_good}. Try {collapse_remedies(cfg)}; gan.min_diversity=0 turns this check off."
    )


def divergence_remedies(cfg: GANConfig) -> str:
    """What to try after the discriminator collapsed, leaving out what these params already do."""
    tries = ["gan.augment=diffaugment or ada"] if cfg.augment == "none" else []
    tries.append("a lower gan.lr_d")
    tries += [] if cfg.spectral_norm else ["gan.spectral_norm=true"]
    tries += [] if cfg.r1_gamma > 0 else ["gan.r1_gamma > 0"]
    return ", ".join(tries[:-1]) + f" or {tries[-1]}" if len(tries) > 1 else tries[0]


def collapse_remedies(cfg: GANConfig) -> str:
    """What to try after a mode collapse, leaving out what these params already do (a hint to
    turn on DiffAugment is no help to a run that collapsed with it)."""
    tries = []
    if cfg.augment == "none":
        tries.append("gan.augment=diffaugment")
    if cfg.loss != "hinge" or not cfg.spectral_norm:
        tries.append("gan.loss=hinge with gan.spectral_norm=true")
    if cfg.ema_kimg <= 0:
        tries.append("gan.ema_kimg > 0")
    if cfg.arch == "acgan":
        tries.append("gan.arch=cgan (a projection discriminator; the AC-GAN's class loss can reward one image per class)")
    return ", ".join(tries + ["more gan.epochs", "another gan.seed"])


CHECKPOINT_EXPECTED = ("a GAN checkpoint written by the train_gan stage; remove it (and its folder under .ganaug/) "
                       "to train from scratch")
CHECKPOINT_FIELDS = {
    "config": dict, "epoch": int, "step": int, "collapse_streak": int, "generator": dict, "discriminator": dict,
    "ema": (dict, type(None)), "opt_g": dict, "opt_d": dict, "order_rng": torch.Tensor, "noise_rng": torch.Tensor,
    "augment_rng": torch.Tensor, "torch_rng": torch.Tensor, "ada": (dict, type(None)), "losses": list, "quality": list,
}


def checkpoint_generator(state: dict[str, Any], cfg: GANConfig) -> nn.Module:
    """The network a checkpoint samples from (the EMA of G when kept, else G), in eval mode, on CPU."""
    if cfg.arch == "cyclegan":  # the translator G_AB (no EMA)
        network = build_generator(cfg, state["resolution"], 0, state["channels"])
        network.load_state_dict(state["g_ab"])
        return network.eval()
    network = build_generator(cfg, state["resolution"], state["n_classes"], state["channels"])
    network.load_state_dict(state["ema"] if state["ema"] is not None else state["generator"])
    return network.to(memory_format=torch.channels_last).eval()


def initialise_from(path: Path, cfg: GANConfig, generator: nn.Module, discriminator: nn.Module, ema: GeneratorEMA | None,
                    resolution: int, n_classes: int, channels: int) -> str:
    """Load weights from `path` (gan.init_from): a train_gan checkpoint gives G, D and the EMA of G
    (G's weights where it kept no EMA); a generator file (models/gan/generator.pt) gives G and its
    EMA, and D starts from its random initialisation. Anything that does not fit raises naming the
    key. Returns what was loaded, for the log."""
    if not path.is_file():
        raise FileNotFoundError(f"gan.init_from={str(path)!r}: no such file (expected a generator file such as a copy of "
                                "models/gan/generator.pt, or a train_gan checkpoint)")
    blob = load_torch_file(path, "gan.init_from file", "a generator file or a train_gan checkpoint")
    if "format" in blob:  # a generator file: the sampled network (the EMA when it was kept) and its classes
        config, state_g, state_d, state_ema = blob.get("config", {}), blob.get("state_dict"), None, blob.get("state_dict")
        source_classes = len(blob.get("class_names", [])) if blob.get("conditional") else 0
        loaded = "G and the EMA of G from a generator file (D from its random initialisation)"
    else:
        state = require_fields(blob, path, "gan.init_from checkpoint", CHECKPOINT_EXPECTED, CHECKPOINT_FIELDS)
        config, state_g, state_d = state["config"], state["generator"], state["discriminator"]
        state_ema = state["ema"] if state["ema"] is not None else state["generator"]
        source_classes = state.get("n_classes")
        loaded = "G, D and the EMA of G from a train_gan checkpoint"
    found = {"gan.arch": config.get("arch"), "resolution": blob.get("resolution"), "classes": source_classes,
             "channels": blob.get("channels")}
    wanted = {"gan.arch": cfg.arch, "resolution": resolution, "classes": n_classes, "channels": channels}
    differ = [f"{k} {found[k]} (this run: {wanted[k]})" for k in wanted if found[k] != wanted[k]]
    if differ:
        raise ValueError(f"gan.init_from={str(path)!r} cannot initialise this run: its {', '.join(differ)}; expected "
                         "weights of the same arch, resolution, class count and channels")
    try:
        generator.load_state_dict(state_g)
        if state_d is not None:
            discriminator.load_state_dict(state_d)
        if ema is not None:
            ema.network.load_state_dict(state_ema)
    except (RuntimeError, TypeError) as exc:  # other widths (gan.base_channels, gan.latent_dim, gan.stylegan2.*)
        first = str(exc).strip().splitlines()[0]
        raise ValueError(f"gan.init_from={str(path)!r}: its networks have other sizes than this run's "
                         f"(gan.base_channels, gan.latent_dim or the arch's own keys differ): {first}") from None
    return loaded


PROGRESS_QUALITY = ("fd_domain", "label_fidelity", "diversity")  # shown beside the losses, when measured


def epoch_postfix(epoch_losses: list[dict[str, float]], last_quality: dict[str, float] | None) -> dict[str, str]:
    """The epoch bar's figures: mean losses of the epoch and the last evaluation's headline metrics."""
    out = {k: f"{sum(r[k] for r in epoch_losses) / len(epoch_losses):.3f}" for k in ("loss_d", "loss_g")} if epoch_losses else {}
    if last_quality is not None:
        out |= {k: f"{last_quality[k]:.4g}" for k in PROGRESS_QUALITY if k in last_quality}
    return out


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    """The resumable state at `path` (None when there is none), read with `weights_only=True`:
    tensors, state dicts, RNG states as uint8 tensors, the config as a dict. A damaged or
    foreign file raises `BadFileError` naming it; nothing in it can run code."""
    if not path.is_file():
        return None
    state = load_torch_file(path, "GAN checkpoint", CHECKPOINT_EXPECTED)
    return require_fields(state, path, "GAN checkpoint", CHECKPOINT_EXPECTED, CHECKPOINT_FIELDS)


def training_loop(
    images: np.ndarray,  # (N, C, H, W) uint8: real *training* images only
    labels: np.ndarray | None,  # (N,) int class indices or (N, K) multi-hot for a conditional GAN, else None
    n_classes: int,  # conditioning classes (K); 0 = unconditional
    cfg: GANConfig,  # architecture, loss, optimiser, augmentation, EMA and schedule (params.yaml `gan`)
    checkpoint_path: Path,  # resumable state, rewritten atomically after every epoch
    device: torch.device,  # cpu or cuda (bf16 autocast and channels_last on cuda)
    evaluate: Callable[[int, nn.Module], dict[str, float]] | None = None,  # (epoch, G to sample) -> metrics
    on_epoch_end: Callable[[EpochReport], None] | None = None,  # logging hook
    extra_state: dict[str, Any] | None = None,  # saved with the checkpoint (e.g. MLflow run id)
    stop_after_epoch: int | None = None,  # return early after this epoch (simulates a killed run)
    read_every: int = 25,  # steps between reads of the loss records from the device (and at each epoch's end)
) -> GANTrainResult:
    """Train G and D on `images`; resume from `checkpoint_path` when it exists."""
    if cfg.arch == "cyclegan":  # a translator: labels 0 = source class, 1 = target class; its own loop
        assert labels is not None and labels.ndim == 1 and set(np.unique(labels)) <= {0, 1}, "cyclegan takes labels 0/1"
        return cyclegan.translation_loop(images[labels == 0], images[labels == 1], cfg, checkpoint_path, device,
                                         evaluate, on_epoch_end, extra_state, stop_after_epoch)
    assert images.ndim == 4 and images.dtype == np.uint8, f"images must be (N, C, H, W) uint8, got {images.shape} {images.dtype}"
    assert (labels is None) == (n_classes == 0), "labels go with n_classes > 0 (conditional) and only then"
    n, channels, resolution = len(images), images.shape[1], images.shape[-1]
    if labels is not None:
        assert labels.shape in ((n,), (n, n_classes)), f"labels must be ({n},) or ({n}, {n_classes}), got {labels.shape}"
    batch_size = min(cfg.batch_size, n // cfg.n_critic)
    if batch_size < 2:
        raise ValueError(f"GAN training needs at least 2 images per D step (gan.n_critic={cfg.n_critic}), got {n} images")
    ranks = distributed.current()  # torchrun: this process's share of every batch (ganaug.distributed)
    distributed.local_batch_size(batch_size, ranks)  # each rank takes an equal slice of every batch
    images_per_step = batch_size * cfg.n_critic  # real images through D per G step (all ranks)
    steps_per_epoch = n // images_per_step  # drop the ragged last batch: BatchNorm dislikes tiny batches

    torch.manual_seed(cfg.seed)  # network initialisation (and anything else on the global RNG)
    generator, discriminator = build_networks(cfg, resolution, n_classes, channels)
    if ranks.active:  # BatchNorm over the global batch
        generator, discriminator = distributed.sync_batchnorm(generator), distributed.sync_batchnorm(discriminator)
    generator.to(device, memory_format=torch.channels_last)
    discriminator.to(device, memory_format=torch.channels_last)
    ema = GeneratorEMA(generator, cfg.ema_kimg) if cfg.ema_kimg > 0 else None
    loss_fn = GANS[cfg.arch].loss(cfg)
    opt_g = build_optimizer(generator.parameters(), cfg.lr_g, cfg, device)
    opt_d = build_optimizer(discriminator.parameters(), cfg.lr_d, cfg, device)
    configure_backends(device, cfg.fast_kernels)
    mixed = cfg.precision == "bf16"  # autocast on CUDA only
    g_forward, d_forward = compiled(generator, device, cfg.compile), compiled(discriminator, device, cfg.compile)
    policy = DiffAugment(tuple(cfg.augment_policy)) if cfg.augment != "none" else None
    ada = AdaptiveAugmentProbability(cfg.ada_target, cfg.ada_kimg) if cfg.augment == "ada" else None
    order_rng = torch.Generator().manual_seed(cfg.seed)  # data order
    # latent vectors, penalty draws (on CPU: device-independent); each rank its own stream
    noise_rng = torch.Generator().manual_seed(distributed.rank_seed(cfg.seed + 1, ranks))
    augment_rng = torch.Generator().manual_seed(distributed.rank_seed(cfg.seed + 2, ranks))  # augmentation parameters
    collapse_below = loss_fn.adversarial.collapse_below if cfg.collapse_epochs > 0 else None
    losses: list[dict[str, float]] = []
    quality: list[dict[str, float]] = []
    start_epoch, step, collapse_streak = 0, 0, 0
    train_seconds, images_seen = 0.0, 0  # throughput, carried across resumes
    extra = dict(extra_state or {})

    state = load_checkpoint(checkpoint_path)
    if state is not None:
        if state["config"] != to_dict(cfg):
            raise ValueError(f"checkpoint {checkpoint_path} was written with another gan config; remove it to start over")
        distributed.check_world_size(state.get("world_size", 1), ranks, checkpoint_path)
        generator.load_state_dict(state["generator"])
        discriminator.load_state_dict(state["discriminator"])
        if ema is not None:
            ema.network.load_state_dict(state["ema"])
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        order_rng.set_state(state["order_rng"])
        own = state["rank_rngs"][ranks.rank] if ranks.active else state  # this rank's noise, augment, torch states
        noise_rng.set_state(own["noise_rng"])
        augment_rng.set_state(own["augment_rng"])
        torch.set_rng_state(own["torch_rng"])
        if ada is not None:
            ada = AdaptiveAugmentProbability(**state["ada"])
        loss_fn.load_state_dict(state.get("loss_state", {}))  # lazy-regularisation counters, path-length mean
        losses, quality = state["losses"], state["quality"]
        start_epoch, step, collapse_streak = state["epoch"], state["step"], state["collapse_streak"]
        train_seconds, images_seen = state.get("train_seconds", 0.0), state.get("images_seen", 0)
        extra = {**state.get("extra", {}), **extra}
    elif cfg.init_from is not None:  # transfer learning: a previous run's weights, fresh optimisers and schedule
        loaded = initialise_from(Path(cfg.init_from), cfg, generator, discriminator, ema, resolution, n_classes, channels)
        print(f"gan.init_from: {loaded} {cfg.init_from}")
    resumed_from = start_epoch
    distributed.broadcast_state(generator, ranks)  # identical starts on every rank
    distributed.broadcast_state(discriminator, ranks)
    if ema is not None:
        distributed.broadcast_state(ema.network, ranks)
    sampled = ema.network if ema is not None else generator  # what evaluations and the caller sample from

    x_all = on_device_uint8(images, device)  # uint8: on CUDA the whole set on the GPU, else batches move there
    y_all = None
    if labels is not None:  # class indices as int64, multi-hot as float32
        y_all = on_device_uint8(labels, device).long() if labels.ndim == 1 else on_device_uint8(labels, device).float()

    def augment(batch: torch.Tensor, p: float) -> torch.Tensor:
        """D's input: the batch through the DiffAugment policy (the identity when gan.augment=none)."""
        return batch if policy is None else policy(batch, augment_rng, p)

    def save_checkpoint(epoch: int) -> None:  # tensors and plain values only: it loads with weights_only=True
        rank_rngs = distributed.gather_rng_states({"noise_rng": noise_rng.get_state(), "augment_rng": augment_rng.get_state(),
                                                   "torch_rng": torch.get_rng_state()}, ranks)
        if not ranks.is_main:
            return
        save_torch_file(
            {
                "config": to_dict(cfg), "epoch": epoch, "step": step, "collapse_streak": collapse_streak,
                "generator": generator.state_dict(), "discriminator": discriminator.state_dict(),
                "ema": ema.network.state_dict() if ema is not None else None,
                "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(),
                "order_rng": order_rng.get_state(), "noise_rng": noise_rng.get_state(),
                "augment_rng": augment_rng.get_state(), "torch_rng": torch.get_rng_state(),
                "ada": dataclasses.asdict(ada) if ada is not None else None,
                "losses": losses, "quality": quality, "train_seconds": train_seconds, "images_seen": images_seen,
                "loss_state": loss_fn.state_dict(),
                "n_classes": n_classes, "resolution": resolution, "channels": channels, "extra": extra,
                "world_size": ranks.world_size, "rank_rngs": rank_rngs if ranks.active else None,
            },
            checkpoint_path,
        )

    def last_good(epoch: int) -> str:
        return f"{checkpoint_path} (epoch {epoch})" if epoch > 0 else "none (failed in the first epoch)"

    epoch_bar = progress(range(start_epoch + 1, cfg.epochs + 1), desc="GAN", total=cfg.epochs, initial=start_epoch,
                         unit="epoch", log_every_s=0)  # a log line per epoch: mean losses, last quality figures
    for epoch in epoch_bar:
        generator.train()
        discriminator.train()
        epoch_losses: list[dict[str, float]] = []
        collapsed_steps: list[bool] = []
        records = StepRecords()  # this epoch's per-step scalars not yet read from the device
        order = torch.randperm(n, generator=order_rng).to(x_all.device)  # indexes the set where it lives
        epoch_start = time.perf_counter()
        step_bar = progress(range(steps_per_epoch), desc=f"GAN epoch {epoch}/{cfg.epochs}", unit="step")
        for i in step_bar:
            p = ada.p if ada is not None else 1.0  # augmentation probability of this step
            d_steps: list[dict[str, torch.Tensor]] = []  # each D step's scalars, on the device

            # (1) Update D: n_critic steps, each on its own real batch; fakes take the batch's labels
            for j in range(cfg.n_critic):
                idx = order[(i * cfg.n_critic + j) * batch_size : (i * cfg.n_critic + j + 1) * batch_size]
                idx = distributed.shard(idx, ranks)  # (local_batch,): this rank's slice of the global batch
                real = to_device_images(to_model_range(x_all[idx]), device)  # (B, C, R, R) in [-1, 1]
                y = y_all[idx].to(device) if y_all is not None else None
                z = torch.randn(len(idx), cfg.latent_dim, generator=noise_rng).to(device)
                with autocast(device, mixed):
                    fake = g_forward(z, y)
                    real_in, fake_in = augment(real, p), augment(fake.detach(), p)
                    real_out = d_forward(real_in, y)
                    fake_out = d_forward(fake_in, y)
                    terms_d = loss_fn.discriminator(real_out, fake_out, y, y)
                terms_d |= loss_fn.penalty(discriminator, real_in, fake_in, y, noise_rng)  # float32, outside autocast
                loss_d = sum(terms_d.values())
                opt_d.zero_grad(set_to_none=True)
                loss_d.backward()
                distributed.average_gradients(discriminator, ranks)
                opt_d.step()

                real_logits, fake_logits = loss_fn.logits(real_out).detach(), loss_fn.logits(fake_out).detach()
                scalars = {"loss_d": loss_d, **(terms_d if len(terms_d) > 1 else {}),
                           "d_real": torch.sigmoid(real_logits).mean(),  # D(x)
                           "d_fake": torch.sigmoid(fake_logits).mean(),  # D(G(z)) before G's step
                           "adversarial_d": terms_d["loss_d_adv"]}
                if ada is not None:
                    scalars["rt"] = torch.sign(real_logits).mean()  # ADA's overfitting signal
                d_steps.append(distributed.average_scalars(scalars, ranks))  # device tensors: no host sync

            # (2) Update G: D's verdict on the (augmented) fakes of the last D step. D's weight
            # gradients are not needed here (the next D step starts from zero): frozen, D's
            # backward computes only the input gradients that reach G.
            discriminator.requires_grad_(False)
            with autocast(device, mixed):
                fake_out_g = d_forward(augment(fake, p), y)
                terms_g = loss_fn.generator(fake_out_g, y)
            terms_g |= loss_fn.generator_penalty(generator, y, batch_size, noise_rng)  # lazy G regularisation (StyleGAN2)
            loss_g = sum(terms_g.values())
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            distributed.average_gradients(generator, ranks)
            discriminator.requires_grad_(True)
            opt_g.step()
            step += 1
            if ema is not None:
                ema.update(generator, images_per_step)

            # records stay on the device; read every `read_every` steps, at the epoch's end and
            # before ADA adjusts p (it needs the r_t of every D step since its last adjustment)
            records.add({"step": step, "epoch": epoch, **({"ada_p": p} if ada is not None else {})},
                        d_steps, distributed.average_scalars({"loss_g": loss_g, **(terms_g if len(terms_g) > 1 else {})}, ranks))
            ada_adjusts = ada is not None and ada.steps_since + 1 >= ADA_INTERVAL
            if len(records) >= read_every or i == steps_per_epoch - 1 or ada_adjusts:
                for read in records.read():
                    record = read.record
                    for name in ("loss_d", "loss_g", *terms_d, *(terms_g if len(terms_g) > 1 else ())):
                        if name in record and not math.isfinite(record[name]):
                            raise GANDivergenceError(
                                f"GAN diverged: {name} = {record[name]} at epoch {epoch}, step {record['step']}; "
                                f"last good checkpoint: {last_good(epoch - 1)}. Try a lower gan.lr_d / gan.lr_g."
                            )
                    if ada is not None:
                        for rt in read.rt:
                            ada.observe(rt, batch_size)
                    collapsed_steps.append(collapse_below is not None and read.adversarial_d < collapse_below)
                    epoch_losses.append(record)
                step_bar.set_postfix(loss_d=f"{record['loss_d']:.3f}", loss_g=f"{record['loss_g']:.3f}",
                                     d_real=f"{record['d_real']:.2f}", d_fake=f"{record['d_fake']:.2f}", refresh=False)
            if ada is not None:
                ada.end_step()
        step_bar.close()
        losses.extend(epoch_losses)
        epoch_seconds = time.perf_counter() - epoch_start
        train_seconds += epoch_seconds
        images_seen += steps_per_epoch * images_per_step

        # divergence guard, part 2: a discriminator that is certain of every image, epoch after epoch
        collapse_streak = collapse_streak + 1 if collapsed_steps and all(collapsed_steps) else 0
        kept = last_good_path(checkpoint_path)
        if ranks.is_main and collapse_streak == 1 and checkpoint_path.is_file():  # files are rank 0's
            with atomic_file(kept) as tmp:
                shutil.copyfile(checkpoint_path, tmp)  # the state before the collapse began
        elif ranks.is_main and collapse_streak == 0:
            kept.unlink(missing_ok=True)
        if collapse_below is not None and collapse_streak >= cfg.collapse_epochs:
            good_epoch = epoch - collapse_streak
            raise GANDivergenceError(
                f"GAN discriminator collapsed: its {cfg.loss} loss stayed below {collapse_below} in every step of "
                f"epochs {good_epoch + 1}..{epoch} (gan.collapse_epochs={cfg.collapse_epochs}): it separates real from "
                f"generated images with near certainty and has overpowered G; stopped at step {step}. Last good checkpoint: "
                f"{f'{kept} (epoch {good_epoch})' if good_epoch > 0 else 'none (collapsed from the first epoch)'}. "
                f"Try {divergence_remedies(cfg)}."
            )

        metrics = None
        if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
            if evaluate is not None and ranks.is_main:  # under torchrun rank 0 evaluates and tells the others
                generator.eval()
                with torch.no_grad():
                    metrics = evaluate(epoch, sampled)
            metrics = distributed.broadcast_metrics(metrics, ranks)
        if metrics is not None:
            quality.append({"epoch": epoch, **metrics})
            check_diversity(quality, cfg, last_diverse_path(checkpoint_path))  # a collapsed epoch is not saved
        epoch_bar.set_postfix(epoch_postfix(epoch_losses, quality[-1] if quality else None), refresh=False)
        save_checkpoint(epoch)
        distributed.barrier(ranks)  # no rank runs ahead of the file (a resume reads it)
        kill_point(f"gan_checkpoint_saved:{epoch}")  # tests: the epoch is checkpointed, not yet logged
        if ranks.is_main and metrics is not None and cfg.min_diversity > 0 and metrics.get(DIVERSITY_KEY, -1.0) >= cfg.min_diversity:
            with atomic_file(last_diverse_path(checkpoint_path)) as tmp:
                shutil.copyfile(checkpoint_path, tmp)  # the last state that passed the diversity check
        if on_epoch_end is not None:
            on_epoch_end(EpochReport(epoch, step, epoch_losses, epoch_seconds, steps_per_epoch * images_per_step, metrics, sampled))
        if stop_after_epoch is not None and epoch >= stop_after_epoch:
            break
    epoch_bar.close()

    generator.eval()
    augment_p = None if policy is None else (ada.p if ada is not None else 1.0)
    return GANTrainResult(sampled, discriminator, losses, quality, resumed_from, extra, generator, augment_p,
                          train_seconds, images_seen)
